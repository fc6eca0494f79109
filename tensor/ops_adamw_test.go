package tensor

import (
	"math"
	"math/rand/v2"
	"testing"
)

func TestAdamW(t *testing.T) {
	cpu := NewCPU()
	rng := rand.New(rand.NewPCG(25, 26))
	// The reference takes the hyperparameters as the op receives them, in
	// float32 (0.999 is 0.99900001287 there).
	var lr, beta1, beta2, eps, wd float32 = 1e-2, 0.9, 0.999, 1e-8, 0.1
	lr64, b1, b2, eps64, wd64 := float64(lr), float64(beta1), float64(beta2), float64(eps), float64(wd)
	shapes := [][]int{{3, 4}, {5}, {40000}} // the last is split over threads
	var params, grads, ms, vs []*Tensor
	var p64, m64, v64 [][]float64
	for _, s := range shapes {
		p := opRandom(rng, F32, s...)
		params = append(params, p)
		grads = append(grads, New(F32, s...))
		ms = append(ms, New(F32, s...))
		vs = append(vs, New(F32, s...))
		p64 = append(p64, opF64(p))
		m64 = append(m64, make([]float64, p.NumElements()))
		v64 = append(v64, make([]float64, p.NumElements()))
	}
	for step := 1; step <= 3; step++ {
		for i, g := range grads {
			writeF32(g, 0, opRandom(rng, F32, g.Shape()...).F32())
			gs := opF64(g)
			bc1 := 1 - math.Pow(b1, float64(step))
			bc2 := 1 - math.Pow(b2, float64(step))
			for j := range gs {
				p64[i][j] *= 1 - lr64*wd64
				m64[i][j] = b1*m64[i][j] + (1-b1)*gs[j]
				v64[i][j] = b2*v64[i][j] + (1-b2)*gs[j]*gs[j]
				p64[i][j] -= lr64 / bc1 * m64[i][j] / (math.Sqrt(v64[i][j])/math.Sqrt(bc2) + eps64)
			}
		}
		if err := cpu.AdamW(params, grads, ms, vs, step, lr, beta1, beta2, eps, wd); err != nil {
			t.Fatal(err)
		}
		for i := range params {
			opCheck(t, "param", params[i], p64[i], 1e-6)
			opCheck(t, "m", ms[i], m64[i], 1e-6)
			opCheck(t, "v", vs[i], v64[i], 1e-6)
		}
	}
}

func TestAdamWErrors(t *testing.T) {
	cpu := NewCPU()
	ts := func(dt DType, shape ...int) []*Tensor { return []*Tensor{New(dt, shape...)} }
	p := ts(F32, 3)
	opWantErr(t, "lengths", cpu.AdamW(p, nil, p, p, 1, 1e-3, 0.9, 0.999, 1e-8, 0), "same length")
	opWantErr(t, "step 0", cpu.AdamW(p, ts(F32, 3), ts(F32, 3), ts(F32, 3), 0, 1e-3, 0.9, 0.999, 1e-8, 0), "step 0")
	opWantErr(t, "BF16 param", cpu.AdamW(ts(BF16, 3), ts(F32, 3), ts(F32, 3), ts(F32, 3), 1, 1e-3, 0.9, 0.999, 1e-8, 0), "F32")
	opWantErr(t, "I32 grad", cpu.AdamW(p, ts(I32, 3), ts(F32, 3), ts(F32, 3), 1, 1e-3, 0.9, 0.999, 1e-8, 0), "F32")
	opWantErr(t, "shape", cpu.AdamW(p, ts(F32, 3), ts(F32, 4), ts(F32, 3), 1, 1e-3, 0.9, 0.999, 1e-8, 0), "shape")
	opWantErr(t, "nil", cpu.AdamW(p, ts(F32, 3), []*Tensor{nil}, ts(F32, 3), 1, 1e-3, 0.9, 0.999, 1e-8, 0), "nil")
}
