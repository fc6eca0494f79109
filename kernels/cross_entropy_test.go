package kernels_test

import (
	"fmt"
	"testing"

	"github.com/compassml/compass/kernels"
	"github.com/compassml/compass/tensor"
)

// TestCrossEntropy checks the launch sequence of cross_entropy.cu
// (ce_init, then per chunk ce_chunk_update and ce_rescale around the two
// products, then ce_finalize), which the driver runs with a plain loop in
// place of cuBLAS, against tensor.CPU.CrossEntropy with the same chunk:
// chunks that do not divide the vocabulary, a chunk of 1 column and one
// wider than the vocabulary, ignored rows, labels in the first and last
// chunk, bf16 inputs, dh in bf16 (a separate accumulator) and in float32
// (dh is the accumulator, as in the CPU op), and the loss alone.
func TestCrossEntropy(t *testing.T) {
	rng := newRand(t)
	for _, c := range []struct {
		N, H, V, chunk int
		dtype, dh      tensor.DType
		wantDh         bool
		tol            tolerance
	}{
		{13, 24, 50, 16, tensor.F32, tensor.F32, true, 1e-5},
		{13, 24, 50, 64, tensor.F32, tensor.F32, true, 1e-5},
		{9, 40, 37, 8, tensor.BF16, tensor.BF16, true, 1e-2},
		{3, 5, 7, 1, tensor.F32, tensor.F32, true, 1e-5},
		{6, 16, 30, 7, tensor.F32, tensor.F32, false, 1e-5},
		{1, 3, 4, 3, tensor.F32, tensor.F32, true, 1e-5},
	} {
		name := fmt.Sprintf("N=%d H=%d V=%d chunk=%d %v dh=%v", c.N, c.H, c.V, c.chunk, c.dtype, c.wantDh)
		// Logits of a few units, as a trained model has.
		h := randTensor(rng, c.dtype, 2, c.N, c.H)
		w := randTensor(rng, c.dtype, 1, c.V, c.H)
		labels := make([]int32, c.N)
		for i := range labels {
			switch {
			case i == 0:
				labels[i] = int32(c.V - 1) // the last chunk
			case i == 1 && c.N > 2:
				labels[i] = -100
			case i%4 == 3:
				labels[i] = -100
			default:
				labels[i] = int32(rng.IntN(c.V))
			}
		}
		gradScale := float32(1) / float32(c.N)
		wantLp := tensor.New(tensor.F32, c.N)
		var wantDh *tensor.Tensor
		if c.wantDh {
			wantDh = tensor.New(c.dh, c.N, c.H)
		}
		if err := cpu.CrossEntropy(wantLp, wantDh, h, w, i32s(labels, c.N), c.chunk, gradScale); err != nil {
			t.Fatal(err)
		}
		e := newEmu(t, "cross_entropy").in("h", h).in("w", w).in("labels", i32s(labels, c.N)).
			set("chunk", c.chunk).set("grad_scale", gradScale).set("want_dh", c.wantDh).set("dh_dtype", c.dh)
		e.launch("ce_init", kernels.Sizes{N: c.N, H: c.H})
		e.launch("ce_chunk_update", kernels.Sizes{N: c.N})
		e.launch("ce_rescale", kernels.Sizes{N: c.N, H: c.H})
		e.launch("ce_finalize", kernels.Sizes{N: c.N, H: c.H})
		got := e.run()
		closeTo(t, name+" logprob", got["logprob"], wantLp, 1e-5)
		if c.wantDh {
			closeTo(t, name+" dh", got["dh"], wantDh, c.tol)
		} else if got["dh"] != nil {
			t.Errorf("%s: dh written when not wanted", name)
		}
	}
}
