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
	}{{1024, 1024, 1024, F32}, {2048, 4096, 4096, F32}, {1024, 1024, 1024, BF16}, {2048, 4096, 4096, BF16}} {
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

// BenchmarkMicroKernel runs each micro-kernel alone on slivers that stay in
// L1 and L2: the most the GEMM around it can reach.
func BenchmarkMicroKernel(b *testing.B) {
	f32, bf16 := gemmKernels()
	for _, k := range f32 {
		b.Run(k.name, func(b *testing.B) { benchKernel(b, k, 2) })
	}
	for _, k := range bf16 {
		b.Run(k.name, func(b *testing.B) { benchKernel(b, k, 4) })
	}
}

// benchKernel multiplies one A sliver by the B slivers of a 512-column
// panel, as the macro-kernel does; flopsPerElem counts the products in one
// packed element of A times one of B.
func benchKernel[E gemmElem](b *testing.B, k *gemmKernel[E], flopsPerElem int) {
	d := k.depth(k.kc)
	slivers := 512 / k.nr
	a := make([]E, d*k.mr)
	w := make([]E, d*k.nr*slivers)
	c := make([]float32, k.mr*512)
	for b.Loop() {
		for s := 0; s < slivers; s++ {
			k.kern(d, &a[0], &w[s*d*k.nr], &c[s*k.nr], 512, 1, true)
		}
	}
	flops := float64(flopsPerElem * d * k.mr * k.nr * slivers)
	b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
}
