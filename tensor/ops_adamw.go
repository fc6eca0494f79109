package tensor

import (
	"fmt"
	"math"
)

// AdamW implements Backend. It follows torch.optim.AdamW's single-tensor
// path: the bias corrections are computed in float64 (Python floats there)
// and the update in float32.
func (*CPU) AdamW(params, grads, m, v []*Tensor, step int, lr, beta1, beta2, eps, weightDecay float32) error {
	if len(grads) != len(params) || len(m) != len(params) || len(v) != len(params) {
		return fmt.Errorf("tensor: adamw: %d params, %d grads, %d m and %d v: the lists must have the same length",
			len(params), len(grads), len(m), len(v))
	}
	if step < 1 {
		return fmt.Errorf("tensor: adamw: step %d: steps count from 1", step)
	}
	for i, p := range params {
		for _, t := range []*Tensor{p, grads[i], m[i], v[i]} {
			if t == nil {
				return fmt.Errorf("tensor: adamw: tensor %d: nil parameter, gradient or state", i)
			}
			if t.dtype != F32 {
				return fmt.Errorf("tensor: adamw: tensor %d: %v must be F32", i, t)
			}
			if !t.SameShape(p) {
				return fmt.Errorf("tensor: adamw: tensor %d: %v does not have the parameter's shape %v", i, t, p)
			}
		}
	}
	decay := float32(1 - float64(lr)*float64(weightDecay))
	bc1 := 1 - math.Pow(float64(beta1), float64(step))
	bc2 := 1 - math.Pow(float64(beta2), float64(step))
	stepSize := float32(float64(lr) / bc1)
	bc2Sqrt := float32(math.Sqrt(bc2))
	for i := range params {
		p, g, mt, vt := params[i].F32(), grads[i].F32(), m[i].F32(), v[i].F32()
		parallelFor(len(p), 1<<15, func(lo, hi int) {
			for j := lo; j < hi; j++ {
				p[j] *= decay
				mt[j] = beta1*mt[j] + (1-beta1)*g[j]
				vt[j] = beta2*vt[j] + (1-beta2)*g[j]*g[j]
				denom := float32(math.Sqrt(float64(vt[j])))/bc2Sqrt + eps
				p[j] -= stepSize * mt[j] / denom
			}
		})
	}
	return nil
}
