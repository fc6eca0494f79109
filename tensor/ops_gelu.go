package tensor

// GELU implements Backend: the exact form, in float32 (gelu.go).
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
			geluImpl.apply(v, v)
			writeF32(out, i, v)
		}
	})
	return nil
}
