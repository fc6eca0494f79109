package tensor

import "fmt"

// RoPE implements Backend.
func (*CPU) RoPE(out, x, cos, sin *Tensor, inverse bool) error {
	if err := floatCheck("rope", out, x); err != nil {
		return err
	}
	if x.Rank() < 3 {
		return fmt.Errorf("tensor: rope: x %v must be [N, heads, headDim]", x)
	}
	if !out.SameShape(x) {
		return fmt.Errorf("tensor: rope: out %v != x %v", out, x)
	}
	if cos.dtype != F32 || sin.dtype != F32 || cos.Rank() != 2 || !sin.SameShape(cos) {
		return fmt.Errorf("tensor: rope: cos %v and sin %v must both be F32 [N, R/2]", cos, sin)
	}
	heads, D := x.Dim(-2), x.Dim(-1)
	N := x.NumElements()
	if heads*D > 0 {
		N /= heads * D
	} else {
		N = 1
		for _, d := range x.shape[:x.Rank()-2] {
			N *= d
		}
	}
	half := cos.Dim(1)
	if cos.Dim(0) != N || 2*half > D {
		return fmt.Errorf("tensor: rope: cos %v does not fit x %v: want [%d, R/2] with R <= %d", cos, x, N, D)
	}
	cv, sv := cos.F32(), sin.F32()
	// sign flips the sine for the inverse (transposed) rotation.
	sign := float32(1)
	if inverse {
		sign = -1
	}
	parallelFor(N, max(1, (1<<13)/max(heads*D, 1)), func(lo, hi int) {
		row := make([]float32, D)
		for n := lo; n < hi; n++ {
			c, s := cv[n*half:(n+1)*half], sv[n*half:(n+1)*half]
			for h := 0; h < heads; h++ {
				off := (n*heads + h) * D
				readF32(row, x, off)
				for i := 0; i < half; i++ {
					a, b := row[i], row[i+half]
					si := sign * s[i]
					row[i] = a*c[i] - b*si
					row[i+half] = b*c[i] + a*si
				}
				writeF32(out, off, row) // dimensions R..D-1 pass through unchanged
			}
		}
	})
	return nil
}
