package tensor

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

func refSwiGLU(gate, up []float64) []float64 {
	out := make([]float64, len(gate))
	for i, g := range gate {
		out[i] = g / (1 + math.Exp(-g)) * up[i]
	}
	return out
}

func TestSwiGLUForwardBackward(t *testing.T) {
	cpu := NewCPU()
	rng := rand.New(rand.NewPCG(13, 14))
	for _, dt := range []DType{F32, BF16, F16} {
		fwdTol := 1e-6
		switch dt {
		case BF16:
			fwdTol = 1e-2
		case F16:
			fwdTol = 2e-3
		}
		for _, shape := range [][]int{{1}, {3, 7}, {2, 5, 33}, {4100}} {
			name := fmt.Sprint(dt, shape)
			gate, up := opRandom(rng, dt, shape...), opRandom(rng, dt, shape...)
			out := New(dt, shape...)
			if err := cpu.SwiGLU(out, gate, up); err != nil {
				t.Fatal(err)
			}
			gs, us := opF64(gate), opF64(up)
			opCheck(t, name+" out", out, refSwiGLU(gs, us), fwdTol)

			dout := opRandom(rng, dt, shape...)
			dgate, dup := New(F32, shape...), New(F32, shape...)
			if err := cpu.SwiGLUBackward(dgate, dup, dout, gate, up); err != nil {
				t.Fatal(err)
			}
			// SwiGLU is elementwise: the finite differences of sum(out * cot)
			// are taken one element at a time.
			cot := opF64(dout)
			wantG, wantU := make([]float64, len(gs)), make([]float64, len(gs))
			for i := range gs {
				loss := func() float64 { return refSwiGLU(gs[i:i+1], us[i:i+1])[0] * cot[i] }
				wantG[i] = opNumGrad(loss, gs[i:i+1])[0]
				wantU[i] = opNumGrad(loss, us[i:i+1])[0]
			}
			opCheck(t, name+" dgate", dgate, wantG, 1e-4)
			opCheck(t, name+" dup", dup, wantU, 1e-4)
		}
	}
}

// TestSwiGLUExtremes checks large gates, where exp(-g) underflows or
// overflows: silu(g) tends to g and to 0, and nothing is NaN.
func TestSwiGLUExtremes(t *testing.T) {
	cpu := NewCPU()
	gv := []float32{-200, -95, -20, 0, 20, 95, 200}
	gate, _ := FromF32(gv, len(gv))
	up, dout := New(F32, len(gv)), New(F32, len(gv))
	for i := range gv {
		up.F32()[i], dout.F32()[i] = 1.5, 1
	}
	out, dgate, dup := New(F32, len(gv)), New(F32, len(gv)), New(F32, len(gv))
	if err := cpu.SwiGLU(out, gate, up); err != nil {
		t.Fatal(err)
	}
	if err := cpu.SwiGLUBackward(dgate, dup, dout, gate, up); err != nil {
		t.Fatal(err)
	}
	for i, g := range gv {
		s := 1 / (1 + math.Exp(-float64(g)))
		want := []float64{float64(g) * s * 1.5, 1.5 * s * (1 + float64(g)*(1-s)), float64(g) * s}
		for j, got := range []float32{out.F32()[i], dgate.F32()[i], dup.F32()[i]} {
			if math.Abs(float64(got)-want[j]) > 1e-6*(1+math.Abs(want[j])) {
				t.Fatalf("gate %v: output %d: got %v, want %v", g, j, got, want[j])
			}
		}
	}
}

func TestSwiGLUErrors(t *testing.T) {
	cpu := NewCPU()
	a, b := New(F32, 3, 4), New(F32, 3, 4)
	opWantErr(t, "shape", cpu.SwiGLU(New(F32, 4, 3), a, b), "shapes differ")
	opWantErr(t, "I32", cpu.SwiGLU(a, New(I32, 3, 4), b), "floating-point")
	opWantErr(t, "backward shape", cpu.SwiGLUBackward(a, b, a, a, New(F32, 12)), "shapes differ")
	opWantErr(t, "backward I32", cpu.SwiGLUBackward(New(I32, 3, 4), b, a, a, b), "floating-point")
}
