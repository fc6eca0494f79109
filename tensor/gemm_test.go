package tensor

import (
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"testing"
	"unsafe"
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
	// Rows of op(A) and columns of op(B), contiguous in depth.
	rows, cols := make([]float64, M*K), make([]float64, N*K)
	for p := 0; p < K; p++ {
		for i := 0; i < M; i++ {
			if transA {
				rows[i*K+p] = float64(av[p*M+i])
			} else {
				rows[i*K+p] = float64(av[i*K+p])
			}
		}
		for j := 0; j < N; j++ {
			if transB {
				cols[j*K+p] = float64(bv[j*K+p])
			} else {
				cols[j*K+p] = float64(bv[p*N+j])
			}
		}
	}
	out := make([]float64, M*N)
	for i := 0; i < M; i++ {
		x := rows[i*K : i*K+K]
		for j := 0; j < N; j++ {
			s := 0.0
			for p, y := range cols[j*K : j*K+K] {
				s += x[p] * y
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
// accumulation error grows with the depth of the sum. Its absolute part
// (the 1 in 1+|want|) also covers the bf16 kernel's flushing of subnormal
// inputs and partial sums, which are below 1.2e-38.
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

// withKernels makes MatMul use f32 for every product and bf16 (nil: none)
// for BF16 x BF16 ones until the (sub)test ends. The test-only kernels run
// with the portable packing, the others with the packing this CPU uses.
func withKernels(t *testing.T, f32 *gemmKernel[float32], bf16 *gemmKernel[uint32]) {
	savedF32, savedBF16, savedAsm := gemmF32, gemmBF16, useAsmTranspose
	gemmF32, gemmBF16 = f32, bf16
	if f32 == &kernelGoSmall || bf16 == &kernelGoBF16 {
		useAsmTranspose = false
	}
	t.Cleanup(func() { gemmF32, gemmBF16, useAsmTranspose = savedF32, savedBF16, savedAsm })
}

// kernelCase is one kernel to test, with its tile and blocking.
type kernelCase struct {
	name               string
	mr, nr, kc, mc, nc int
	pairs              bool // a bf16 pair kernel: it runs BF16 x BF16 only
	install            func(t *testing.T)
}

// eachKernel runs test in a subtest per kernel this CPU can run, and per
// test-only kernel, with that kernel installed: a float32 kernel alone
// (BF16 x BF16 then goes through it too), a bf16 pair kernel next to the
// float32 kernel MatMul uses here.
func eachKernel(t *testing.T, test func(t *testing.T, k kernelCase)) {
	f32, bf16 := allKernels()
	if len(f32) < 3 {
		t.Log("no AVX2/FMA on this CPU: only the portable kernels are tested")
	}
	var cases []kernelCase
	for _, k := range f32 {
		cases = append(cases, kernelCase{k.name, k.mr, k.nr, k.kc, k.mc, k.nc, false,
			func(t *testing.T) { withKernels(t, k, nil) }})
	}
	for _, k := range bf16 {
		cases = append(cases, kernelCase{k.name, k.mr, k.nr, k.kc, k.mc, k.nc, true,
			func(t *testing.T) { withKernels(t, gemmF32, k) }})
	}
	for _, k := range cases {
		t.Run(k.name, func(t *testing.T) {
			k.install(t)
			test(t, k)
		})
	}
}

// Test-only kernels with small blockings, so that small shapes cross every
// block boundary: the portable kernel, and a portable version of the bf16
// pair kernel (VDPBF16PS's order: the odd product, then the even one) that
// checks the pair packing on any CPU.
var (
	kernelGoSmall = gemmKernel[float32]{name: "go-small-blocks", mr: goMR, nr: goNR, kc: 20, mc: 18, nc: 48,
		kern: kernelGo, pack: packF32}
	kernelGoBF16 = gemmKernel[uint32]{name: "go-bf16-pairs", mr: 4, nr: 8, kc: 22, mc: 12, nc: 40,
		kern: kernelBF16Go, pack: packPairs, pairs: true}
)

func kernelBF16Go(d int, a, b *uint32, c *float32, ldc int, alpha float32, add bool) {
	const mr, nr = 4, 8
	as, bs := unsafe.Slice(a, d*mr), unsafe.Slice(b, d*nr)
	cs := unsafe.Slice(c, (mr-1)*ldc+nr)
	for i := 0; i < mr; i++ {
		for j := 0; j < nr; j++ {
			var acc float32
			for p := 0; p < d; p++ {
				x, y := as[p*mr+i], bs[p*nr+j]
				acc += BF16ToF32(uint16(x>>16)) * BF16ToF32(uint16(y>>16))
				acc += BF16ToF32(uint16(x)) * BF16ToF32(uint16(y))
			}
			if add {
				cs[i*ldc+j] += alpha * acc
			} else {
				cs[i*ldc+j] = alpha * acc
			}
		}
	}
}

// allKernels are the float32 and bf16 kernels this CPU can run, plus the
// test-only ones.
func allKernels() (f32 []*gemmKernel[float32], bf16 []*gemmKernel[uint32]) {
	f32, bf16 = gemmKernels()
	return append(f32, &kernelGoSmall), append(bf16, &kernelGoBF16)
}

func TestGEMMKernelBlocking(t *testing.T) {
	f32, bf16 := allKernels()
	check := func(name string, mr, nr, kc, mc, nc int, pairs bool) {
		if mr*nr > gemmMaxTile || mc%mr != 0 || nc%nr != 0 || pairs && kc%2 != 0 {
			t.Errorf("kernel %s: mr %d, nr %d, kc %d, mc %d, nc %d do not fit", name, mr, nr, kc, mc, nc)
		}
	}
	for _, k := range f32 {
		check(k.name, k.mr, k.nr, k.kc, k.mc, k.nc, k.pairs)
	}
	for _, k := range bf16 {
		check(k.name, k.mr, k.nr, k.kc, k.mc, k.nc, k.pairs)
	}
	t.Logf("MatMul uses %s", GEMMKernel())
}

// blockingShapes are M, N, K around a kernel's tile and blocking, plus
// random ones; none need be a multiple of anything.
func blockingShapes(rng *rand.Rand, mr, nr, kc, mc, nc int) [][3]int {
	shapes := [][3]int{{1, 1, 1}, {mr, nr, 1}, {mr + 1, nr + 1, 3}, {mr - 1, nr - 1, kc + 1},
		{mc + 1, 2*nr + 1, kc}, {13, nc + 1, 5}, {2 * mc, 48, 2*kc + 1}, {2, 300, 64}, {130, 1, 70},
		{mc + mr + 1, nc + nr + 3, kc + 7}, {3*mc - 1, nr, kc - 1}}
	for i := 0; i < 10; i++ {
		shapes = append(shapes, [3]int{1 + rng.IntN(150), 1 + rng.IntN(150), 1 + rng.IntN(600)})
	}
	return shapes
}

// runShape checks one product with operands of the given dtypes against
// the float64 reference; n varies the transposes, alpha/beta and C's dtype.
func runShape(t *testing.T, rng *rand.Rand, kernel string, s [3]int, n int, dtA, dtB DType) {
	t.Helper()
	M, N, K := s[0], s[1], s[2]
	transA, transB := n%2 == 1, n/2%2 == 1
	dtC := F32
	if n%5 == 4 {
		dtC = BF16
	}
	// beta = 0 stores the first depth block (C is not read), others add.
	alpha, beta := [4]float32{1, -0.75, 0.5, 2}[n%4], [4]float32{0, 0, -1.5, 1}[n%4]
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
	if err := NewCPU().MatMul(c, a, b, transA, transB, alpha, beta); err != nil {
		t.Fatal(err)
	}
	what := fmt.Sprintf("%s M=%d N=%d K=%d transA=%v transB=%v %s*%s->%s alpha=%v beta=%v",
		kernel, M, N, K, transA, transB, dtA, dtB, dtC, alpha, beta)
	checkClose(t, what, c.ToF32(), want, K, dtC)
}

func TestMatMulAgainstFloat64(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	eachKernel(t, func(t *testing.T, k kernelCase) {
		shapes := blockingShapes(rng, k.mr, k.nr, k.kc, k.mc, k.nc)
		if !k.pairs { // any mix of dtypes
			for n, s := range shapes {
				dtA := []DType{F32, BF16, F16}[n%3]
				dtB := []DType{F32, BF16, BF16, F16}[n%4]
				runShape(t, rng, k.name, s, n, dtA, dtB)
			}
			return
		}
		// BF16 x BF16, odd and even K.
		shapes = append(shapes, [3]int{k.mr, k.nr, 2}, [3]int{k.mr + 3, 2*k.nr - 5, k.kc + 2}, [3]int{1, 1, 7})
		for n, s := range shapes {
			runShape(t, rng, k.name, s, n, BF16, BF16)
		}
	})
}

// VDPBF16PS reads bf16 subnormals as zero (the documented exception); every
// other kernel, the portable model of the pair kernel included, multiplies
// them exactly.
func TestMatMulBF16Subnormals(t *testing.T) {
	a := New(BF16, 1, 3)
	b := New(BF16, 3, 1)
	sub := uint16(0x0040) // 2^-127 * 0.5: a bf16 subnormal
	copy(a.U16(), []uint16{sub, sub, sub})
	copy(b.U16(), []uint16{0x3f80, 0x3f80, 0x3f80}) // 1, 1, 1
	want := 3 * BF16ToF32(sub)
	eachKernel(t, func(t *testing.T, k kernelCase) {
		c := New(F32, 1, 1)
		if err := NewCPU().MatMul(c, a, b, false, false, 1, 0); err != nil {
			t.Fatal(err)
		}
		want := want
		if k.name == "avx512-bf16" {
			want = 0
		}
		if got := c.F32()[0]; got != want {
			t.Errorf("%s: got %v, want %v", k.name, got, want)
		}
	})
}

// The result must not depend on the number of threads (the tasks split the
// output, never the depth, so each element is summed in the same order).
func TestMatMulThreadsAgree(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	shapes := [][3]int{{300, 200, 700}, {20, 1000, 300}, {1, 700, 513}}
	run := func(procs int, a, b *Tensor, M, N int) []float32 {
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(procs))
		c := New(F32, M, N)
		if err := NewCPU().MatMul(c, a, b, false, true, 1, 0); err != nil {
			t.Fatal(err)
		}
		return c.F32()
	}
	eachKernel(t, func(t *testing.T, k kernelCase) {
		for _, s := range shapes {
			M, N, K := s[0], s[1], s[2]
			a := randomTensor(rng, BF16, M, K)
			b := randomTensor(rng, BF16, N, K)
			one, four := run(1, a, b, M, N), run(4, a, b, M, N)
			for i := range one {
				if one[i] != four[i] {
					t.Fatalf("%s %v: element %d: 1 thread %v, 4 threads %v", k.name, s, i, one[i], four[i])
				}
			}
		}
	})
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

// TestMatMulFewRows: products of at most rowsMaxM rows of A with a
// row-major W^T (matmulRows, no packing), float32 x float32, float32 x
// bf16 and bf16 x bf16, against float64, with
// beta 0, 1 and another value, row lengths the assembly takes and ones it
// leaves to Go, NaN in C not read when beta is 0, and the same bits at 1
// and 4 threads; one more row goes through the GEMM and agrees too.
func TestMatMulFewRows(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	cpu := NewCPU()
	for _, dts := range [][2]DType{{F32, F32}, {F32, BF16}, {BF16, BF16}} {
		for _, M := range []int{1, 3, rowsMaxM, rowsMaxM + 1} {
			for _, N := range []int{1, 5, 67, 300} {
				for _, K := range []int{3, 8, 37, 256} {
					fewRows(t, rng, cpu, dts[0], dts[1], M, N, K)
				}
			}
		}
	}
}

// fewRows is one case of TestMatMulFewRows.
func fewRows(t *testing.T, rng *rand.Rand, cpu *CPU, dtA, dtW DType, M, N, K int) {
	name := fmt.Sprintf("%v x %v M=%d N=%d K=%d", dtA, dtW, M, N, K)
	a, w := randomTensor(rng, dtA, M, K), randomTensor(rng, dtW, N, K)
	for _, beta := range []float32{0, 1, 0.5} {
		c := randomTensor(rng, F32, M, N)
		if beta == 0 {
			for i := range c.F32() {
				c.F32()[i] = float32(math.NaN())
			}
		}
		want := refMatMul(c, a, w, false, true, 0.7, beta)
		if err := cpu.MatMul(c, a, w, false, true, 0.7, beta); err != nil {
			t.Fatal(err)
		}
		checkClose(t, fmt.Sprintf("%s beta=%v", name, beta), c.F32(), want, K, F32)
	}
	run := func(procs int) []float32 {
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(procs))
		c := New(F32, M, N)
		if err := cpu.MatMul(c, a, w, false, true, 1, 0); err != nil {
			t.Fatal(err)
		}
		return c.F32()
	}
	one, four := run(1), run(4)
	for i := range one {
		if one[i] != four[i] {
			t.Fatalf("%s: element %d: 1 thread %v, 4 threads %v", name, i, one[i], four[i])
		}
	}
}
