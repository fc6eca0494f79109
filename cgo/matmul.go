package cgo

import (
	"fmt"

	"github.com/compassml/compass/kernels"
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

// NarrowMatMul sets c = alpha op(p) q^T + beta c for c [R, N] with R
// small, op(p) = p [R, K] (or p^T, p [K, R], with transP) and q [N, K]: the
// LoRA products t = A x^T and dt = s B^T dy^T of model/forward.go, which
// read a large q to write a few rows. In float32 they run on the tensor
// cores with each operand split into bf16 hi + lo (kernels/lora.cu's
// lora_narrow: about 2^-16 relative per product, where cuBLAS's float32
// GEMM is bound by its FMA rate at these shapes), the sum split into chunks
// added in a fixed order. q may also be bf16 (lora_narrow_bf16: its values
// as they are, so the product is the one of q widened). With Precise, or
// other dtypes, it is MatMul (a bf16 q widened first, so that p is not
// rounded).
func (b *Backend) NarrowMatMul(c, p, q *tensor.Tensor, transP bool, alpha, beta float32) error {
	if !b.loraKernels(c, p, q) {
		q, free, err := b.widenForProduct(q, p)
		if err != nil {
			return err
		}
		defer free()
		return b.MatMul(c, p, q, transP, true, alpha, beta)
	}
	R, K, N, err := matmulDims(c, p, q, transP, true)
	if err != nil {
		return err
	}
	return b.narrowMatMul(c, p, q, transP, alpha, beta, b.narrowSplits(R, N, K))
}

// narrowSplits is the number of chunks lora_narrow splits a sum of K
// terms into for c [R, N]: enough blocks for about four per SM, each
// chunk at least 4 of the kernel's 64-deep stages.
func (b *Backend) narrowSplits(R, N, K int) int {
	blocks := ceilDiv(N, 64) * ceilDiv(R, 64)
	return max(1, min(ceilDiv(4*b.multiprocessors(), blocks), ceilDiv(K, 4*kernels.LoRANarrowDepth)))
}

// loraKernels reports whether the LoRA kernels compute c from p and the
// large operand q: c and p float32, q float32 or bf16, and neither Precise
// nor the kernels turned off.
func (b *Backend) loraKernels(c, p, q *tensor.Tensor) bool {
	return !b.Precise && !b.loraKernelsOff && c.DType() == tensor.F32 && p.DType() == tensor.F32 &&
		(q.DType() == tensor.F32 || q.DType() == tensor.BF16)
}

// widenForProduct returns q, or a float32 copy of it where q is bf16 and
// its product's other operand w float32: MatMul would round w to bf16
// (gemmInputDType) where the LoRA products keep their float32 parameters.
// free releases the copy.
func (b *Backend) widenForProduct(q, w *tensor.Tensor) (*tensor.Tensor, func(), error) {
	if b.Precise || q.DType() != tensor.BF16 || w.DType() != tensor.F32 {
		return q, func() {}, nil
	}
	f, err := b.alloc(tensor.F32, q.Shape()...)
	if err != nil {
		return nil, func() {}, err
	}
	if err := b.cast(f, q); err != nil {
		b.Free(f)
		return nil, func() {}, err
	}
	return f, func() { b.Free(f) }, nil
}

// loraKernel is name, or its _bf16 entry for a bf16 q.
func loraKernel(name string, q *tensor.Tensor) string {
	if q.DType() == tensor.BF16 {
		return name + "_bf16"
	}
	return name
}

// narrowMatMul is NarrowMatMul on the kernels (loraKernels' dtypes) with
// the sum split into (at most) splits chunks, each a multiple of
// lora_narrow's stage; with more than one, the partial sums go to a
// scratch [splits, R, N] that each output tile's last block adds up
// (lora_finish, with the backend's tile counters).
func (b *Backend) narrowMatMul(c, p, q *tensor.Tensor, transP bool, alpha, beta float32, splits int) error {
	const op = "narrow matmul"
	R, K, N, err := matmulDims(c, p, q, transP, true)
	if err != nil {
		return err
	}
	if err := deviceCheck(op, c, p, q); err != nil {
		return err
	}
	if err := int32Check(op, R, N, K); err != nil {
		return err
	}
	if R == 0 || N == 0 {
		return nil
	}
	if K == 0 || alpha == 0 {
		return b.scaleOutput(c, beta)
	}
	name := loraKernel("lora_narrow", q)
	chunk, splits, err := b.loraChunks(name, K, kernels.Sizes{M: R, Cols: N, Splits: splits}, kernels.LoRANarrowDepth)
	if err != nil {
		return err
	}
	spi, spk := K, 1 // p [R, K]
	if transP {
		spi, spk = 1, R // p [K, R]
	}
	ws, err := b.partials(splits, R, N)
	if err != nil {
		return err
	}
	defer b.Free(ws)
	args := new(Args).Raw(c).U64(N).Raw(ws).Ptr(b.tiles).Raw(q).U64(K).Raw(p).U64(spi).U64(spk).
		I32(R).I32(N).I32(K).I32(chunk).F32(alpha).F32(beta)
	return b.q.launch(op, name, kernels.Sizes{M: R, Cols: N, Splits: splits}, args)
}

// chunks splits a sum of n terms into at most splits chunks of whole
// stages: the chunk's length and how many there are.
func chunks(n, splits, stage int) (chunk, count int) {
	chunk = ceilDiv(ceilDiv(n, max(1, splits)), stage) * stage
	return chunk, ceilDiv(n, chunk)
}

// partials is the scratch [splits, R, M] for the partial sums of a split
// LoRA product; nil (which Free ignores) for one chunk.
func (b *Backend) partials(splits, R, M int) (*tensor.Tensor, error) {
	if splits == 1 {
		return nil, nil
	}
	return b.alloc(tensor.F32, splits, R, M)
}

// loraTileCounters is how many output tiles a split LoRA product may have:
// one counter each (Backend.tiles). Sums are split only where the tiles
// are too few to fill the device (narrowSplits, gradSplits: under four
// blocks per SM), so this is far more than they use.
const loraTileCounters = 4096

// loraChunks splits the sum of n terms of LoRA kernel name's launch with
// sizes s into at most s.Splits chunks of whole stages (chunks): the
// chunk's length and how many there are; one where the launch has more
// output tiles (its grid's x times y) than there are counters.
func (b *Backend) loraChunks(name string, n int, s kernels.Sizes, stage int) (chunk, count int, err error) {
	kern, err := kernels.Lookup(name)
	if err != nil {
		return 0, 0, err
	}
	if g := kern.Grid(s); g[0]*g[1] > loraTileCounters {
		s.Splits = 1
	}
	chunk, count = chunks(n, s.Splits, stage)
	return chunk, count, nil
}

// GradMatMul sets c = alpha p q + beta c for p [R, N] with R small, q
// [N, M] and c [R, M]; with transC, c is [M, R] and receives the
// transpose (c = alpha (p q)^T + beta c). These are the LoRA gradient
// products dA += dt x and dB += s (t dy)^T of model/forward.go, whose sum
// runs over the tokens. In float32 they run on the tensor cores with each
// operand split into bf16 hi + lo (kernels/lora.cu's lora_grad, about
// 2^-16 relative per product), the tokens split into chunks added in a
// fixed order. q may also be bf16 (lora_grad_bf16), as in NarrowMatMul.
// With Precise, or other dtypes, it is MatMul (a bf16 q widened first).
func (b *Backend) GradMatMul(c, p, q *tensor.Tensor, transC bool, alpha, beta float32) error {
	if !b.loraKernels(c, p, q) {
		q, free, err := b.widenForProduct(q, p)
		if err != nil {
			return err
		}
		defer free()
		if transC {
			return b.MatMul(c, q, p, true, true, alpha, beta)
		}
		return b.MatMul(c, p, q, false, false, alpha, beta)
	}
	R, N, M, err := gradDims(c, p, q, transC)
	if err != nil {
		return err
	}
	return b.gradMatMul(c, p, q, transC, alpha, beta, b.gradSplits(R, M, N))
}

// gradDims checks GradMatMul's shapes and returns them.
func gradDims(c, p, q *tensor.Tensor, transC bool) (R, N, M int, err error) {
	if transC {
		M, N, R, err = matmulDims(c, q, p, true, true) // c [M, R] = q^T p^T
	} else {
		R, N, M, err = matmulDims(c, p, q, false, false)
	}
	if err == nil && (p.Rank() != 2 || c.Rank() != 2) {
		err = fmt.Errorf("cuda: grad matmul: p %v and c %v must have rank 2", p, c)
	}
	return R, N, M, err
}

// gradSplits is the number of chunks lora_grad splits the N tokens into
// for c [R, M]: enough blocks for about four per SM, each chunk at least 4
// of the kernel's 32-token stages.
func (b *Backend) gradSplits(R, M, N int) int {
	blocks := ceilDiv(M, 64) * ceilDiv(R, 64)
	return max(1, min(ceilDiv(4*b.multiprocessors(), blocks), ceilDiv(N, 4*kernels.LoRAGradTokens)))
}

// multiprocessors is the device's SM count, or an H100's or H200's (132)
// for the tests' recording queue.
func (b *Backend) multiprocessors() int {
	if b.dev != nil {
		return b.dev.Multiprocessors()
	}
	return 132
}

// gradMatMul is GradMatMul on the kernels (loraKernels' dtypes) with the
// tokens split into (at most) splits chunks, each a multiple of lora_grad's
// stage; with more than one, the partial sums go to a scratch [splits, R,
// M] that each output tile's last block adds up, as in narrowMatMul.
func (b *Backend) gradMatMul(c, p, q *tensor.Tensor, transC bool, alpha, beta float32, splits int) error {
	const op = "grad matmul"
	R, N, M, err := gradDims(c, p, q, transC)
	if err != nil {
		return err
	}
	if err := deviceCheck(op, c, p, q); err != nil {
		return err
	}
	if err := int32Check(op, R, N, M); err != nil {
		return err
	}
	if R == 0 || M == 0 {
		return nil
	}
	if N == 0 || alpha == 0 {
		return b.scaleOutput(c, beta)
	}
	name := loraKernel("lora_grad", q)
	chunk, splits, err := b.loraChunks(name, N, kernels.Sizes{M: R, Cols: M, Splits: splits}, kernels.LoRAGradTokens)
	if err != nil {
		return err
	}
	sci, scm := M, 1 // c [R, M]
	if transC {
		sci, scm = 1, R // c [M, R]
	}
	ws, err := b.partials(splits, R, M)
	if err != nil {
		return err
	}
	defer b.Free(ws)
	args := new(Args).Raw(c).U64(sci).U64(scm).Raw(ws).Ptr(b.tiles).Raw(p).U64(N).Raw(q).U64(M).
		I32(R).I32(M).I32(N).I32(chunk).F32(alpha).F32(beta)
	return b.q.launch(op, name, kernels.Sizes{M: R, Cols: M, Splits: splits}, args)
}

func ceilDiv(a, b int) int { return (a + b - 1) / b }

// ExpandMatMul sets c = alpha p^T op(w) + beta c for p [R, N] with R
// small, op(w) = w [R, M] (or w^T, w [M, R], with transW) and c [N, M]:
// the LoRA products y = s t^T B^T and dx += dt^T A of model/forward.go,
// which write a large c from sums of R terms. In float32 they run on the
// tensor cores with each operand split into bf16 hi + lo (kernels/lora.cu's
// lora_expand, about 2^-16 relative per product). With Precise, or other
// dtypes, it is MatMul.
func (b *Backend) ExpandMatMul(c, p, w *tensor.Tensor, transW bool, alpha, beta float32) error {
	if b.Precise || b.loraKernelsOff || c.DType() != tensor.F32 || p.DType() != tensor.F32 || w.DType() != tensor.F32 {
		return b.MatMul(c, p, w, true, transW, alpha, beta)
	}
	const op = "expand matmul"
	N, R, M, err := matmulDims(c, p, w, true, transW)
	if err != nil {
		return err
	}
	if c.Rank() != 2 {
		return fmt.Errorf("cuda: %s: c %v must have rank 2", op, c)
	}
	if err := deviceCheck(op, c, p, w); err != nil {
		return err
	}
	if err := int32Check(op, R, N, M); err != nil {
		return err
	}
	if N == 0 || M == 0 {
		return nil
	}
	if R == 0 || alpha == 0 {
		return b.scaleOutput(c, beta)
	}
	swi, swm := M, 1 // w [R, M]
	if transW {
		swi, swm = 1, R // w [M, R]
	}
	args := new(Args).Raw(c).U64(M).Raw(p).U64(N).Raw(w).U64(swi).U64(swm).I32(R).I32(N).I32(M).F32(alpha).F32(beta)
	return b.q.launch(op, "lora_expand", kernels.Sizes{N: N, Cols: M}, args)
}
