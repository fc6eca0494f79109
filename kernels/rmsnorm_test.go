package kernels_test

import (
	"fmt"
	"testing"

	"github.com/compassml/compass/kernels"
	"github.com/compassml/compass/tensor"
)

// TestRMSNorm checks rmsnorm_forward and rmsnorm_backward against the CPU
// ops: rows and widths that are not multiples of the block (H = 1 and a
// single row too), float32 and bf16 activations, a bf16 weight under
// float32 activations, and blocks of one warp as well as the Table's.
func TestRMSNorm(t *testing.T) {
	rng := newRand(t)
	for _, c := range []struct {
		rows, H   int
		x, w, out tensor.DType
		scale     float64 // of x
		tol       tolerance
	}{
		{13, 100, tensor.F32, tensor.F32, tensor.F32, 2, 1e-5},
		{5, 300, tensor.BF16, tensor.BF16, tensor.BF16, 2, 1e-2},
		{3, 77, tensor.F32, tensor.BF16, tensor.F32, 2, 1e-5},
		{2, 50, tensor.F16, tensor.F32, tensor.F16, 2, 2e-3},
		// H = 1: dx = r dn eps/(x^2 + eps), which for |x| >> sqrt(eps) is
		// the cancellation of two large terms; |x| < 0.004 keeps it a
		// well-conditioned check of the indexing.
		{1, 1, tensor.F32, tensor.F32, tensor.F32, 0.004, 1e-5},
	} {
		name := fmt.Sprintf("%dx%d x=%v w=%v", c.rows, c.H, c.x, c.w)
		x := randTensor(rng, c.x, c.scale, c.rows, c.H)
		w := randTensor(rng, c.w, 1.5, c.H)
		const eps = 1e-5
		want, rstd := like(x, c.out), tensor.New(tensor.F32, c.rows)
		if err := cpu.RMSNorm(want, rstd, x, w, eps); err != nil {
			t.Fatal(err)
		}
		dout := randTensor(rng, c.x, 1, c.rows, c.H)
		wantDx := like(x, c.out)
		if err := cpu.RMSNormBackward(wantDx, dout, x, w, rstd); err != nil {
			t.Fatal(err)
		}
		for _, block := range []int{0, 32} {
			sizes := kernels.Sizes{N: c.rows}
			fwd := newEmu(t, "rmsnorm_forward").in("x", x).in("w", w).set("eps", float32(eps)).set("out_dtype", c.out).
				launch("rmsnorm_forward", sizes)
			bwd := newEmu(t, "rmsnorm_backward").in("dout", dout).in("x", x).in("w", w).in("rstd", rstd).
				set("dx_dtype", c.out).launch("rmsnorm_backward", sizes)
			label := name
			if block > 0 {
				label += fmt.Sprintf(" block %d", block)
				l := kernels.Launch{Grid: [3]int{c.rows, 1, 1}, Block: [3]int{block, 1, 1}}
				fwd.shape("rmsnorm_forward", l)
				bwd.shape("rmsnorm_backward", l)
			}
			got := fwd.run()
			closeTo(t, label+" out", got["out"], want, c.tol)
			closeTo(t, label+" rstd", got["rstd"], rstd, 1e-5)
			closeTo(t, label+" dx", bwd.run()["dx"], wantDx, c.tol)
		}
	}
}
