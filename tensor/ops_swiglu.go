package tensor

import "fmt"

// sigmoids sets s[i] = 1 / (1 + exp(-g[i])) in float32, exp(-g) by the
// vectorised exp of the softmaxes (expSubSum, within 1 ulp): within a few
// ulp of the exact sigmoid, and 0 where exp(-g) overflows to +Inf, as it
// should. (It was float64 math.Exp one value at a time: 7.5 ns a value.)
func sigmoids(s, g []float32) {
	for i, x := range g {
		s[i] = -x
	}
	expSubSum(s, s, 0)
	for i, e := range s {
		s[i] = 1 / (1 + e)
	}
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
		var gs, us, ss [chunk]float32
		for i := lo; i < hi; i += chunk {
			m := min(chunk, hi-i)
			g, u, s := gs[:m], us[:m], ss[:m]
			readF32(g, gate, i)
			readF32(u, up, i)
			sigmoids(s, g)
			for j := range g {
				g[j] = g[j] * s[j] * u[j]
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
		var gs, us, ds, ss [chunk]float32
		for i := lo; i < hi; i += chunk {
			m := min(chunk, hi-i)
			g, u, d, sg := gs[:m], us[:m], ds[:m], ss[:m]
			readF32(g, gate, i)
			readF32(u, up, i)
			readF32(d, dout, i)
			sigmoids(sg, g)
			for j := range g {
				s := sg[j]
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
