package cgo

import (
	"github.com/compassml/compass/tensor"
)

// MatMul implements tensor.Backend through cublasGemmEx with float32
// accumulation (no TF32). Operands of two dtypes are first brought to one
// (gemmInputDType: the F32 one rounded to the other's 16-bit dtype, or with
// Precise the 16-bit one widened); an output cuBLAS cannot write directly
// (BF16 or F16 from F32 inputs) goes through a float32 scratch.
func (b *Backend) MatMul(c, x, w *tensor.Tensor, transA, transB bool, alpha, beta float32) error {
	M, K, N, err := matmulDims(c, x, w, transA, transB)
	if err != nil {
		return err
	}
	if err := deviceCheck("matmul", c, x, w); err != nil {
		return err
	}
	if M == 0 || N == 0 {
		return nil
	}
	if K == 0 || alpha == 0 {
		return b.scaleOutput(c, beta) // c = beta c, and c is not read when beta is 0
	}
	in := gemmInputDType(x.DType(), w.DType(), b.Precise)
	xi, freeX, err := b.castTo(x, in)
	if err != nil {
		return err
	}
	if freeX {
		defer b.Free(xi)
	}
	wi, freeW, err := b.castTo(w, in)
	if err != nil {
		return err
	}
	if freeW {
		defer b.Free(wi)
	}
	plan := planGemm(M, K, N, x.Dim(-1), w.Dim(1), transA, transB)
	xm, _ := xi.Device()
	wm, _ := wi.Device()
	if gemmSupported(in, c.DType()) {
		cm, _ := c.Device()
		return b.q.gemm(plan, cm.Ptr, xm.Ptr, wm.Ptr, in, c.DType(), alpha, beta)
	}
	// A 16-bit output of F32 inputs: compute in a float32 copy of c.
	cf, err := b.alloc(tensor.F32, M, N)
	if err != nil {
		return err
	}
	defer b.Free(cf)
	if beta != 0 {
		if err := b.cast(cf, c); err != nil {
			return err
		}
	}
	cfm, _ := cf.Device()
	if err := b.q.gemm(plan, cfm.Ptr, xm.Ptr, wm.Ptr, in, tensor.F32, alpha, beta); err != nil {
		return err
	}
	return b.cast(c, cf)
}

// scaleOutput sets c = beta c without reading c when beta is 0.
func (b *Backend) scaleOutput(c *tensor.Tensor, beta float32) error {
	switch beta {
	case 1:
		return nil
	case 0:
		mem, _ := c.Device()
		return b.q.memsetD8(mem.Ptr, 0, mem.Bytes)
	}
	return b.Scale(c, c, beta)
}
