package kernels_test

import (
	"fmt"
	"testing"

	"github.com/compassml/compass/kernels"
	"github.com/compassml/compass/tensor"
)

// TestSwiGLU checks swiglu_forward and swiglu_backward against the CPU ops,
// on gates up to +-12 (sigmoid saturating both ways), float32 and bf16.
func TestSwiGLU(t *testing.T) {
	rng := newRand(t)
	for _, c := range []struct {
		shape []int
		dtype tensor.DType
		tol   tolerance
	}{
		{[]int{5, 67}, tensor.F32, 1e-6},
		{[]int{3, 41}, tensor.BF16, 1e-2},
		{[]int{1}, tensor.F32, 1e-6},
	} {
		name := fmt.Sprintf("%v %v", c.shape, c.dtype)
		gate, up := randTensor(rng, c.dtype, 12, c.shape...), randTensor(rng, c.dtype, 2, c.shape...)
		dout := randTensor(rng, c.dtype, 1, c.shape...)
		want, wantDg, wantDu := like(gate, c.dtype), like(gate, c.dtype), like(gate, c.dtype)
		if err := cpu.SwiGLU(want, gate, up); err != nil {
			t.Fatal(err)
		}
		if err := cpu.SwiGLUBackward(wantDg, wantDu, dout, gate, up); err != nil {
			t.Fatal(err)
		}
		n := kernels.Sizes{N: gate.NumElements()}
		got := newEmu(t, "swiglu_forward").in("gate", gate).in("up", up).set("out_dtype", c.dtype).
			launch("swiglu_forward", n).run()
		closeTo(t, name+" out", got["out"], want, c.tol)
		got = newEmu(t, "swiglu_backward").in("dout", dout).in("gate", gate).in("up", up).
			set("dgate_dtype", c.dtype).set("dup_dtype", c.dtype).launch("swiglu_backward", n).run()
		closeTo(t, name+" dgate", got["dgate"], wantDg, c.tol)
		closeTo(t, name+" dup", got["dup"], wantDu, c.tol)
	}
}
