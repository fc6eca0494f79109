package tensor

import "math"

// GELU implements Backend: the exact form, through float64 erf.
func (*CPU) GELU(out, x *Tensor) error {
	if err := floatCheck("gelu", out, x); err != nil {
		return err
	}
	if err := sameShapes("gelu", out, x); err != nil {
		return err
	}
	parallelFor(out.NumElements(), 1<<15, func(lo, hi int) {
		var xs [chunk]float32
		for i := lo; i < hi; i += chunk {
			v := xs[:min(chunk, hi-i)]
			readF32(v, x, i)
			for j, f := range v {
				v[j] = gelu(f)
			}
			writeF32(out, i, v)
		}
	})
	return nil
}

// gelu is x * Phi(x) = x/2 * (1 + erf(x/sqrt(2))), torch's default GELU
// (approximate="none"), which HF's "gelu" activation is.
func gelu(x float32) float32 {
	return float32(0.5 * float64(x) * (1 + math.Erf(float64(x)/math.Sqrt2)))
}
