package kernels_test

import (
	"fmt"
	"math"
	"testing"

	"github.com/compassml/compass/kernels"
	"github.com/compassml/compass/tensor"
)

// TestRoPE checks rope against tensor.CPU.RoPE, forward and inverse: full
// and partial rotary (R < D, the rest copied), odd sizes, bf16 in and out,
// in place (out = x, as the decoder calls it) and a single token.
func TestRoPE(t *testing.T) {
	rng := newRand(t)
	for _, c := range []struct {
		N, heads, D, R int
		x, out         tensor.DType
		inplace        bool
		tol            tolerance
	}{
		{7, 3, 10, 10, tensor.F32, tensor.F32, false, 1e-6},
		{7, 3, 10, 6, tensor.F32, tensor.F32, false, 1e-6},
		{9, 2, 24, 16, tensor.BF16, tensor.BF16, false, 1e-2},
		{5, 4, 12, 8, tensor.F32, tensor.F32, true, 1e-6},
		{1, 1, 2, 2, tensor.F16, tensor.F32, false, 1e-6},
	} {
		x := randTensor(rng, c.x, 2, c.N, c.heads, c.D)
		half := c.R / 2
		cv, sv := make([]float32, c.N*half), make([]float32, c.N*half)
		for i := range cv {
			a := rng.Float64() * 2 * math.Pi
			cv[i], sv[i] = float32(math.Cos(a)), float32(math.Sin(a))
		}
		cos, sin := must(tensor.FromF32(cv, c.N, half)), must(tensor.FromF32(sv, c.N, half))
		for _, inverse := range []bool{false, true} {
			name := fmt.Sprintf("N=%d heads=%d D=%d R=%d %v->%v inplace=%v inverse=%v", c.N, c.heads, c.D, c.R, c.x, c.out, c.inplace, inverse)
			want := like(x, c.out)
			if err := cpu.RoPE(want, x, cos, sin, inverse); err != nil {
				t.Fatal(err)
			}
			got := newEmu(t, "rope").in("x", x).in("cos", cos).in("sin", sin).set("heads", c.heads).
				set("inverse", inverse).set("inplace", c.inplace).set("out_dtype", c.out).
				launch("rope", kernels.Sizes{N: c.N, Heads: c.heads, D: c.D, Half: half}).run()
			out := got["out"]
			if c.inplace {
				out = got["x"]
			}
			closeTo(t, name, out, want, c.tol)
		}
	}
}
