package tensor

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// BenchmarkMatMul reports GFLOP/s of the CPU MatMul; `compass bench` puts
// the same shapes next to PyTorch.
func BenchmarkMatMul(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, s := range []struct {
		m, n, k int
		dt      DType
	}{{1024, 1024, 1024, F32}, {2048, 4096, 4096, F32}, {2048, 4096, 4096, BF16}} {
		b.Run(fmt.Sprintf("%dx%dx%d_%s", s.m, s.n, s.k, s.dt), func(b *testing.B) {
			a := randomTensor(rng, s.dt, s.m, s.k)
			w := randomTensor(rng, s.dt, s.n, s.k)
			c := New(F32, s.m, s.n)
			cpu := NewCPU()
			for b.Loop() {
				if err := cpu.MatMul(c, a, w, false, true, 1, 0); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(2*float64(s.m*s.n*s.k)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
}
