package tensor

import (
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"testing"
)

func randomTensor(rng *rand.Rand, dtype DType, shape ...int) *Tensor {
	t := New(dtype, shape...)
	v := make([]float32, t.NumElements())
	for i := range v {
		v[i] = float32(rng.NormFloat64())
	}
	writeF32(t, 0, v)
	return t
}

// refMatMul is the float64 reference: alpha*op(a)*op(b) + beta*c, from the
// values as stored (so rounding of bf16 inputs is not counted as error).
func refMatMul(c, a, b *Tensor, transA, transB bool, alpha, beta float32) []float64 {
	av, bv, cv := a.ToF32(), b.ToF32(), c.ToF32()
	var M, K, N int
	if transA {
		K, M = a.Dim(0), a.Dim(1)
	} else {
		K = a.Dim(-1)
		M = a.NumElements() / K
	}
	if transB {
		N = b.Dim(0)
	} else {
		N = b.Dim(1)
	}
	out := make([]float64, M*N)
	for i := 0; i < M; i++ {
		for j := 0; j < N; j++ {
			s := 0.0
			for p := 0; p < K; p++ {
				x := av[i*K+p]
				if transA {
					x = av[p*M+i]
				}
				y := bv[p*N+j]
				if transB {
					y = bv[j*K+p]
				}
				s += float64(x) * float64(y)
			}
			out[i*N+j] = float64(alpha) * s
			if beta != 0 {
				out[i*N+j] += float64(beta) * float64(cv[i*N+j])
			}
		}
	}
	return out
}

// checkClose compares with a tolerance scaled by sqrt(K): float32
// accumulation error grows with the depth of the sum.
func checkClose(t *testing.T, what string, got []float32, want []float64, K int, outDType DType) {
	t.Helper()
	tol := 1e-5 * math.Sqrt(float64(K)+1)
	if outDType != F32 {
		tol = 1e-2 // rounding of the output itself
	}
	for i := range want {
		d := math.Abs(float64(got[i]) - want[i])
		if d > tol*(1+math.Abs(want[i])) || math.IsNaN(float64(got[i])) {
			t.Fatalf("%s: element %d: got %v, want %v", what, i, got[i], want[i])
		}
	}
}

func withKernel(t *testing.T, k func(int, *float32, *float32, *float32, int)) {
	saved := microKernel
	microKernel = k
	t.Cleanup(func() { microKernel = saved })
}

func TestMatMulAgainstFloat64(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	cpu := NewCPU()
	kernels := map[string]func(int, *float32, *float32, *float32, int){"go": kernelGo}
	if useAVX2 {
		kernels["avx2"] = microKernel
	} else {
		t.Log("no AVX2/FMA on this CPU: only the portable kernel is tested")
	}
	// Shapes around every blocking size (MR 6, NR 16, KC 256, MC 120, NC 3072)
	// plus random ones; none need be a multiple of anything.
	shapes := [][3]int{{1, 1, 1}, {6, 16, 1}, {7, 17, 3}, {5, 15, 257}, {121, 33, 256},
		{13, 3073, 5}, {240, 48, 513}, {2, 300, 64}, {130, 1, 70}}
	for i := 0; i < 12; i++ {
		shapes = append(shapes, [3]int{1 + rng.IntN(150), 1 + rng.IntN(150), 1 + rng.IntN(600)})
	}
	for name, k := range kernels {
		withKernel(t, k)
		for n, s := range shapes {
			M, N, K := s[0], s[1], s[2]
			transA, transB := n%2 == 1, n/2%2 == 1
			dtA := []DType{F32, BF16, F16}[n%3]
			dtB := []DType{F32, BF16, BF16, F16}[n%4]
			dtC := F32
			if n%5 == 4 {
				dtC = BF16
			}
			alpha, beta := float32(1), float32(0)
			if n%3 == 2 {
				alpha, beta = 0.5, -1.5
			}
			aShape, bShape := []int{M, K}, []int{K, N}
			if transA {
				aShape = []int{K, M}
			}
			if transB {
				bShape = []int{N, K}
			}
			a := randomTensor(rng, dtA, aShape...)
			b := randomTensor(rng, dtB, bShape...)
			c := randomTensor(rng, dtC, M, N)
			want := refMatMul(c, a, b, transA, transB, alpha, beta)
			if err := cpu.MatMul(c, a, b, transA, transB, alpha, beta); err != nil {
				t.Fatal(err)
			}
			what := fmt.Sprintf("%s M=%d N=%d K=%d transA=%v transB=%v %s*%s->%s", name, M, N, K, transA, transB, dtA, dtB, dtC)
			checkClose(t, what, c.ToF32(), want, K, dtC)
		}
	}
}

// The result must not depend on the number of threads (the tasks split the
// output, never the depth, so each element is summed in the same order).
func TestMatMulThreadsAgree(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	a := randomTensor(rng, BF16, 300, 700)
	b := randomTensor(rng, BF16, 200, 700)
	run := func(procs int) []float32 {
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(procs))
		c := New(F32, 300, 200)
		if err := NewCPU().MatMul(c, a, b, false, true, 1, 0); err != nil {
			t.Fatal(err)
		}
		return c.F32()
	}
	one, four := run(1), run(4)
	for i := range one {
		if one[i] != four[i] {
			t.Fatalf("element %d: 1 thread %v, 4 threads %v", i, one[i], four[i])
		}
	}
}

func TestMatMulBatchedAndEdgeCases(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	cpu := NewCPU()
	// Leading dimensions of a flatten into M: [2,3,K] x [N,K]^T -> [2,3,N].
	a := randomTensor(rng, F32, 2, 3, 10)
	w := randomTensor(rng, BF16, 4, 10)
	c := New(F32, 2, 3, 4)
	if err := cpu.MatMul(c, a, w, false, true, 1, 0); err != nil {
		t.Fatal(err)
	}
	a2, _ := a.Reshape(6, 10)
	c2 := New(F32, 6, 4)
	checkClose(t, "batched", c.F32(), refMatMul(c2, a2, w, false, true, 1, 0), 10, F32)

	// beta = 0 must not read C: NaN in C does not propagate.
	nanC := New(F32, 6, 4)
	for i := range nanC.F32() {
		nanC.F32()[i] = float32(math.NaN())
	}
	if err := cpu.MatMul(nanC, a2, w, false, true, 1, 0); err != nil {
		t.Fatal(err)
	}
	checkClose(t, "beta=0 with NaN in C", nanC.F32(), refMatMul(c2, a2, w, false, true, 1, 0), 10, F32)

	// K = 0: C = beta*C.
	z := New(F32, 3, 0)
	zb := New(F32, 0, 2)
	zc, _ := FromF32([]float32{1, 2, 3, 4, 5, 6}, 3, 2)
	if err := cpu.MatMul(zc, z, zb, false, false, 1, 2); err != nil {
		t.Fatal(err)
	}
	for i, v := range zc.F32() {
		if v != float32(2*(i+1)) {
			t.Fatalf("K=0: element %d = %v, want %v", i, v, 2*(i+1))
		}
	}

	bad := []struct {
		c, a, b        *Tensor
		transA, transB bool
	}{
		{New(F32, 2, 2), New(F32, 2, 3), New(F32, 2, 2), false, false}, // inner mismatch
		{New(F32, 2, 3), New(F32, 2, 2), New(F32, 2, 2), false, false}, // c wrong
		{New(F32, 2, 2), New(F32, 2), New(F32, 2, 2), false, false},    // a rank 1
		{New(F32, 2, 2), New(F32, 1, 2, 2), New(F32, 2, 2), true, false},
	}
	for i, c := range bad {
		if err := cpu.MatMul(c.c, c.a, c.b, c.transA, c.transB, 1, 0); err == nil {
			t.Errorf("bad case %d: no error", i)
		}
	}
}
