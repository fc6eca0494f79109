package cgo

import (
	"fmt"

	"github.com/compassml/compass/kernels"
	"github.com/compassml/compass/tensor"
)

// defaultLossChunk is the vocabulary columns per chunk when the caller
// does not say (the CPU's default).
const defaultLossChunk = 8192

// CrossEntropy implements tensor.Backend with the launch sequence of
// kernels/cross_entropy.cu: per vocabulary chunk, a cuBLAS product for the
// chunk's logits, ce_chunk_update for the online softmax and, when dh is
// wanted, ce_rescale and a cuBLAS product accumulating softmax-weighted
// rows of w (the weights P written by ce_chunk_update in the dtype that
// product reads); ce_finalize at the end. The labels are checked on the host
// first (a copy of N int32s).
func (b *Backend) CrossEntropy(logprob, dh, h, w, labels *tensor.Tensor, chunk int, gradScale float32) error {
	const op = "cross entropy"
	if err := floatCheck(op, h, w, dh); err != nil {
		return err
	}
	if err := deviceCheck(op, logprob, labels); err != nil {
		return err
	}
	if h.Rank() < 2 || w.Rank() != 2 || w.Dim(1) != h.Dim(-1) {
		return fmt.Errorf("cuda: cross entropy: h %v must be [N, H] and w %v [V, H]", h, w)
	}
	V, H := w.Dim(0), w.Dim(1)
	N := rows(h)
	if labels.DType() != tensor.I32 || labels.NumElements() != N {
		return fmt.Errorf("cuda: cross entropy: labels %v must be I32 with %d elements, one per row of h %v", labels, N, h)
	}
	if logprob.DType() != tensor.F32 || logprob.NumElements() != N {
		return fmt.Errorf("cuda: cross entropy: logprob %v must be F32 with %d elements, one per row of h %v", logprob, N, h)
	}
	if dh != nil && !dh.SameShape(h) {
		return fmt.Errorf("cuda: cross entropy: dh %v must have the shape of h %v", dh, h)
	}
	if err := int32Check(op, N, H, V); err != nil {
		return err
	}
	hostLabels, err := b.ToHost(labels)
	if err != nil {
		return err
	}
	for i, l := range hostLabels.I32() {
		if l != kernels.IgnoreIndex && (l < 0 || int(l) >= V) {
			return fmt.Errorf("cuda: cross entropy: label %d at position %d is outside the vocabulary [0, %d)", l, i, V)
		}
	}
	if N == 0 {
		return nil
	}
	if chunk <= 0 {
		chunk = defaultLossChunk
	}
	chunk = min(chunk, V)

	// Scratch: the running statistics, one chunk of logits and, when dh is
	// wanted, the float32 accumulator (dh itself when dh is F32).
	scr := &scratch{b: b}
	defer scr.free()
	f32 := func(shape ...int) (*tensor.Tensor, error) { return scr.alloc(tensor.F32, shape...) }
	m, err := f32(N)
	if err != nil {
		return err
	}
	s, err := f32(N)
	if err != nil {
		return err
	}
	target, err := f32(N)
	if err != nil {
		return err
	}
	rescale, err := f32(N)
	if err != nil {
		return err
	}
	logitsBuf, err := f32(N, chunk)
	if err != nil {
		return err
	}
	var acc *tensor.Tensor
	if dh != nil {
		acc = dh
		if dh.DType() != tensor.F32 {
			if acc, err = f32(N, H); err != nil {
				return err
			}
		}
	}
	// P goes to the P w product in the dtype that product reads it in:
	// ce_chunk_update writes it so (in place of the logits when float32),
	// and MatMul then has nothing to cast. Without dh there is no product
	// and no P.
	pDType := gemmInputDType(tensor.F32, w.DType(), b.Precise)
	var pBuf *tensor.Tensor
	if acc != nil {
		pBuf = logitsBuf
		if pDType != tensor.F32 {
			if pBuf, err = scr.alloc(pDType, N, chunk); err != nil {
				return err
			}
		}
	}
	// h is cast once to the dtype the products run in, not once per chunk.
	hv, err := h.Reshape(N, H)
	if err != nil {
		return err
	}
	hc, freeH, err := b.castTo(hv, gemmInputDType(h.DType(), w.DType(), b.Precise))
	if err != nil {
		return err
	}
	if freeH {
		scr.keep(hc)
	}

	accH := 1 // ce_init's grid covers acc only when there is one
	if acc != nil {
		accH = H
	}
	args := new(Args).Raw(m).Raw(s).Raw(target).Raw(acc).I32(N).I32(H)
	if err := b.q.launch(op, "ce_init", kernels.Sizes{N: N, H: accH}, args); err != nil {
		return err
	}
	logitsMem, _ := logitsBuf.Device()
	for c0 := 0; c0 < V; c0 += chunk {
		n := min(chunk, V-c0)
		logits, err := tensor.NewOnDevice(tensor.F32, []int{N, n}, tensor.DeviceMem{Ptr: logitsMem.Ptr, Bytes: N * n * 4})
		if err != nil {
			return err
		}
		var p *tensor.Tensor // the chunk's P, [N, n] at the start of pBuf
		if pBuf != nil {
			pMem, _ := pBuf.Device()
			if p, err = tensor.NewOnDevice(pDType, []int{N, n}, tensor.DeviceMem{Ptr: pMem.Ptr, Bytes: N * n * pDType.Size()}); err != nil {
				return err
			}
		}
		wc, err := w.Slice(c0, c0+n)
		if err != nil {
			return err
		}
		if err := b.MatMul(logits, hc, wc, false, true, 1, 0); err != nil {
			return fmt.Errorf("cuda: cross entropy: logits of chunk [%d, %d): %w", c0, c0+n, err)
		}
		args.Reset().Raw(logits).Tensor(p).Raw(rescale).Raw(m).Raw(s).Raw(target).Raw(labels).I32(N).I32(n).I32(c0)
		if err := b.q.launch(op, "ce_chunk_update", kernels.Sizes{N: N}, args); err != nil {
			return err
		}
		if acc == nil {
			continue
		}
		args.Reset().Raw(acc).Raw(rescale).I32(N).I32(H)
		if err := b.q.launch(op, "ce_rescale", kernels.Sizes{N: N, H: H}, args); err != nil {
			return err
		}
		accView, err := acc.Reshape(N, H)
		if err != nil {
			return err
		}
		if err := b.MatMul(accView, p, wc, false, false, 1, 1); err != nil {
			return fmt.Errorf("cuda: cross entropy: gradient of chunk [%d, %d): %w", c0, c0+n, err)
		}
	}
	args.Reset().Raw(logprob).Tensor(dh).Raw(acc).Tensor(w).Raw(m).Raw(s).Raw(target).Raw(labels).
		I32(N).I32(H).F32(gradScale)
	return b.q.launch(op, "ce_finalize", kernels.Sizes{N: N, H: H}, args)
}
