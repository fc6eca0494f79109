package cgo

import (
	"github.com/compassml/compass/kernels"
	"github.com/compassml/compass/tensor"
)

// thinMatMul runs MatMul's float32 products with a side of at most 16 (the
// LoRA products at rank <= 16) on thin.cu's kernels, and reports whether
// it did; the other products go to cuBLAS. Shapes as MatMul's: c [M, N] =
// alpha op(a) [M, K] op(b) [K, N] + beta c, all three F32.
//
//	K <= 16, a not transposed:            thin_small_k
//	N <= 16, a not transposed:            thin_narrow (+ thin_reduce)
//	a transposed, b not, M or N <= 16:    thin_rows + thin_reduce
func (b *Backend) thinMatMul(c, a, w *tensor.Tensor, transA, transB bool, alpha, beta float32, M, K, N int) (bool, error) {
	const side = kernels.ThinSide
	if b.cublasOnly || c.DType() != tensor.F32 || a.DType() != tensor.F32 || w.DType() != tensor.F32 {
		return false, nil
	}
	cm, _ := c.Device()
	am, _ := a.Device()
	// opB(k, j) = w[k*sbk + j*sbn].
	sbk, sbn := w.Dim(1), 1
	if transB {
		sbk, sbn = 1, w.Dim(1)
	}
	switch {
	case !transA && K <= side:
		if ceilDiv(M, 64) > 65535 { // grid.y
			return false, nil
		}
		args := new(Args).Raw(c).Raw(a).U64(K).Raw(w).U64(sbk).U64(sbn).I32(M).I32(N).I32(K).F32(alpha).F32(beta)
		return true, b.q.launch("matmul", "thin_small_k", kernels.Sizes{M: M, Cols: N}, args)

	case !transA && N <= side && K%4 == 0 && aligned16(am.Ptr):
		parts, kpart := b.thinParts(ceilDiv(M, 32), K, kernels.ThinNarrowK)
		var part *tensor.Tensor
		if parts > 1 {
			var err error
			if part, err = b.alloc(tensor.F32, parts, M, side); err != nil {
				return true, err
			}
			defer b.Free(part)
		}
		args := new(Args).Raw(c).Raw(part).Raw(a).U64(K).Raw(w).U64(sbk).U64(sbn).I32(M).I32(N).I32(K).I32(kpart).F32(alpha).F32(beta)
		if err := b.q.launch("matmul", "thin_narrow", kernels.Sizes{M: M, Parts: parts}, args); err != nil || parts == 1 {
			return true, err
		}
		return true, b.thinReduce(cm.Ptr, N, false, part, side, parts, M, N, alpha, beta)

	case transA && !transB && (M <= side || N <= side):
		// op(a) = a^T with a [K, M]; w [K, N]. The thin operand s [K, ns]
		// and the wide one g [K, ng]: out(j, col) = sum_k s[k][j] g[k][col]
		// is c[j][col] when s is a (M thin), c[col][j] when s is w.
		s, g, ns, ng, transposed := a, w, M, N, false
		if M > side {
			s, g, ns, ng, transposed = w, a, N, M, true
		}
		gm, _ := g.Device()
		if ng%4 != 0 || !aligned16(gm.Ptr) {
			return false, nil
		}
		parts, kpart := b.thinParts(ceilDiv(ng, 128), K, kernels.ThinRowsK)
		part, err := b.alloc(tensor.F32, parts, ns, ng)
		if err != nil {
			return true, err
		}
		defer b.Free(part)
		args := new(Args).Raw(part).Raw(s).U64(ns).Raw(g).U64(ng).I32(ns).I32(ng).I32(K).I32(kpart)
		if err := b.q.launch("matmul", "thin_rows", kernels.Sizes{Cols: ng, Parts: parts}, args); err != nil {
			return true, err
		}
		return true, b.thinReduce(cm.Ptr, N, transposed, part, ng, parts, ns, ng, alpha, beta)
	}
	return false, nil
}

// thinParts splits a sum over K into parts of a multiple of granule, so
// that blocks x parts is about two blocks per multiprocessor.
func (b *Backend) thinParts(blocks, K, granule int) (parts, kpart int) {
	sms := 132 // the tests' recording queue has no device: an H100's count
	if b.dev != nil {
		sms = b.dev.Multiprocessors()
	}
	parts = max(1, min(ceilDiv(2*sms, blocks), ceilDiv(K, granule), 65535))
	kpart = ceilDiv(ceilDiv(K, parts), granule) * granule
	return ceilDiv(K, kpart), kpart
}

// thinReduce sets C(i, j) = alpha sum_p part[p][i][j] + beta C(i, j) for
// i < rows, j < cols, C(i, j) at c[i*ldc + j] (or c[j*ldc + i] transposed).
func (b *Backend) thinReduce(c uintptr, ldc int, transposed bool, part *tensor.Tensor, pld, parts, rows, cols int, alpha, beta float32) error {
	tr := 0
	if transposed {
		tr = 1
	}
	args := new(Args).Ptr(c).U64(ldc).I32(tr).Raw(part).U64(pld).I32(parts).I32(rows).I32(cols).F32(alpha).F32(beta)
	return b.q.launch("matmul", "thin_reduce", kernels.Sizes{N: rows * cols}, args)
}

func aligned16(p uintptr) bool { return p%16 == 0 }

func ceilDiv(a, b int) int { return (a + b - 1) / b }
