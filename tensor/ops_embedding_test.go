package tensor

import (
	"math/rand/v2"
	"testing"
)

func TestEmbedding(t *testing.T) {
	cpu := NewCPU()
	rng := rand.New(rand.NewPCG(15, 16))
	const V, H = 11, 7
	for _, tableDT := range []DType{F32, BF16, F16} {
		for _, outDT := range []DType{F32, BF16, F16} {
			table := opRandom(rng, tableDT, V, H)
			idv := []int32{3, 0, 10, 3, 7, 10}
			ids, err := FromI32(idv, 2, 3)
			if err != nil {
				t.Fatal(err)
			}
			out := New(outDT, 2, 3, H)
			if err := cpu.Embedding(out, table, ids); err != nil {
				t.Fatal(err)
			}
			// The row as stored, rounded once to out's dtype.
			rows := table.ToF32()
			want := make([]float32, len(idv)*H)
			for i, id := range idv {
				copy(want[i*H:], rows[int(id)*H:int(id+1)*H])
			}
			roundTo(outDT, want)
			for i, v := range out.ToF32() {
				if v != want[i] {
					t.Fatalf("%v -> %v: element %d: %v != %v", tableDT, outDT, i, v, want[i])
				}
			}
		}
	}
}

func TestEmbeddingErrors(t *testing.T) {
	cpu := NewCPU()
	table, out := New(BF16, 5, 4), New(BF16, 3, 4)
	ids := func(v ...int32) *Tensor {
		t, _ := FromI32(v, len(v))
		return t
	}
	opWantErr(t, "id V", cpu.Embedding(out, table, ids(0, 5, 1)), "id 5 at position 1")
	opWantErr(t, "id -1", cpu.Embedding(out, table, ids(0, 1, -1)), "id -1 at position 2")
	opWantErr(t, "ids F32", cpu.Embedding(out, table, New(F32, 3)), "must be I32")
	opWantErr(t, "table I32", cpu.Embedding(out, New(I32, 5, 4), ids(0, 1, 2)), "floating-point")
	opWantErr(t, "table rank", cpu.Embedding(out, New(BF16, 20), ids(0, 1, 2)), "[V, H]")
	opWantErr(t, "out rows", cpu.Embedding(New(BF16, 2, 4), table, ids(0, 1, 2)), "out")
	opWantErr(t, "out H", cpu.Embedding(New(BF16, 4, 3), table, ids(0, 1, 2)), "out")
}
