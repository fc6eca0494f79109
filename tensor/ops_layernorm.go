package tensor

import (
	"fmt"
	"math"
)

// LayerNorm implements Backend. The row's mean and variance are summed in
// float64 (two passes, so that a large mean does not cancel the variance);
// the rest is float32.
func (*CPU) LayerNorm(out, x, weight, bias *Tensor, eps float32) error {
	rows, H, err := layerNormShapes("layernorm", out, x, weight, bias)
	if err != nil {
		return err
	}
	w := weight.ToF32()
	var bv []float32
	if bias != nil {
		bv = bias.ToF32()
	}
	parallelFor(rows, max(1, (1<<14)/max(H, 1)), func(lo, hi int) {
		row := make([]float32, H)
		for r := lo; r < hi; r++ {
			readF32(row, x, r*H)
			mean, rstd := meanRstd(row, eps)
			for i, v := range row {
				n := (v - mean) * rstd * w[i]
				if bv != nil {
					n += bv[i]
				}
				row[i] = n
			}
			writeF32(out, r*H, row)
		}
	})
	return nil
}

// meanRstd returns the mean of row and 1/sqrt(var + eps), var being the
// biased variance, as torch.nn.LayerNorm computes them.
func meanRstd(row []float32, eps float32) (mean, rstd float32) {
	s := 0.0
	for _, v := range row {
		s += float64(v)
	}
	m := s / float64(len(row))
	ss := 0.0
	for _, v := range row {
		d := float64(v) - m
		ss += d * d
	}
	variance := float32(ss / float64(len(row)))
	return float32(m), float32(1 / math.Sqrt(float64(variance+eps)))
}

// layerNormShapes checks out and x [..., H], weight [H] and bias (nil or
// [H]), and returns the number of rows and H.
func layerNormShapes(op string, out, x, weight, bias *Tensor) (rows, H int, err error) {
	ts := []*Tensor{out, x, weight}
	if bias != nil {
		ts = append(ts, bias)
	}
	if err := floatCheck(op, ts...); err != nil {
		return 0, 0, err
	}
	if x.Rank() == 0 {
		return 0, 0, fmt.Errorf("tensor: %s: x %v must have a hidden dimension", op, x)
	}
	H = x.Dim(-1)
	if weight.Rank() != 1 || weight.Dim(0) != H {
		return 0, 0, fmt.Errorf("tensor: %s: weight %v must be [%d] for x %v", op, weight, H, x)
	}
	if bias != nil && (bias.Rank() != 1 || bias.Dim(0) != H) {
		return 0, 0, fmt.Errorf("tensor: %s: bias %v must be [%d] for x %v", op, bias, H, x)
	}
	if !out.SameShape(x) {
		return 0, 0, fmt.Errorf("tensor: %s: out %v must have the shape of x %v", op, out, x)
	}
	return x.NumElements() / max(H, 1), H, nil
}
