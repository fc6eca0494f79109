//go:build cuda

package cgo

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/compassml/compass/kernels"
	"github.com/compassml/compass/tensor"
)

// The GPU tests (go test -tags cuda) compare every operation of the CUDA
// backend with the CPU backend on fresh random inputs, with outputs
// poisoned (NaN) before each run so that an element a kernel does not
// write shows. Without a device they skip, saying why.

// gpuOnce opens the device once for the whole test binary: JIT-compiling
// the kernels and creating the context cost seconds.
var gpuOnce = sync.OnceValues(func() (*Backend, error) { return NewBackend(0) })

func gpuBackend(tb testing.TB) *Backend {
	tb.Helper()
	// The emulated device reads its schedule from these itself; reading
	// them in a test (not in TestMain, before go test's log of the
	// environment starts) puts them in go test's cache key.
	os.Getenv("COMPASS_EMU_WARP_ORDER")
	os.Getenv("COMPASS_EMU_BLOCK_ORDER")
	b, err := gpuOnce()
	if errors.Is(err, ErrNoDevice) {
		tb.Skipf("%v", err)
	}
	if err != nil { // a device, but the backend does not open on it: cuBLAS, the kernels' PTX
		tb.Fatalf("%v", err)
	}
	// Tests fill Empty tensors with NaNs (a read before a write fails
	// them); benchmarks time what users run.
	_, bench := tb.(*testing.B)
	b.PoisonEmpty = !bench
	return b
}

// launchLogEnv names the file the emulated device appends the name of
// each kernel to at its first launch (kernels/emu/device.cpp).
const launchLogEnv = "COMPASS_EMU_LAUNCH_LOG"

func TestMain(m *testing.M) {
	// On the emulated device, a run of the whole suite must launch every
	// kernel of kernels.Table (through the operations' Go code): a kernel
	// no GPU test runs is a kernel nothing checks. A process the tests
	// start keeps its parent's log.
	var launchLog string
	if onEmulator() && os.Getenv(launchLogEnv) == "" {
		f, err := os.CreateTemp("", "compass-emu-launches-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		f.Close()
		launchLog = f.Name()
		os.Setenv(launchLogEnv, launchLog)
	}
	code := m.Run()
	b, err := gpuOnce()
	if err == nil {
		if err := b.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "close:", err)
			code = 1
		}
	} else if f := flag.Lookup("test.bench"); errors.Is(err, ErrNoDevice) && f != nil && f.Value.String() != "" {
		// go test prints a skipped benchmark's reason only with -v; without
		// this line a run with no device would end in a bare PASS.
		fmt.Fprintf(os.Stderr, "cgo: the GPU benchmarks were skipped: %v\n", err)
	}
	if launchLog != "" {
		if code == 0 {
			if err := checkLaunched(launchLog); err != nil {
				fmt.Fprintln(os.Stderr, err)
				code = 1
			}
		}
		os.Remove(launchLog)
	}
	os.Exit(code)
}

// wholeSuite reports whether no -run or -skip pattern left tests out.
func wholeSuite() bool {
	for _, name := range []string{"test.run", "test.skip"} {
		if f := flag.Lookup(name); f != nil && f.Value.String() != "" {
			return false
		}
	}
	return true
}

// launchCheckEnv set to "barriers" (scripts/gpu-emu-test.sh's pass with
// the warps in turn) makes a run of some tests check that they launched
// every kernel with a barrier of the block, the kernels that pass is for.
const launchCheckEnv = "COMPASS_EMU_LAUNCH_CHECK"

// checkLaunched checks the emulated device's launch log: a run of the
// whole suite must have launched every kernel of kernels.Table, and a run
// under COMPASS_EMU_LAUNCH_CHECK=barriers every kernel with a barrier.
func checkLaunched(path string) error {
	var want []string
	what := ""
	switch check := os.Getenv(launchCheckEnv); {
	case check == "barriers":
		names, err := barrierKernels()
		if err != nil {
			return err
		}
		want, what = names, "of the kernels with a barrier"
	case check != "":
		return fmt.Errorf("%s=%q: the one check is \"barriers\"", launchCheckEnv, check)
	case wholeSuite():
		for _, k := range kernels.Table {
			want = append(want, k.Name)
		}
		what = "of kernels.Table"
	default:
		return nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("the emulated device's launch log: %w", err)
	}
	launched := map[string]bool{}
	for _, name := range strings.Fields(string(b)) {
		launched[name] = true
	}
	var missing []string
	for _, name := range want {
		if !launched[name] {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("no GPU test launched %s on the emulated device: add a test of the operation that launches it (to the warp-order pass's list in scripts/gpu-emu-test.sh, for a kernel with a barrier)", strings.Join(missing, ", "))
	}
	fmt.Printf("kernels launched on the emulated device: all %d %s\n", len(want), what)
	return nil
}

// barrierKernels names the kernels of kernels.Table whose PTX has a
// barrier of the block (bar.sync, from __syncthreads): those whose warps
// share memory, what running them with the warps in turn checks.
func barrierKernels() ([]string, error) {
	var names []string
	for _, k := range kernels.Table {
		ptx, err := kernels.PTX(k.Source, kernels.Architectures[0])
		if err != nil {
			return nil, err
		}
		body, err := entryBody(string(ptx), k.Name)
		if err != nil {
			return nil, err
		}
		for _, line := range strings.Split(body, "\n") {
			if f := strings.Fields(line); len(f) > 0 && (strings.HasPrefix(f[0], "bar.") || strings.HasPrefix(f[0], "barrier.")) {
				names = append(names, k.Name)
				break
			}
		}
	}
	return names, nil
}

// entryBody returns the body of the PTX entry point name: from its
// .entry line to the closing brace at the start of a line.
func entryBody(ptx, name string) (string, error) {
	start := strings.Index(ptx, ".entry "+name+"(")
	if start < 0 {
		return "", fmt.Errorf("kernel %s: no entry point in its PTX", name)
	}
	end := strings.Index(ptx[start:], "\n}")
	if end < 0 {
		return "", fmt.Errorf("kernel %s: its PTX body does not end", name)
	}
	return ptx[start : start+end], nil
}

// newRNG gives every test its own random stream, derived from its name
// (the inputs differ from test to test, never zeros) and the same on every
// run, so that a failure in CI repeats anywhere. COMPASS_TEST_SEED=N draws
// other inputs, COMPASS_TEST_SEED=random new ones each run (with -count=1);
// either way the test logs the seed that repeats it.
func newRNG(tb testing.TB) *rand.Rand {
	tb.Helper()
	h := uint64(14695981039346656037)
	for _, c := range tb.Name() {
		h = (h ^ uint64(c)) * 1099511628211
	}
	seed := uint64(0)
	switch env := os.Getenv("COMPASS_TEST_SEED"); env {
	case "":
	case "random":
		seed = uint64(time.Now().UnixNano()) | 1
	default:
		var err error
		if seed, err = strconv.ParseUint(env, 10, 64); err != nil || seed == 0 {
			tb.Fatalf("COMPASS_TEST_SEED=%q: want a positive integer or \"random\"", env)
		}
	}
	if seed != 0 {
		tb.Logf("seed %d (COMPASS_TEST_SEED=%d repeats it)", seed, seed)
	}
	return rand.New(rand.NewPCG(h, 0x9e3779b97f4a7c15^seed))
}

func toDev(tb testing.TB, b *Backend, h *tensor.Tensor) *tensor.Tensor {
	tb.Helper()
	d, err := b.ToDevice(h)
	if err != nil {
		tb.Fatal(err)
	}
	if d == h {
		tb.Fatalf("ToDevice returned the host tensor")
	}
	return d
}

// nanHost is a host tensor of NaNs.
func nanHost(dt tensor.DType, shape ...int) *tensor.Tensor {
	f := tensor.New(tensor.F32, shape...)
	for i := range f.F32() {
		f.F32()[i] = float32(math.NaN())
	}
	t := tensor.New(dt, shape...)
	if err := tensor.NewCPU().Copy(t, f); err != nil {
		panic(err)
	}
	return t
}

// pair is one tensor on both backends: the host copy the CPU computes on
// and the device copy the GPU computes on.
type pair struct{ h, d *tensor.Tensor }

// input is a random input on both backends.
func input(tb testing.TB, b *Backend, rng *rand.Rand, dt tensor.DType, shape ...int) pair {
	h := randHost(rng, dt, 1, shape...)
	return pair{h, toDev(tb, b, h)}
}

// output is an output on both backends, poisoned with NaN.
func output(tb testing.TB, b *Backend, dt tensor.DType, shape ...int) pair {
	h := nanHost(dt, shape...)
	return pair{h, toDev(tb, b, h)}
}

// like is an output poisoned like in, or a copy of in's values when the
// operation reads its output (beta != 0, in place).
func copyPair(tb testing.TB, b *Backend, p pair) pair {
	h := tensor.New(p.h.DType(), p.h.Shape()...)
	copy(h.Bytes(), p.h.Bytes())
	return pair{h, toDev(tb, b, h)}
}

// Tolerances by dtype: float32 results ~1e-5 relative (3e-5 for long
// reductions), anything that went through bfloat16 or float16 ~1e-2.
const (
	tolF32    = 1e-5
	tolReduce = 3e-5
	tol16     = 1e-2
)

func tolFor(base float64, dts ...tensor.DType) float64 {
	for _, dt := range dts {
		if dt == tensor.BF16 || dt == tensor.F16 {
			return tol16
		}
	}
	return base
}

// compare downloads got and checks it against the CPU's want:
// ||got - want|| / ||want|| <= tol (tol 0: bit for bit), and no element
// NaN or infinite where want is finite (an unwritten, still poisoned,
// element).
func compare(tb testing.TB, b *Backend, name string, got pair, tol float64) {
	tb.Helper()
	h, err := b.ToHost(got.d)
	if err != nil {
		tb.Fatal(err)
	}
	if tol == 0 {
		if string(h.Bytes()) != string(got.h.Bytes()) {
			g, w := h.ToF32(), got.h.ToF32()
			for i := range g {
				if math.Float32bits(g[i]) != math.Float32bits(w[i]) {
					tb.Errorf("%s: not bit for bit: element %d is %g, CPU %g", name, i, g[i], w[i])
					return
				}
			}
			tb.Errorf("%s: bytes differ", name)
		}
		return
	}
	g, w := h.ToF32(), got.h.ToF32()
	var diff, norm, worst float64
	worstAt := -1
	for i := range w {
		if !isFinite(w[i]) {
			continue
		}
		if !isFinite(g[i]) {
			tb.Errorf("%s: element %d is %g, CPU %g (not written?)", name, i, g[i], w[i])
			return
		}
		d := float64(g[i]) - float64(w[i])
		diff += d * d
		norm += float64(w[i]) * float64(w[i])
		if math.Abs(d) > worst {
			worst, worstAt = math.Abs(d), i
		}
	}
	rel := math.Sqrt(diff / math.Max(norm, 1e-30))
	if rel > tol {
		tb.Errorf("%s: relative error %.3g > %.3g (worst element %d: %g, CPU %g)", name, rel, tol, worstAt, g[worstAt], w[worstAt])
	} else if testing.Verbose() {
		tb.Logf("%s: relative error %.3g (tolerance %.3g)", name, rel, tol)
	}
}

// closeTo checks a device result against the CPU's element by element:
// |got - want| <= tol (|want| + rms(want) + floor), rms(want) a floor for
// the elements near zero, floor one for results that cancel to rounding
// noise (0 for most). A NaN or infinity in got never passes. It is
// stricter than compare on a few wrong elements of a large tensor; the
// kernels' ported cases state their bounds this way (1e-5 to 1e-6 for
// float32 results, 1e-2 for bf16 outputs, 2e-3 for f16).
func closeTo(tb testing.TB, b *Backend, name string, got pair, tol, floor float64) {
	tb.Helper()
	h, err := b.ToHost(got.d)
	if err != nil {
		tb.Fatal(err)
	}
	g, w := h.ToF32(), got.h.ToF32()
	rms := 0.0
	for _, x := range w {
		rms += float64(x) * float64(x)
	}
	if len(w) > 0 {
		rms = math.Sqrt(rms / float64(len(w)))
	}
	worst, bad := 0.0, 0
	for i := range w {
		e := math.Abs(float64(g[i])-float64(w[i])) / (math.Abs(float64(w[i])) + rms + floor)
		if !isFinite(g[i]) || math.IsNaN(e) {
			e = math.Inf(1)
		}
		worst = math.Max(worst, e)
		if e > tol {
			if bad < 3 {
				tb.Errorf("%s: element %d is %g, CPU %g (error %.3g > %g)", name, i, g[i], w[i], e, tol)
			}
			bad++
		}
	}
	if bad > 0 {
		tb.Errorf("%s: %d of %d elements out of tolerance", name, bad, len(w))
	} else if testing.Verbose() {
		tb.Logf("%s: %d elements, largest error %.2g (tolerance %g)", name, len(w), worst, tol)
	}
}

// elemTol is the elementwise tolerance of closeTo for a result of dtype
// dt: float32 results are held to f32, 16-bit outputs to their own
// rounding.
func elemTol(dt tensor.DType, f32 float64) float64 {
	switch dt {
	case tensor.BF16:
		return 1e-2
	case tensor.F16:
		return 2e-3
	}
	return f32
}

// nearZero checks a device result that is zero up to rounding on both
// backends (a relative error means nothing there): every element written,
// none above bound, on the device and on the CPU.
func nearZero(tb testing.TB, b *Backend, name string, got pair, bound float64) {
	tb.Helper()
	h, err := b.ToHost(got.d)
	if err != nil {
		tb.Fatal(err)
	}
	for i, v := range h.ToF32() {
		if w := got.h.ToF32()[i]; !isFinite(v) || math.Abs(float64(v)) > bound || math.Abs(float64(w)) > bound {
			tb.Errorf("%s: element %d is %g, CPU %g: want both within %g of zero", name, i, v, w, bound)
			return
		}
	}
}

func isFinite(f float32) bool { return !math.IsNaN(float64(f)) && !math.IsInf(float64(f), 0) }

var cpu = tensor.NewCPU()

func must(tb testing.TB, err error) {
	tb.Helper()
	if err != nil {
		tb.Fatal(err)
	}
}

var dtypes = []tensor.DType{tensor.F32, tensor.BF16, tensor.F16}

func TestGPUDevice(t *testing.T) {
	b := gpuBackend(t)
	t.Logf("%s", b.DeviceName())
	if b.Name() != "cuda" || !strings.Contains(b.DeviceName(), "sm_") {
		t.Errorf("Name %q, DeviceName %q", b.Name(), b.DeviceName())
	}
	free, total, err := b.Device().MemInfo()
	must(t, err)
	t.Logf("memory: %d MiB free of %d MiB; allocator: %d MiB in use, %d MiB cached", free>>20, total>>20, b.InUseBytes()>>20, b.CachedBytes()>>20)
}

func TestGPUTransfers(t *testing.T) {
	b := gpuBackend(t)
	rng := newRNG(t)
	// Across several staging chunks (16 MiB each), and odd sizes.
	for _, n := range []int{1, 3, 1 << 20, 10<<20 + 7} {
		for _, dt := range dtypes {
			x := input(t, b, rng, dt, n)
			compare(t, b, fmt.Sprintf("round trip %s[%d]", dt, n), x, 0)
		}
	}
	z, err := b.Alloc(tensor.F32, 1000)
	must(t, err)
	zh, err := b.ToHost(z)
	must(t, err)
	for _, v := range zh.F32() {
		if v != 0 {
			t.Fatalf("Alloc is not zeroed")
		}
	}
	b.Free(z)
	// Copy host <-> device and device <-> device with every cast.
	for _, src := range dtypes {
		for _, dst := range dtypes {
			x := input(t, b, rng, src, 5, 77)
			want := nanHost(dst, 385)
			must(t, cpu.Copy(want, x.h))
			d := output(t, b, dst, 385)
			must(t, b.Copy(d.d, x.d))
			compare(t, b, fmt.Sprintf("copy device %s -> device %s", src, dst), pair{want, d.d}, 0)
			h := nanHost(dst, 385)
			must(t, b.Copy(h, x.d))
			if string(h.Bytes()) != string(want.Bytes()) {
				t.Errorf("copy device %s -> host %s differs from the CPU", src, dst)
			}
			d2 := output(t, b, dst, 385)
			must(t, b.Copy(d2.d, x.h))
			compare(t, b, fmt.Sprintf("copy host %s -> device %s", src, dst), pair{want, d2.d}, 0)
		}
	}
}

func TestGPUAllocator(t *testing.T) {
	b := gpuBackend(t)
	base := b.InUseBytes()
	b.ResetPeak()
	x, err := b.Alloc(tensor.F32, 1<<20)
	must(t, err)
	if b.InUseBytes() != base+4<<20 || b.PeakBytes() != base+4<<20 {
		t.Errorf("in use %d, peak %d after a 4 MiB tensor (base %d)", b.InUseBytes(), b.PeakBytes(), base)
	}
	xm, _ := x.Device()
	view, _ := x.Slice(0, 10)
	b.Free(view) // a view: nothing happens
	if b.InUseBytes() != base+4<<20 {
		t.Errorf("freeing a view freed the tensor")
	}
	b.Free(x)
	y, err := b.Alloc(tensor.F32, 1<<20)
	must(t, err)
	if ym, _ := y.Device(); ym.Ptr != xm.Ptr {
		t.Errorf("the freed block was not reused")
	}
	b.Free(y)
	if b.InUseBytes() != base {
		t.Errorf("in use %d after freeing, %d before", b.InUseBytes(), base)
	}
}

// Add, Mul and Scale compute in float32 and round once on both backends:
// bit for bit, for mixed operand and output dtypes, with b the shape of a
// or of its trailing dimensions (broadcast).
func TestGPUElementwise(t *testing.T) {
	b := gpuBackend(t)
	rng := newRNG(t)
	f32, bf16, f16 := tensor.F32, tensor.BF16, tensor.F16
	for _, c := range []struct{ a, b, out tensor.DType }{
		{f32, f32, f32}, {f32, bf16, bf16}, {f32, f16, f16}, {f32, bf16, f32},
		{bf16, bf16, bf16}, {f16, f32, f16}, {bf16, f16, f32},
	} {
		for _, bshape := range [][]int{{3, 5, 7}, {5, 7}, {7}} {
			for _, op := range []struct {
				name     string
				cpu, gpu func(out, x, y *tensor.Tensor) error
			}{{"add", cpu.Add, b.Add}, {"mul", cpu.Mul, b.Mul}} {
				x, y := input(t, b, rng, c.a, 3, 5, 7), input(t, b, rng, c.b, bshape...)
				out := output(t, b, c.out, 3, 5, 7)
				must(t, op.cpu(out.h, x.h, y.h))
				must(t, op.gpu(out.d, x.d, y.d))
				compare(t, b, fmt.Sprintf("%s %s (%s%v) -> %s", op.name, c.a, c.b, bshape, c.out), out, 0)
			}
		}
		x := input(t, b, rng, c.a, 3, 5, 7)
		out := output(t, b, c.out, 3, 5, 7)
		s := float32(rng.Float64()*4 - 2)
		must(t, cpu.Scale(out.h, x.h, s))
		must(t, b.Scale(out.d, x.d, s))
		compare(t, b, fmt.Sprintf("scale %s -> %s by %g", c.a, c.out, s), out, 0)
	}
	for _, dt := range dtypes {
		// 1024 elements: each tensor fills its allocator block exactly, so
		// that on the emulated device an access one past its end faults.
		x := input(t, b, rng, dt, 1024)
		out := output(t, b, tensor.F32, 1024)
		must(t, cpu.Scale(out.h, x.h, -0.37))
		must(t, b.Scale(out.d, x.d, -0.37))
		compare(t, b, "scale "+dt.String(), out, 0)
		// In place, as ZeroLoRAGrads uses it.
		must(t, cpu.Scale(x.h, x.h, 0))
		must(t, b.Scale(x.d, x.d, 0))
		compare(t, b, "scale in place by 0 "+dt.String(), x, 0)
	}
	for _, dt := range dtypes {
		x := input(t, b, rng, dt, 123, 45)
		for _, op := range []struct {
			name     string
			cpu, gpu func(out, x *tensor.Tensor) error
		}{{"sum", cpu.Sum, b.Sum}, {"mean", cpu.Mean, b.Mean}} {
			out := output(t, b, tensor.F32, 1)
			must(t, op.cpu(out.h, x.h))
			must(t, op.gpu(out.d, x.d))
			compare(t, b, op.name+" "+dt.String(), out, 0)
		}
	}
}

func TestGPUMatMul(t *testing.T) {
	b := gpuBackend(t)
	rng := newRNG(t)
	f32, bf16, f16 := tensor.F32, tensor.BF16, tensor.F16
	type dts struct{ a, b, c tensor.DType }
	for _, shape := range [][3]int{{1, 1, 1}, {17, 33, 9}, {257, 300, 129}, {64, 1024, 16}} {
		M, K, N := shape[0], shape[1], shape[2]
		for _, d := range []dts{{f32, f32, f32}, {bf16, bf16, f32}, {bf16, bf16, bf16}, {f16, f16, f32}, {f32, bf16, f32}, {bf16, f32, f32}, {f32, f32, bf16}} {
			for _, tr := range [][2]bool{{false, false}, {false, true}, {true, false}, {true, true}} {
				for _, ab := range [][2]float32{{1, 0}, {0.5, 1}, {-1.25, 0.75}} {
					for _, precise := range []bool{false, true} {
						if precise && d.a == d.b {
							continue // the same product
						}
						aShape, bShape := []int{M, K}, []int{K, N}
						if tr[0] {
							aShape = []int{K, M}
						}
						if tr[1] {
							bShape = []int{N, K}
						}
						x, w := input(t, b, rng, d.a, aShape...), input(t, b, rng, d.b, bShape...)
						var c pair
						if ab[1] == 0 {
							c = output(t, b, d.c, M, N) // NaN: must not be read
						} else {
							c = input(t, b, rng, d.c, M, N)
						}
						must(t, cpu.MatMul(c.h, x.h, w.h, tr[0], tr[1], ab[0], ab[1]))
						b.Precise = precise
						err := b.MatMul(c.d, x.d, w.d, tr[0], tr[1], ab[0], ab[1])
						b.Precise = false
						must(t, err)
						tol := tolReduce
						switch {
						case d.c != f32 || (d.a != d.b && !precise):
							tol = tol16
						case d.a != f32 && d.a == d.b:
							tol = 1e-4 // 16-bit inputs, products exact, float32 sums on the tensor cores
						}
						compare(t, b, fmt.Sprintf("matmul [%d %d %d] %s x %s -> %s trans %v alpha/beta %v precise %v", M, K, N, d.a, d.b, d.c, tr, ab, precise), c, tol)
					}
				}
			}
		}
	}
	// Leading dimensions of a, flattened into M.
	x, w := input(t, b, rng, f32, 3, 5, 64), input(t, b, rng, bf16, 48, 64)
	c := output(t, b, f32, 3, 5, 48)
	must(t, cpu.MatMul(c.h, x.h, w.h, false, true, 1, 0))
	b.Precise = true
	must(t, b.MatMul(c.d, x.d, w.d, false, true, 1, 0))
	b.Precise = false
	compare(t, b, "matmul with leading dimensions", c, tolReduce)
}

func TestGPUEmbedding(t *testing.T) {
	b := gpuBackend(t)
	rng := newRNG(t)
	const V, H, N = 97, 40, 23
	for _, tdt := range dtypes {
		for _, odt := range dtypes {
			table := input(t, b, rng, tdt, V, H)
			ids := make([]int32, N)
			for i := range ids {
				ids[i] = int32(rng.IntN(V))
			}
			idh, _ := tensor.FromI32(ids, 1, N)
			idp := pair{idh, toDev(t, b, idh)}
			out := output(t, b, odt, 1, N, H)
			must(t, cpu.Embedding(out.h, table.h, idp.h))
			must(t, b.Embedding(out.d, table.d, idp.d))
			compare(t, b, fmt.Sprintf("embedding %s -> %s", tdt, odt), out, 0)
		}
	}
	table := input(t, b, rng, tensor.F32, V, H)
	idh, _ := tensor.FromI32([]int32{1, 2, 200, -1}, 4)
	out := output(t, b, tensor.F32, 4, H)
	err := b.Embedding(out.d, table.d, toDev(t, b, idh))
	cpuErr := cpu.Embedding(out.h, table.h, idh)
	if err == nil || !strings.Contains(err.Error(), "id 200 at position 2") {
		t.Errorf("bad id: %v (CPU: %v)", err, cpuErr)
	}
	// The lowest bad position is reported, whatever its id; the kernel
	// zeroes the rows of bad ids and gathers the others.
	ids := []int32{3, 0, 10, 2, -1, 5, 5, 97, 1}
	idh, _ = tensor.FromI32(ids, len(ids))
	out = output(t, b, tensor.F32, len(ids), H)
	err = b.Embedding(out.d, table.d, toDev(t, b, idh))
	if err == nil || !strings.Contains(err.Error(), "id -1 at position 4") {
		t.Errorf("ids %v: %v, want id -1 at position 4 named", ids, err)
	}
	got, tv := hostOf(t, b, out.d).F32(), table.h.F32()
	for i, id := range ids {
		for j := 0; j < H; j++ {
			want := float32(0)
			if id >= 0 && id < V {
				want = tv[int(id)*H+j]
			}
			if got[i*H+j] != want {
				t.Fatalf("ids %v: out[%d, %d] = %g, want %g", ids, i, j, got[i*H+j], want)
			}
		}
	}
}

func TestGPURMSNorm(t *testing.T) {
	b := gpuBackend(t)
	rng := newRNG(t)
	for _, H := range []int{7, 64, 1000, 4096} {
		for _, xdt := range dtypes {
			for _, odt := range []tensor.DType{tensor.F32, xdt} {
				x, w := input(t, b, rng, xdt, 3, 5, H), input(t, b, rng, tensor.BF16, H)
				out, rstd := output(t, b, odt, 3, 5, H), output(t, b, tensor.F32, 15)
				must(t, cpu.RMSNorm(out.h, rstd.h, x.h, w.h, 1e-5))
				must(t, b.RMSNorm(out.d, rstd.d, x.d, w.d, 1e-5))
				name := fmt.Sprintf("rmsnorm H %d %s -> %s", H, xdt, odt)
				compare(t, b, name+" rstd", rstd, tolF32)
				compare(t, b, name, out, tolFor(tolF32, xdt, odt, tensor.BF16))

				dout, dx := input(t, b, rng, odt, 3, 5, H), output(t, b, xdt, 3, 5, H)
				must(t, cpu.RMSNormBackward(dx.h, dout.h, x.h, w.h, rstd.h))
				must(t, b.RMSNormBackward(dx.d, dout.d, x.d, w.d, rstd.d))
				compare(t, b, name+" backward", dx, tolFor(tolReduce, xdt, odt, tensor.BF16))
			}
		}
	}

	// Rows and widths that are not multiples of the block (a single row of
	// H = 1 too), weights of another dtype than x, element by element, with
	// the Table's block of 256 and with blocks of one warp (the block
	// reduction's other path).
	f32, bf16, f16 := tensor.F32, tensor.BF16, tensor.F16
	oneWarp := func(l kernels.Launch) kernels.Launch {
		l.Block[0] = 32
		return l
	}
	fwd32, bwd32 := withShape(t, b, "rmsnorm_forward", oneWarp), withShape(t, b, "rmsnorm_backward", oneWarp)
	for _, c := range []struct {
		rows, H   int
		x, w, out tensor.DType
		scale     float64 // of x
	}{
		{13, 100, f32, f32, f32, 1}, {5, 300, bf16, bf16, bf16, 1}, {3, 77, f32, bf16, f32, 1}, {2, 50, f16, f32, f16, 1},
		// Groups of 8: at block 32 more than a thread keeps in registers
		// (RN_KEEP), so that the rest of the row is read twice.
		{3, 1040, f32, bf16, f32, 1}, {2, 1040, bf16, bf16, bf16, 1},
		// H = 1: dx = r dn eps/(x^2 + eps), which for |x| >> sqrt(eps) is
		// the cancellation of two large terms; |x| ~ 0.004 keeps it a
		// well-conditioned check of the indexing.
		{1, 1, f32, f32, f32, 0.004},
	} {
		xh := randHost(rng, c.x, c.scale, c.rows, c.H)
		x, w := pair{xh, toDev(t, b, xh)}, input(t, b, rng, c.w, c.H)
		dout := input(t, b, rng, c.out, c.rows, c.H)
		for _, blk := range []struct {
			name     string
			fwd, bwd *Backend
		}{{"block 256", b, b}, {"block 32", fwd32, bwd32}} {
			name := fmt.Sprintf("rmsnorm %dx%d x %s w %s -> %s, %s", c.rows, c.H, c.x, c.w, c.out, blk.name)
			out, rstd := output(t, b, c.out, c.rows, c.H), output(t, b, f32, c.rows)
			must(t, cpu.RMSNorm(out.h, rstd.h, x.h, w.h, 1e-5))
			must(t, blk.fwd.RMSNorm(out.d, rstd.d, x.d, w.d, 1e-5))
			closeTo(t, b, name, out, elemTol(c.out, 1e-5), 0)
			closeTo(t, b, name+" rstd", rstd, 1e-5, 0)
			dx := output(t, b, c.out, c.rows, c.H)
			must(t, cpu.RMSNormBackward(dx.h, dout.h, x.h, w.h, rstd.h))
			must(t, blk.bwd.RMSNormBackward(dx.d, dout.d, x.d, w.d, toDev(t, b, rstd.h)))
			closeTo(t, b, name+" backward", dx, elemTol(c.out, 1e-5), 0)
		}
	}
}

func TestGPURoPE(t *testing.T) {
	b := gpuBackend(t)
	rng := newRNG(t)
	const N, heads = 2 * 67, 4
	for _, dims := range [][2]int{{64, 32}, {64, 24}, {128, 64}, {16, 6}} { // head dim, R/2 (partial rotary when 2 R/2 < D)
		D, half := dims[0], dims[1]
		for _, dt := range dtypes {
			for _, inverse := range []bool{false, true} {
				x := input(t, b, rng, dt, N, heads, D)
				cos, sin := input(t, b, rng, tensor.F32, N, half), input(t, b, rng, tensor.F32, N, half)
				out := output(t, b, dt, N, heads, D)
				must(t, cpu.RoPE(out.h, x.h, cos.h, sin.h, inverse))
				must(t, b.RoPE(out.d, x.d, cos.d, sin.d, inverse))
				name := fmt.Sprintf("rope D %d half %d %s inverse %v", D, half, dt, inverse)
				compare(t, b, name, out, tolFor(tolF32, dt))
				// In place, as the model calls it.
				must(t, cpu.RoPE(x.h, x.h, cos.h, sin.h, inverse))
				must(t, b.RoPE(x.d, x.d, cos.d, sin.d, inverse))
				compare(t, b, name+" in place", x, tolFor(tolF32, dt))
				// q and k in one launch: the bits of one RoPE each, in
				// place and into bf16 outputs (the model's attention
				// inputs, AttentionRounds).
				k := input(t, b, rng, dt, N, heads/2, D)
				q1, k1 := toDev(t, b, hostOf(t, b, x.d)), toDev(t, b, k.h)
				q2, k2 := output(t, b, tensor.BF16, N, heads, D), output(t, b, tensor.BF16, N, heads/2, D)
				q3, k3 := output(t, b, tensor.BF16, N, heads, D), output(t, b, tensor.BF16, N, heads/2, D)
				must(t, b.RoPEPair(q2.d, k2.d, x.d, k.d, cos.d, sin.d, inverse))
				must(t, b.RoPE(q3.d, x.d, cos.d, sin.d, inverse))
				must(t, b.RoPE(k3.d, k.d, cos.d, sin.d, inverse))
				if !bytes.Equal(hostOf(t, b, q2.d).Bytes(), hostOf(t, b, q3.d).Bytes()) ||
					!bytes.Equal(hostOf(t, b, k2.d).Bytes(), hostOf(t, b, k3.d).Bytes()) {
					t.Errorf("%s: RoPEPair into bf16 differs from two RoPE calls", name)
				}
				// With casts (RoPEPairCast: the backward's dq and dk, also
				// in bf16 for the frozen products): the outputs are
				// RoPEPair's bits, the casts those of RoPEPair into bf16,
				// and from float32 outputs those of Copy.
				q4, k4 := output(t, b, dt, N, heads, D), output(t, b, dt, N, heads/2, D)
				qc, kc := output(t, b, tensor.BF16, N, heads, D), output(t, b, tensor.BF16, N, heads/2, D)
				must(t, b.RoPEPairCast(q4.d, k4.d, qc.d, kc.d, x.d, k.d, cos.d, sin.d, inverse))
				must(t, b.RoPEPair(q3.d, k3.d, x.d, k.d, cos.d, sin.d, inverse))
				q5, k5 := output(t, b, dt, N, heads, D), output(t, b, dt, N, heads/2, D)
				must(t, b.RoPEPair(q5.d, k5.d, x.d, k.d, cos.d, sin.d, inverse))
				same := func(u, v *tensor.Tensor) bool { return bytes.Equal(hostOf(t, b, u).Bytes(), hostOf(t, b, v).Bytes()) }
				if !same(q4.d, q5.d) || !same(k4.d, k5.d) {
					t.Errorf("%s: RoPEPairCast's outputs differ from RoPEPair's", name)
				}
				if !same(qc.d, q3.d) || !same(kc.d, k3.d) {
					t.Errorf("%s: RoPEPairCast's casts differ from RoPEPair into bf16", name)
				}
				if dt == tensor.F32 {
					must(t, b.Copy(q3.d, q4.d))
					must(t, b.Copy(k3.d, k4.d))
					if !same(qc.d, q3.d) || !same(kc.d, k3.d) {
						t.Errorf("%s: RoPEPairCast's casts differ from Copy's", name)
					}
				}
				must(t, b.RoPEPair(x.d, k.d, x.d, k.d, cos.d, sin.d, inverse))
				must(t, b.RoPE(q1, q1, cos.d, sin.d, inverse))
				must(t, b.RoPE(k1, k1, cos.d, sin.d, inverse))
				if !bytes.Equal(hostOf(t, b, x.d).Bytes(), hostOf(t, b, q1).Bytes()) ||
					!bytes.Equal(hostOf(t, b, k.d).Bytes(), hostOf(t, b, k1).Bytes()) {
					t.Errorf("%s: RoPEPair differs from two RoPE calls", name)
				}
			}
		}
	}
	x, k := input(t, b, rng, tensor.F32, N, heads, 16), input(t, b, rng, tensor.F32, N-1, heads, 16)
	cos, sin := input(t, b, rng, tensor.F32, N, 8), input(t, b, rng, tensor.F32, N, 8)
	if err := b.RoPEPair(x.d, k.d, x.d, k.d, cos.d, sin.d, false); err == nil || !strings.HasPrefix(err.Error(), "cuda: rope: ") {
		t.Errorf("RoPEPair with k of another length: %v", err)
	}
	qc, kc := output(t, b, tensor.BF16, N, heads, 16), output(t, b, tensor.BF16, N, heads, 8)
	if err := b.RoPEPairCast(x.d, x.d, qc.d, kc.d, x.d, x.d, cos.d, sin.d, false); err == nil || !strings.Contains(err.Error(), "must have the shape of out") {
		t.Errorf("RoPEPairCast with a cast of another shape: %v", err)
	}
	if err := b.RoPEPairCast(x.d, x.d, qc.d, nil, x.d, x.d, cos.d, sin.d, false); err == nil || !strings.HasPrefix(err.Error(), "cuda: rope: ") {
		t.Errorf("RoPEPairCast without k's cast: %v", err)
	}

	// Small and odd sizes, element by element, on true rotations: full and
	// partial rotary (R < D, the rest copied), bf16 in and out, in place,
	// and a single token of one head into another dtype.
	f32, bf16, f16 := tensor.F32, tensor.BF16, tensor.F16
	for _, c := range []struct {
		N, heads, D, half int
		x, out            tensor.DType
		inplace           bool
	}{
		{7, 3, 10, 5, f32, f32, false}, {7, 3, 10, 3, f32, f32, false}, {9, 2, 24, 8, bf16, bf16, false},
		{5, 4, 12, 4, f32, f32, true}, {1, 1, 2, 1, f16, f32, false},
	} {
		x := input(t, b, rng, c.x, c.N, c.heads, c.D)
		cos, sin := tensor.New(f32, c.N, c.half), tensor.New(f32, c.N, c.half)
		for i := range cos.F32() {
			a := rng.Float64() * 2 * math.Pi
			cos.F32()[i], sin.F32()[i] = float32(math.Cos(a)), float32(math.Sin(a))
		}
		cosD, sinD := toDev(t, b, cos), toDev(t, b, sin)
		for _, inverse := range []bool{false, true} {
			name := fmt.Sprintf("rope N %d heads %d D %d half %d %s -> %s in place %v inverse %v", c.N, c.heads, c.D, c.half, c.x, c.out, c.inplace, inverse)
			out := output(t, b, c.out, c.N, c.heads, c.D)
			if c.inplace {
				out = copyPair(t, b, x)
			}
			must(t, cpu.RoPE(out.h, x.h, cos, sin, inverse))
			if c.inplace {
				must(t, b.RoPE(out.d, out.d, cosD, sinD, inverse))
			} else {
				must(t, b.RoPE(out.d, x.d, cosD, sinD, inverse))
			}
			closeTo(t, b, name, out, elemTol(c.out, 1e-6), 0)
		}
	}
}

// docStartPair is docStart I32 [len(docs), T] for rows packing documents
// of the given lengths, on both backends (nil, nil when docs is nil).
func docStartPair(t *testing.T, b *Backend, T int, docs [][]int) pair {
	if docs == nil {
		return pair{}
	}
	var ds []int32
	for _, lens := range docs {
		start := 0
		for _, n := range lens {
			for range n {
				ds = append(ds, int32(start))
			}
			start += n
		}
		if start != T {
			t.Fatalf("documents %v do not fill a row of %d", lens, T)
		}
	}
	h, err := tensor.FromI32(ds, len(docs), T)
	must(t, err)
	return pair{h, toDev(t, b, h)}
}

// TestGPUAttention compares Attention and AttentionBackward with the
// CPU's: GQA groups of 1 to 8, sequences that do not fill the 16-row and
// 32-key tiles, a single token, head dimensions from 5 to the largest
// supported (128), f32, bf16 and f16, and rows packing documents
// (docStart) that start inside tiles, on their edges, and hold one token.
// Besides the relative error of the whole result, each element of the
// small cases is held to 1e-5 (float32), 1e-2 (bf16) or 2e-3 (f16) of its
// scale (the larger ones reach 5e-6 in float32 on the emulated device).
//
// It runs in Precise mode, so that float32 inputs take the float32 kernels
// at every head dimension; TestGPUAttentionRounded covers the default
// mode's rounding of float32 attention to the tensor cores.
func TestGPUAttention(t *testing.T) {
	b := gpuBackend(t)
	b.Precise = true
	defer func() { b.Precise = false }()
	rng := newRNG(t)
	f32, bf16, f16 := tensor.F32, tensor.BF16, tensor.F16
	both := []tensor.DType{f32, bf16}
	for _, s := range []struct {
		B, T, Hq, Hkv, D int
		docs             [][]int // documents packed in each row; nil: one per row
		dts              []tensor.DType
		elementwise      bool // also held element by element
	}{
		{1, 1, 1, 1, 8, nil, both, false}, {2, 67, 8, 2, 64, nil, both, false}, {1, 40, 4, 4, 128, nil, both, false},
		{2, 33, 6, 2, 96, nil, both, false}, {1, 130, 8, 1, 16, nil, both, false},
		{2, 140, 8, 2, 64, [][]int{{5, 1, 64, 70}, {15, 17, 1, 32, 75}}, both, false},
		{1, 300, 4, 1, 128, [][]int{{1, 100, 16, 183}}, both, false},
		{1, 1, 2, 1, 8, nil, []tensor.DType{f32}, true}, {1, 20, 4, 1, 5, nil, []tensor.DType{f32}, true},
		{2, 37, 4, 2, 24, nil, []tensor.DType{f32}, true}, {1, 70, 2, 2, 128, nil, []tensor.DType{bf16}, true},
		{1, 33, 3, 3, 16, nil, []tensor.DType{f16}, true},
		{2, 140, 4, 2, 24, [][]int{{5, 1, 64, 70}, {15, 17, 1, 32, 75}}, []tensor.DType{f32}, true},
		{1, 50, 4, 1, 16, [][]int{{16, 1, 33}}, []tensor.DType{bf16}, true},
	} {
		for _, dt := range s.dts {
			scale := float32(1 / math.Sqrt(float64(s.D)))
			q := input(t, b, rng, dt, s.B, s.T, s.Hq, s.D)
			k, v := input(t, b, rng, dt, s.B, s.T, s.Hkv, s.D), input(t, b, rng, dt, s.B, s.T, s.Hkv, s.D)
			ds := docStartPair(t, b, s.T, s.docs)
			out, lse := output(t, b, dt, s.B, s.T, s.Hq, s.D), output(t, b, tensor.F32, s.B, s.Hq, s.T)
			must(t, cpu.Attention(out.h, lse.h, q.h, k.h, v.h, ds.h, scale))
			must(t, b.Attention(out.d, lse.d, q.d, k.d, v.d, ds.d, scale))
			name := fmt.Sprintf("attention B %d T %d Hq %d Hkv %d D %d docs %v %s", s.B, s.T, s.Hq, s.Hkv, s.D, s.docs, dt)
			// each checks one result as a whole and, for the small cases,
			// element by element.
			each := func(what string, got pair, tol, elemTol float64) {
				t.Helper()
				compare(t, b, name+what, got, tol)
				if s.elementwise {
					closeTo(t, b, name+what, got, elemTol, 0)
				}
			}
			tol := elemTol(dt, 1e-5)
			each("", out, tolFor(tolReduce, dt), tol)
			each(" lse", lse, tolReduce, 1e-5)

			dout := input(t, b, rng, dt, s.B, s.T, s.Hq, s.D)
			dq := output(t, b, dt, s.B, s.T, s.Hq, s.D)
			dk, dv := output(t, b, dt, s.B, s.T, s.Hkv, s.D), output(t, b, dt, s.B, s.T, s.Hkv, s.D)
			// Both backends start from the CPU's forward, so that only the
			// backward is compared.
			outD, lseD := copyPair(t, b, pair{out.h, nil}), copyPair(t, b, pair{lse.h, nil})
			// bf16 with D 64, 96, 128 runs on the tensor cores
			// (attention_tc_cuda_test.go), with bf16 P and dS.
			gradTol := tol
			if _, ok := attentionTC("attention_tc_backward_dq", kernels.Sizes{D: s.D}, dq.d, dk.d, dv.d, dout.d, q.d, k.d, v.d); ok {
				gradTol = tolTCGrad
			}
			must(t, cpu.AttentionBackward(dq.h, dk.h, dv.h, dout.h, q.h, k.h, v.h, ds.h, out.h, lse.h, scale))
			must(t, b.AttentionBackward(dq.d, dk.d, dv.d, dout.d, q.d, k.d, v.d, ds.d, outD.d, lseD.d, scale))
			if s.T == 1 {
				// A softmax over one key has no gradient: dq and dk are
				// rounding noise on both backends, of either sign.
				nearZero(t, b, name+" dq", dq, 1e-5)
				nearZero(t, b, name+" dk", dk, 1e-5)
			} else {
				each(" dq", dq, tolFor(tolReduce, dt), gradTol)
				each(" dk", dk, tolFor(tolReduce, dt), gradTol)
			}
			each(" dv", dv, tolFor(tolReduce, dt), gradTol)
		}
	}
}

func TestGPUSwiGLU(t *testing.T) {
	b := gpuBackend(t)
	rng := newRNG(t)
	for _, dt := range dtypes {
		g, u := input(t, b, rng, dt, 37, 129), input(t, b, rng, dt, 37, 129)
		out := output(t, b, dt, 37, 129)
		must(t, cpu.SwiGLU(out.h, g.h, u.h))
		must(t, b.SwiGLU(out.d, g.d, u.d))
		compare(t, b, "swiglu "+dt.String(), out, tolFor(tolF32, dt))
		dout := input(t, b, rng, tensor.F32, 37, 129)
		dg, du := output(t, b, dt, 37, 129), output(t, b, dt, 37, 129)
		must(t, cpu.SwiGLUBackward(dg.h, du.h, dout.h, g.h, u.h))
		must(t, b.SwiGLUBackward(dg.d, du.d, dout.d, g.d, u.d))
		compare(t, b, "swiglu backward dgate "+dt.String(), dg, tolFor(tolF32, dt))
		compare(t, b, "swiglu backward dup "+dt.String(), du, tolFor(tolF32, dt))
	}
	// Gates of standard deviation 6 (the sigmoid saturating both ways) and
	// a single element, element by element.
	for _, c := range []struct {
		shape []int
		dt    tensor.DType
	}{{[]int{5, 67}, tensor.F32}, {[]int{3, 41}, tensor.BF16}, {[]int{1}, tensor.F32}} {
		name := fmt.Sprintf("swiglu %v %s, wide gates", c.shape, c.dt)
		gh := randHost(rng, c.dt, 6, c.shape...)
		g, u := pair{gh, toDev(t, b, gh)}, input(t, b, rng, c.dt, c.shape...)
		out := output(t, b, c.dt, c.shape...)
		must(t, cpu.SwiGLU(out.h, g.h, u.h))
		must(t, b.SwiGLU(out.d, g.d, u.d))
		closeTo(t, b, name, out, elemTol(c.dt, 1e-6), 0)
		dout := input(t, b, rng, c.dt, c.shape...)
		dg, du := output(t, b, c.dt, c.shape...), output(t, b, c.dt, c.shape...)
		must(t, cpu.SwiGLUBackward(dg.h, du.h, dout.h, g.h, u.h))
		must(t, b.SwiGLUBackward(dg.d, du.d, dout.d, g.d, u.d))
		closeTo(t, b, name+" backward dgate", dg, elemTol(c.dt, 1e-6), 0)
		closeTo(t, b, name+" backward dup", du, elemTol(c.dt, 1e-6), 0)
	}
}

// TestGPUCrossEntropyChunkP runs ce_chunk_update alone on one chunk of
// logits (a row whose max does not grow, ignored rows, the label inside
// the chunk and outside it) three ways: P written over the logits in
// float32, P written in bf16 to a buffer of its own (what CrossEntropy does
// beside a bf16 lm_head, so that the product reads P with no cast), and no
// P (no dh). The running statistics must be the same bits every way, the
// bf16 P the float32 P rounded (the bits the cast it replaces gave), and
// the logits left alone when P goes elsewhere.
func TestGPUCrossEntropyChunkP(t *testing.T) {
	b := gpuBackend(t)
	rng := newRNG(t)
	const N, n, c0 = 9, 333, 1000
	labels := []int32{1000, 1332, -100, 5, 1100, 2000, -100, 1001, 1200}
	mInit := []float32{float32(math.Inf(-1)), 2, 0, 40, float32(math.Inf(-1)), 1, 0, -3, 0.5}
	sInit := []float32{0, 3, 0, 7, 0, 1.5, 0, 2, 9}
	up := func(h *tensor.Tensor, err error) *tensor.Tensor {
		must(t, err)
		return toDev(t, b, h)
	}
	logitsHost := randHost(rng, tensor.F32, 3, N, n)
	type result struct{ logits, p, rescale, m, s, target []float32 }
	get := func(x *tensor.Tensor) []float32 {
		h, err := b.ToHost(x)
		must(t, err)
		return h.ToF32()
	}
	run := func(pDType string) result {
		logits := toDev(t, b, logitsHost)
		m, s := up(tensor.FromF32(mInit, N)), up(tensor.FromF32(sInit, N))
		target, rescale := up(tensor.FromF32(make([]float32, N), N)), toDev(t, b, nanHost(tensor.F32, N))
		lab := up(tensor.FromI32(labels, N))
		var p *tensor.Tensor // nil: no P
		switch pDType {
		case "F32":
			p = logits
		case "BF16":
			p = toDev(t, b, nanHost(tensor.BF16, N, n))
		}
		args := new(Args).Raw(logits).Tensor(p).Raw(rescale).Raw(m).Raw(s).Raw(target).Raw(lab).I32(N).I32(n).I32(c0)
		must(t, b.q.launch("test", "ce_chunk_update", kernels.Sizes{N: N}, args))
		r := result{logits: get(logits), rescale: get(rescale), m: get(m), s: get(s), target: get(target)}
		if p != nil {
			r.p = get(p)
		}
		return r
	}
	f32, bf16, none := run("F32"), run("BF16"), run("none")
	sameBits := func(what string, got, want []float32) {
		t.Helper()
		for i := range want {
			if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
				t.Errorf("%s: element %d is %g, want %g", what, i, got[i], want[i])
				return
			}
		}
	}
	for _, r := range []struct {
		name string
		r    result
	}{{"P in bf16", bf16}, {"no P", none}} {
		sameBits(r.name+": rescale", r.r.rescale, f32.rescale)
		sameBits(r.name+": m", r.r.m, f32.m)
		sameBits(r.name+": s", r.r.s, f32.s)
		sameBits(r.name+": target", r.r.target, f32.target)
		sameBits(r.name+": logits", r.r.logits, logitsHost.F32())
	}
	rounded := make([]float32, len(f32.p))
	for i, v := range f32.p {
		rounded[i] = tensor.BF16ToF32(tensor.F32ToBF16(v))
	}
	sameBits("P in bf16 against P in float32 rounded", bf16.p, rounded)
	for row, l := range labels {
		for j, v := range f32.p[row*n : (row+1)*n] {
			if (l == kernels.IgnoreIndex) != (v == 0) {
				t.Fatalf("row %d (label %d): P[%d] = %g", row, l, j, v)
			}
		}
	}
	for row, l := range labels {
		want := float32(0) // as initialised: the label is in another chunk
		if l >= c0 && l < c0+n {
			want = logitsHost.F32()[row*n+int(l)-c0]
		}
		if f32.target[row] != want {
			t.Errorf("row %d (label %d): target %g, want %g", row, l, f32.target[row], want)
		}
	}
}

func TestGPUCrossEntropy(t *testing.T) {
	b := gpuBackend(t)
	rng := newRNG(t)
	const N, H, V = 37, 64, 1000
	labels := make([]int32, N)
	for i := range labels {
		labels[i] = int32(rng.IntN(V))
		if i%5 == 3 {
			labels[i] = -100
		}
	}
	lh, _ := tensor.FromI32(labels, N)
	lab := pair{lh, toDev(t, b, lh)}
	for _, c := range []struct {
		h, w, dh tensor.DType
		precise  bool
		chunk    int
		withDh   bool
	}{
		{tensor.F32, tensor.F32, tensor.F32, false, 256, true},
		{tensor.F32, tensor.F32, tensor.F32, false, 0, false},
		{tensor.F32, tensor.BF16, tensor.F32, true, 300, true},
		{tensor.F32, tensor.BF16, tensor.F32, false, 300, true},
		{tensor.BF16, tensor.BF16, tensor.BF16, false, 1000, true},
		{tensor.F32, tensor.F32, tensor.F32, false, 1, true},
	} {
		if c.chunk == 1 && onEmulator() {
			// A thousand chunks of one are minutes of emulated launches;
			// chunks of 333 still end with a chunk of one (1000 = 3*333 + 1).
			c.chunk = 333
		}
		h, w := input(t, b, rng, c.h, N, H), input(t, b, rng, c.w, V, H)
		lp := output(t, b, tensor.F32, N)
		var dh pair
		if c.withDh {
			dh = output(t, b, c.dh, N, H)
		}
		must(t, cpu.CrossEntropy(lp.h, dh.h, h.h, w.h, lab.h, c.chunk, 0.05))
		b.Precise = c.precise
		err := b.CrossEntropy(lp.d, dh.d, h.d, w.d, lab.d, c.chunk, 0.05)
		b.Precise = false
		must(t, err)
		name := fmt.Sprintf("cross entropy %+v", c)
		tol := tolReduce
		if (c.h != c.w && !c.precise) || c.h != tensor.F32 {
			tol = tol16
		}
		compare(t, b, name+" logprob", lp, tol)
		if c.withDh {
			compare(t, b, name+" dh", dh, tolFor(tol, c.dh))
		}
	}
	// Small sizes, element by element: chunks that do not divide the
	// vocabulary, a chunk of one column and one wider than the vocabulary,
	// a label in the last chunk, ignored rows, bf16 inputs with bf16 dh (a
	// separate accumulator) and float32 ones (dh is the accumulator), the
	// loss alone, and a single row.
	for _, c := range []struct {
		N, H, V, chunk int
		dt             tensor.DType
		withDh         bool
	}{
		{13, 24, 50, 16, tensor.F32, true}, {13, 24, 50, 64, tensor.F32, true}, {9, 40, 37, 8, tensor.BF16, true},
		{3, 5, 7, 1, tensor.F32, true}, {6, 16, 30, 7, tensor.F32, false}, {1, 3, 4, 3, tensor.F32, true},
	} {
		name := fmt.Sprintf("cross entropy N %d H %d V %d chunk %d %s dh %v", c.N, c.H, c.V, c.chunk, c.dt, c.withDh)
		labels := make([]int32, c.N)
		for i := range labels {
			switch {
			case i == 0:
				labels[i] = int32(c.V - 1) // the last chunk
			case i == 1 && c.N > 2, i%4 == 3:
				labels[i] = -100
			default:
				labels[i] = int32(rng.IntN(c.V))
			}
		}
		lh, _ := tensor.FromI32(labels, c.N)
		hh := randHost(rng, c.dt, 2, c.N, c.H) // logits of a few units, as a trained model has
		h, w := pair{hh, toDev(t, b, hh)}, input(t, b, rng, c.dt, c.V, c.H)
		lp := output(t, b, tensor.F32, c.N)
		var dh pair
		if c.withDh {
			dh = output(t, b, c.dt, c.N, c.H)
		}
		gradScale := 1 / float32(c.N)
		must(t, cpu.CrossEntropy(lp.h, dh.h, h.h, w.h, lh, c.chunk, gradScale))
		must(t, b.CrossEntropy(lp.d, dh.d, h.d, w.d, toDev(t, b, lh), c.chunk, gradScale))
		closeTo(t, b, name+" logprob", lp, 1e-5, 0)
		if c.withDh {
			closeTo(t, b, name+" dh", dh, elemTol(c.dt, 1e-5), 0)
		}
	}

	bad, _ := tensor.FromI32([]int32{1, V}, 2)
	err := b.CrossEntropy(output(t, b, tensor.F32, 2).d, nil, input(t, b, rng, tensor.F32, 2, H).d,
		input(t, b, rng, tensor.F32, V, H).d, toDev(t, b, bad), 0, 1)
	if err == nil || !strings.Contains(err.Error(), "label 1000 at position 1") {
		t.Errorf("bad label: %v", err)
	}
}

// AdamW spells out every rounding (no fused multiply-adds), so the device
// matches the CPU bit for bit: tensors of 1 to 65536 elements in one
// launch, three steps, with the Table's grid and with one block per tensor
// (each thread then strides over many elements).
func TestGPUAdamW(t *testing.T) {
	b := gpuBackend(t)
	rng := newRNG(t)
	oneBlock := withShape(t, b, "adamw", gridX(1))
	var ph, gh, mh, vh []*tensor.Tensor
	for _, shape := range [][]int{{16, 4096}, {1024, 16}, {3}, {7, 9}, {1}, {1037}} {
		ph, gh = append(ph, randHost(rng, tensor.F32, 1, shape...)), append(gh, randHost(rng, tensor.F32, 1, shape...))
		mh = append(mh, randHost(rng, tensor.F32, 1, shape...))
		vHost := randHost(rng, tensor.F32, 1, shape...)
		for i, x := range vHost.F32() {
			vHost.F32()[i] = x * x // the second moment is not negative
		}
		vh = append(vh, vHost)
	}
	onDevice := func(hs []*tensor.Tensor) []*tensor.Tensor {
		var ds []*tensor.Tensor
		for _, h := range hs {
			ds = append(ds, toDev(t, b, h))
		}
		return ds
	}
	for _, grid := range []struct {
		name string
		b    *Backend
	}{{"Table grid", b}, {"one block per tensor", oneBlock}} {
		pd, gd, md, vd := onDevice(ph), onDevice(gh), onDevice(mh), onDevice(vh)
		var p, m, v []*tensor.Tensor // the CPU's copies
		for i := range ph {
			p, m, v = append(p, hostClone(ph[i])), append(m, hostClone(mh[i])), append(v, hostClone(vh[i]))
		}
		for step := 1; step <= 3; step++ {
			must(t, cpu.AdamW(p, gh, m, v, step, 1e-3, 0.9, 0.999, 1e-8, 0.01))
			must(t, grid.b.AdamW(pd, gd, md, vd, step, 1e-3, 0.9, 0.999, 1e-8, 0.01))
		}
		for i := range ph {
			compare(t, b, fmt.Sprintf("adamw %s p[%d]", grid.name, i), pair{p[i], pd[i]}, 0)
			compare(t, b, fmt.Sprintf("adamw %s m[%d]", grid.name, i), pair{m[i], md[i]}, 0)
			compare(t, b, fmt.Sprintf("adamw %s v[%d]", grid.name, i), pair{v[i], vd[i]}, 0)
		}
	}
}

// hostClone is a copy of a host tensor.
func hostClone(h *tensor.Tensor) *tensor.Tensor {
	c := tensor.New(h.DType(), h.Shape()...)
	copy(c.Bytes(), h.Bytes())
	return c
}

// Operations on host tensors are errors, not crashes.
func TestGPUErrors(t *testing.T) {
	b := gpuBackend(t)
	x := tensor.New(tensor.F32, 4)
	if err := b.Add(x, x, x); err == nil || !strings.Contains(err.Error(), "host memory") {
		t.Errorf("add on host tensors: %v", err)
	}
	if _, err := b.Alloc(tensor.F32, 1<<62); err == nil {
		t.Errorf("allocation of 2^64 bytes: no error")
	}
	_, err := b.Alloc(tensor.F32, 1<<40) // 4 TiB: out of memory, reported
	if err == nil || !errors.Is(err, tensor.ErrOutOfMemory) {
		t.Errorf("4 TiB: %v", err)
	}
	avail, err2 := b.AvailableBytes()
	_, total, err3 := b.Device().MemInfo()
	if err2 != nil || err3 != nil || avail <= 0 || avail > total {
		t.Errorf("available %d bytes (%v) of %d (%v)", avail, err2, total, err3)
	}
	var e *Error
	if !errors.As(err, &e) || e.Name != "CUDA_ERROR_OUT_OF_MEMORY" {
		t.Errorf("out of memory error: %v", err)
	}
}
