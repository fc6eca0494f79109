package tensor

import "fmt"

// keyLens validates keyLen, I32 [B] with each value in [1, T], as
// Backend.BidirectionalAttention says, and returns its values.
func keyLens(op string, keyLen *Tensor, a attnDims) ([]int32, error) {
	if keyLen == nil {
		return nil, fmt.Errorf("tensor: %s: keyLen is required", op)
	}
	if err := hostCheck(op, keyLen); err != nil {
		return nil, err
	}
	if keyLen.dtype != I32 || keyLen.NumElements() != a.B {
		return nil, fmt.Errorf("tensor: %s: keyLen %v must be I32 [%d]", op, keyLen, a.B)
	}
	kl := keyLen.I32()
	for b, n := range kl {
		if n < 1 || int(n) > a.T {
			return nil, fmt.Errorf("tensor: %s: keyLen[%d] = %d is outside [1, %d]", op, b, n, a.T)
		}
	}
	return kl, nil
}

// BidirectionalAttention implements Backend as Attention does, one task per
// (batch, query head), with every query row of row b seeing the keys
// 0 .. keyLen[b]-1: for each block of attnBlock query rows, S = scale q k^T
// against those keys is one product, each row of S its softmax, and the
// block's output the product of that with v.
func (*CPU) BidirectionalAttention(out, q, k, v, keyLen *Tensor, scale float32) error {
	const op = "bidirectional attention"
	a, err := attnShapes(op, q, k, v, []*Tensor{out}, nil)
	if err != nil {
		return err
	}
	kl, err := keyLens(op, keyLen, a)
	if err != nil {
		return err
	}
	T, D := a.T, a.D
	kern := gemmF32
	mr, nr := kern.mr, kern.nr
	parallelFor(a.B*a.Hq, 1, func(lo, hi int) {
		Q, K, V := make([]float32, T*D), make([]float32, T*D), make([]float32, T*D)
		O := make([]float32, T*D)
		kp := make([]float32, packedLen(T, D, nr)) // k as B of q k^T
		vp := make([]float32, packedLen(D, T, nr)) // v as B of P v
		ap := make([]float32, packedLen(attnBlock, max(D, T), mr))
		S := make([]float32, attnBlock*T)
		tile := make([]float32, mr*nr)
		var inv [attnBlock]float32
		for task := lo; task < hi; task++ {
			b, h := task/a.Hq, task%a.Hq
			g := h / a.group()
			n := int(kl[b]) // the keys every row sees
			readHead(Q, q, b, h)
			readHead(K, k, b, g)
			readHead(V, v, b, g)
			packSlivers(kp, K, D, 1, n, D, nr)
			packSlivers(vp, V, 1, D, D, n, nr)
			for i0 := 0; i0 < T; i0 += attnBlock {
				rows := min(attnBlock, T-i0)
				Sb := S[:rows*n]
				packSlivers(ap, Q[i0*D:], D, 1, rows, D, mr)
				mulPacked(kern, Sb, n, rows, n, D, ap, D, kp, D, scale, false, tile)
				for r := 0; r < rows; r++ {
					row := Sb[r*n : (r+1)*n]
					m := maxF32(row)
					inv[r] = float32(1 / expSubSum(row, row, m))
				}
				Ob := O[i0*D : (i0+rows)*D]
				packSlivers(ap, Sb, n, 1, rows, n, mr)
				mulPacked(kern, Ob, D, rows, D, n, ap, n, vp, n, 1, false, tile)
				for r := 0; r < rows; r++ {
					o := Ob[r*D : (r+1)*D]
					for i := range o {
						o[i] *= inv[r]
					}
				}
			}
			writeHead(out, b, h, O)
		}
	})
	return nil
}
