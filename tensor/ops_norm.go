package tensor

import (
	"fmt"
	"math"
)

// normShapes checks x [..., H], weight [H] and the tensors shaped like x, and
// that rstd holds one F32 per row. It returns the number of rows and H.
func normShapes(op string, x, weight, rstd *Tensor, likeX ...*Tensor) (rows, H int, err error) {
	if err := floatCheck(op, append([]*Tensor{x, weight}, likeX...)...); err != nil {
		return 0, 0, err
	}
	if x.Rank() == 0 {
		return 0, 0, fmt.Errorf("tensor: %s: x %v must have a hidden dimension", op, x)
	}
	H = x.Dim(-1)
	if weight.Rank() != 1 || weight.Dim(0) != H {
		return 0, 0, fmt.Errorf("tensor: %s: weight %v must be [%d] for x %v", op, weight, H, x)
	}
	for _, t := range likeX {
		if !t.SameShape(x) {
			return 0, 0, fmt.Errorf("tensor: %s: %v must have the shape of x %v", op, t, x)
		}
	}
	rows = 1
	for _, d := range x.shape[:x.Rank()-1] {
		rows *= d
	}
	if rstd.dtype != F32 || rstd.NumElements() != rows {
		return 0, 0, fmt.Errorf("tensor: %s: rstd %v must be F32 with %d elements, one per row of x %v", op, rstd, rows, x)
	}
	return rows, H, nil
}

// RMSNorm implements Backend.
func (*CPU) RMSNorm(out, rstd, x, weight *Tensor, eps float32) error {
	rows, H, err := normShapes("rmsnorm", x, weight, rstd, out)
	if err != nil {
		return err
	}
	w := weight.ToF32()
	rs := rstd.F32()
	parallelFor(rows, max(1, (1<<14)/max(H, 1)), func(lo, hi int) {
		row := make([]float32, H)
		for r := lo; r < hi; r++ {
			readF32(row, x, r*H)
			ss := 0.0 // float64: a long sum of squares
			for _, v := range row {
				ss += float64(v) * float64(v)
			}
			inv := float32(1 / math.Sqrt(float64(float32(ss/float64(H))+eps)))
			rs[r] = inv
			for i := range row {
				row[i] *= inv
			}
			roundTo(x.dtype, row) // HF casts the normalised row back to x's dtype before the weight
			for i := range row {
				row[i] *= w[i]
			}
			writeF32(out, r*H, row)
		}
	})
	return nil
}

// roundTo rounds each value of v to the nearest value of dtype d.
func roundTo(d DType, v []float32) {
	switch d {
	case BF16:
		for i, f := range v {
			v[i] = BF16ToF32(F32ToBF16(f))
		}
	case F16:
		for i, f := range v {
			v[i] = F16ToF32(F32ToF16(f))
		}
	}
}

// RMSNormBackward implements Backend. With n = x r and r = (mean(x^2) +
// eps)^(-1/2), the gradient through the normalisation is
// dx = r dn - r^3 x (dn·x) / H, where dn = dout * weight. The rounding of n
// to x's dtype is treated as the identity.
func (*CPU) RMSNormBackward(dx, dout, x, weight, rstd *Tensor) error {
	rows, H, err := normShapes("rmsnorm backward", x, weight, rstd, dx, dout)
	if err != nil {
		return err
	}
	w := weight.ToF32()
	rs := rstd.F32()
	parallelFor(rows, max(1, (1<<14)/max(H, 1)), func(lo, hi int) {
		xr := make([]float32, H)
		dn := make([]float32, H)
		for r := lo; r < hi; r++ {
			readF32(xr, x, r*H)
			readF32(dn, dout, r*H)
			dot := 0.0
			for i := range dn {
				dn[i] *= w[i]
				dot += float64(dn[i]) * float64(xr[i])
			}
			inv := rs[r]
			c := float32(float64(inv) * float64(inv) * float64(inv) * dot / float64(H))
			for i := range dn {
				dn[i] = inv*dn[i] - c*xr[i]
			}
			writeF32(dx, r*H, dn)
		}
	})
	return nil
}
