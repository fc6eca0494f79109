package kernels_test

import (
	"fmt"
	"math"
	"runtime"
	"testing"

	"github.com/compassml/compass/kernels"
	"github.com/compassml/compass/tensor"
)

// TestAdamW checks adamw, one launch over a table of tensors of 1, 300 and
// 1037 elements, against tensor.CPU.AdamW. The kernel spells out every
// rounding (no fused multiply-adds) and the CPU op has none on amd64, so
// there the two must agree bit for bit; elsewhere Go may fuse, and 1e-6
// is allowed. Run with the Table's grid and with one block per tensor
// (each thread then strides over many elements).
func TestAdamW(t *testing.T) {
	rng := newRand(t)
	sizes := []int{1, 300, 1037}
	const (
		step                      = 3
		lr, beta1, beta2, eps, wd = float32(1e-3), float32(0.9), float32(0.999), float32(1e-8), float32(0.01)
	)
	// What the caller computes in float64, as tensor.CPU.AdamW does.
	decay := float32(1 - float64(lr)*float64(wd))
	stepSize := float32(float64(lr) / (1 - math.Pow(float64(beta1), step)))
	bc2Sqrt := float32(math.Sqrt(1 - math.Pow(float64(beta2), step)))

	for _, grid := range []int{0, 1} {
		var p, g, m, v []*tensor.Tensor
		e := newEmu(t, "adamw").set("tensors", len(sizes)).set("decay", decay).set("beta1", beta1).
			set("beta2", beta2).set("eps", eps).set("step_size", stepSize).set("bc2_sqrt", bc2Sqrt).
			launch("adamw", kernels.Sizes{N: 1037, Tensors: len(sizes)})
		if grid > 0 {
			e.shape("adamw", kernels.Launch{Grid: [3]int{grid, len(sizes), 1}, Block: [3]int{256, 1, 1}})
		}
		for i, n := range sizes {
			p = append(p, randTensor(rng, tensor.F32, 1, n))
			g = append(g, randTensor(rng, tensor.F32, 0.1, n))
			m = append(m, randTensor(rng, tensor.F32, 0.01, n))
			vi := randTensor(rng, tensor.F32, 1e-4, n) // second moments are positive
			for j, x := range vi.F32() {
				vi.F32()[j] = float32(math.Abs(float64(x)))
			}
			v = append(v, vi)
			s := fmt.Sprint(i)
			e.in("p"+s, p[i]).in("g"+s, g[i]).in("m"+s, m[i]).in("v"+s, v[i])
		}
		got := e.run() // before the CPU op updates p, m and v in place
		if err := cpu.AdamW(p, g, m, v, step, lr, beta1, beta2, eps, wd); err != nil {
			t.Fatal(err)
		}
		for i := range sizes {
			for _, c := range []struct {
				name string
				want *tensor.Tensor
			}{{"p", p[i]}, {"m", m[i]}, {"v", v[i]}} {
				name := fmt.Sprintf("grid %d %s%d", grid, c.name, i)
				if runtime.GOARCH == "amd64" {
					sameBits(t, name, got[c.name+fmt.Sprint(i)], c.want)
				} else {
					closeTo(t, name, got[c.name+fmt.Sprint(i)], c.want, 1e-6)
				}
			}
		}
	}
}
