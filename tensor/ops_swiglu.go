package tensor

import (
	"fmt"
	"math"
)

// sigmoid in float32 through float64 exp: exact enough, and no overflow
// warnings to care about (exp(+large) = +Inf gives 0, as it should).
func sigmoid(x float32) float32 {
	return float32(1 / (1 + math.Exp(-float64(x))))
}

func sameShapes(op string, ts ...*Tensor) error {
	for _, t := range ts[1:] {
		if !t.SameShape(ts[0]) {
			return fmt.Errorf("tensor: %s: shapes differ: %v and %v", op, ts[0], t)
		}
	}
	return nil
}

// SwiGLU implements Backend.
func (*CPU) SwiGLU(out, gate, up *Tensor) error {
	if err := floatCheck("swiglu", out, gate, up); err != nil {
		return err
	}
	if err := sameShapes("swiglu", out, gate, up); err != nil {
		return err
	}
	parallelFor(out.NumElements(), 1<<15, func(lo, hi int) {
		var gs, us [chunk]float32
		for i := lo; i < hi; i += chunk {
			m := min(chunk, hi-i)
			g, u := gs[:m], us[:m]
			readF32(g, gate, i)
			readF32(u, up, i)
			for j := range g {
				g[j] = g[j] * sigmoid(g[j]) * u[j]
			}
			writeF32(out, i, g)
		}
	})
	return nil
}

// SwiGLUBackward implements Backend. With s = sigmoid(g):
// d silu(g)/dg = s + g s (1 - s) = s (1 + g (1 - s)).
func (*CPU) SwiGLUBackward(dgate, dup, dout, gate, up *Tensor) error {
	if err := floatCheck("swiglu backward", dgate, dup, dout, gate, up); err != nil {
		return err
	}
	if err := sameShapes("swiglu backward", dout, dgate, dup, gate, up); err != nil {
		return err
	}
	parallelFor(dout.NumElements(), 1<<15, func(lo, hi int) {
		var gs, us, ds [chunk]float32
		for i := lo; i < hi; i += chunk {
			m := min(chunk, hi-i)
			g, u, d := gs[:m], us[:m], ds[:m]
			readF32(g, gate, i)
			readF32(u, up, i)
			readF32(d, dout, i)
			for j := range g {
				s := sigmoid(g[j])
				dg := d[j] * u[j] * s * (1 + g[j]*(1-s))
				u[j] = d[j] * g[j] * s // dup = dout * silu(gate)
				g[j] = dg
			}
			writeF32(dgate, i, g)
			writeF32(dup, i, u)
		}
	})
	return nil
}
