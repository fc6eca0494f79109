package tensor

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// BenchmarkMatMul reports GFLOP/s of the CPU MatMul; `compass bench` puts
// the first four shapes next to PyTorch. The last two are a 256-token
// micro-batch through Llama-3.1-8B's gate projection, forward (x W^T) and
// backward (dy W), where packing W is a large share of the time.
func BenchmarkMatMul(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, s := range []struct {
		m, n, k int
		dt      DType
		wT      bool // W is [n, k], multiplied transposed; else [k, n]
	}{{1024, 1024, 1024, F32, true}, {2048, 4096, 4096, F32, true}, {1024, 1024, 1024, BF16, true}, {2048, 4096, 4096, BF16, true},
		{256, 14336, 4096, BF16, true}, {256, 4096, 14336, BF16, false}} {
		name := fmt.Sprintf("%dx%dx%d_%s", s.m, s.n, s.k, s.dt)
		if !s.wT {
			name += "_W"
		}
		b.Run(name, func(b *testing.B) {
			a := randomTensor(rng, s.dt, s.m, s.k)
			w := randomTensor(rng, s.dt, s.n, s.k)
			if !s.wT {
				w = randomTensor(rng, s.dt, s.k, s.n)
			}
			c := New(F32, s.m, s.n)
			cpu := NewCPU()
			for b.Loop() {
				if err := cpu.MatMul(c, a, w, false, s.wT, 1, 0); err != nil {
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
