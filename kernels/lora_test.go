package kernels_test

import (
	"fmt"
	"math"
	"testing"

	"github.com/compassml/compass/kernels"
	"github.com/compassml/compass/tensor"
)

// loraProduct is one of the six products of lora.cu's table, as lora_gemm
// arguments and as the tensor.CPU.MatMul call it must match.
type loraProduct struct {
	name               string
	c, a, b            *tensor.Tensor
	transA, transB     bool
	sam, sak, sbk, sbn int
	M, Ncols, K        int
	alpha, beta        float32
}

// TestLoRA checks lora_gemm, on the emulated tensor cores (mma.cuh), for
// every product of a LoRA adapter's forward and backward against
// tensor.CPU.MatMul: sizes that fill no tile (tokens 37, in 70, out 45,
// rank 5), whole tiles (64, 64, 32, 16), a single token, bf16 activations;
// with split = 1 (hi + lo bf16, held to 1e-4) and split = 0 (plain bf16,
// held to 2e-2).
func TestLoRA(t *testing.T) {
	rng := newRand(t)
	for _, c := range []struct {
		N, in, out, r int
		act           tensor.DType // x, y, dy, dx
	}{
		{37, 70, 45, 5, tensor.F32},
		{64, 64, 32, 16, tensor.F32},
		{1, 40, 24, 8, tensor.F32},
		{29, 48, 40, 16, tensor.BF16},
	} {
		s := float32(2.0) // alpha/r
		x := randTensor(rng, c.act, 1, c.N, c.in)
		A := randTensor(rng, tensor.F32, 0.2, c.r, c.in)
		B := randTensor(rng, tensor.F32, 0.2, c.out, c.r)
		dy := randTensor(rng, c.act, 1, c.N, c.out)
		tt := randTensor(rng, tensor.F32, 1, c.N, c.r) // x A^T, saved by the forward
		dt := randTensor(rng, tensor.F32, 1, c.N, c.r)
		products := []loraProduct{
			{"t = x A^T", tensor.New(tensor.F32, c.N, c.r), x, A, false, true, c.in, 1, 1, c.in, c.N, c.r, c.in, 1, 0},
			{"y += s t B^T", randTensor(rng, c.act, 1, c.N, c.out), tt, B, false, true, c.r, 1, 1, c.r, c.N, c.out, c.r, s, 1},
			{"dB += s dy^T t", randTensor(rng, tensor.F32, 1, c.out, c.r), dy, tt, true, false, 1, c.out, c.r, 1, c.out, c.r, c.N, s, 1},
			{"dt = s dy B", tensor.New(tensor.F32, c.N, c.r), dy, B, false, false, c.out, 1, c.r, 1, c.N, c.r, c.out, s, 0},
			{"dA += dt^T x", randTensor(rng, tensor.F32, 1, c.r, c.in), dt, x, true, false, 1, c.r, c.in, 1, c.r, c.in, c.N, 1, 1},
			{"dx += dt A", randTensor(rng, c.act, 1, c.N, c.in), dt, A, false, false, c.r, 1, c.in, 1, c.N, c.in, c.r, 1, 1},
		}
		for _, p := range products {
			want := tensor.New(p.c.DType(), p.c.Shape()...)
			copy(want.Bytes(), p.c.Bytes())
			if err := cpu.MatMul(want, p.a, p.b, p.transA, p.transB, p.alpha, p.beta); err != nil {
				t.Fatal(err)
			}
			for _, split := range []int{1, 0} {
				e := newEmu(t, "lora_gemm").in("a", p.a).in("b", p.b).
					set("M", p.M).set("Ncols", p.Ncols).set("K", p.K).set("ldc", p.Ncols).
					set("sam", p.sam).set("sak", p.sak).set("sbk", p.sbk).set("sbn", p.sbn).
					set("alpha", p.alpha).set("beta", p.beta).set("split", split).set("c_dtype", p.c.DType()).
					launch("lora_gemm", kernels.Sizes{M: p.M, Cols: p.Ncols})
				if p.beta != 0 {
					e.in("c", p.c) // else c starts poisoned: beta = 0 must not read it
				}
				// bf16 operands: products off by up to 2^-8 relative. The
				// largest errors seen over seeds 1-20: 1.7e-5 (split),
				// 3.5e-3 (split, bf16 output), 9.3e-3 (plain bf16).
				tol := tolerance(1e-4)
				if split == 0 {
					tol = 2e-2
				} else if p.c.DType() == tensor.BF16 {
					tol = 1e-2 // the bf16 output's own rounding
				}
				name := fmt.Sprintf("N=%d in=%d out=%d r=%d %v %s split=%d", c.N, c.in, c.out, c.r, c.act, p.name, split)
				closeTo(t, name, e.run()["c"], want, tol)
			}
		}
	}
}

// TestLoRAStridedC checks that lora_gemm writes only C's first Ncols
// columns of each ldc-wide row (a view into a wider matrix, as Phi-3's fused
// projections are).
func TestLoRAStridedC(t *testing.T) {
	rng := newRand(t)
	const M, N, K, ldc = 19, 21, 33, 40
	a := randTensor(rng, tensor.F32, 1, M, K)
	b := randTensor(rng, tensor.F32, 1, N, K)
	c := randTensor(rng, tensor.F32, 1, M, ldc)
	got := newEmu(t, "lora_gemm").in("a", a).in("b", b).in("c", c).
		set("M", M).set("Ncols", N).set("K", K).set("ldc", ldc).set("sam", K).set("sak", 1).set("sbk", 1).set("sbn", K).
		set("alpha", float32(1)).set("beta", float32(1)).set("split", 1).set("c_dtype", tensor.F32).
		launch("lora_gemm", kernels.Sizes{M: M, Cols: N}).run()["c"]
	av, bv, cv, gv := a.F32(), b.F32(), c.F32(), got.F32()
	for i := 0; i < M; i++ {
		for j := 0; j < ldc; j++ {
			want := float64(cv[i*ldc+j])
			if j < N {
				for k := 0; k < K; k++ {
					want += float64(av[i*K+k]) * float64(bv[j*K+k])
				}
			}
			g := float64(gv[i*ldc+j])
			if j >= N && g != want || math.Abs(g-want) > 1e-4*(math.Abs(want)+1) {
				t.Fatalf("c[%d, %d] = %g, want %g", i, j, g, want)
			}
		}
	}
}
