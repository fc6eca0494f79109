package tensor

import "fmt"

// Embedding implements Backend.
func (*CPU) Embedding(out, table, ids *Tensor) error {
	if err := floatCheck("embedding", out, table); err != nil {
		return err
	}
	if ids.dtype != I32 {
		return fmt.Errorf("tensor: embedding: ids %v must be I32", ids)
	}
	if table.Rank() != 2 {
		return fmt.Errorf("tensor: embedding: table %v must be [V, H]", table)
	}
	V, H := table.Dim(0), table.Dim(1)
	n := ids.NumElements()
	if out.Rank() == 0 || out.Dim(-1) != H || out.NumElements() != n*H {
		return fmt.Errorf("tensor: embedding: out %v must hold %d rows of %d (ids %v, table %v)", out, n, H, ids, table)
	}
	idv := ids.I32()
	for i, id := range idv {
		if id < 0 || int(id) >= V {
			return fmt.Errorf("tensor: embedding: id %d at position %d is outside the vocabulary [0, %d)", id, i, V)
		}
	}
	parallelFor(n, max(1, (1<<16)/max(H, 1)), func(lo, hi int) {
		if out.dtype == table.dtype { // a plain copy of bytes
			rowBytes := H * table.dtype.Size()
			for i := lo; i < hi; i++ {
				id := int(idv[i])
				copy(out.data[i*rowBytes:(i+1)*rowBytes], table.data[id*rowBytes:(id+1)*rowBytes])
			}
			return
		}
		row := make([]float32, H)
		for i := lo; i < hi; i++ {
			readF32(row, table, int(idv[i])*H)
			writeF32(out, i*H, row)
		}
	})
	return nil
}
