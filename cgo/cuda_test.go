package cgo

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/compassml/compass/tensor"
)

// On a machine without a GPU (CI, and this project's build machines) Open
// must fail with ErrNoDevice and a reason; where a device opens, the test
// checks what it reports instead.
func TestOpen(t *testing.T) {
	d, err := Open(0)
	if err == nil {
		defer d.Close()
		major, minor := d.ComputeCapability()
		t.Logf("opened %s, compute capability %d.%d, %d SMs, %d MiB", d.Name(), major, minor, d.Multiprocessors(), d.TotalMemory()>>20)
		if d.Name() == "" || major < 1 || d.Multiprocessors() < 1 || d.TotalMemory() <= 0 {
			t.Errorf("implausible device description")
		}
		return
	}
	if !errors.Is(err, ErrNoDevice) {
		t.Fatalf("Open without a device: %v, want an error wrapping ErrNoDevice", err)
	}
	msg := err.Error()
	if !strings.Contains(msg, "libcuda.so.1") && !strings.Contains(msg, "cuInit") && !strings.Contains(msg, "no CUDA device") {
		t.Errorf("Open: %q does not say why", msg)
	}
	t.Logf("no device here: %v", err)

	if _, err := NewBackend(0); !errors.Is(err, ErrNoDevice) {
		t.Errorf("NewBackend without a device: %v, want ErrNoDevice", err)
	}
	if n, err := DeviceCount(); n != 0 || !errors.Is(err, ErrNoDevice) {
		t.Errorf("DeviceCount = %d, %v", n, err)
	}
}

// A machine without the driver's library: ErrNoDevice, saying so. (Only
// a path dlopen cannot open is tried: a library without the entry points
// would overwrite the loaded driver's.)
func TestOpenDriverMissing(t *testing.T) {
	err := openDriver("/nonexistent/libcuda.so.1")
	if !errors.Is(err, ErrNoDevice) || !strings.Contains(err.Error(), "could not be loaded (no NVIDIA driver)") {
		t.Errorf("missing libcuda.so.1: %v", err)
	}
}

// Where libcuda.so.1 is installed (the driver's library without a GPU, as
// on Debian with libcuda1), every entry point compass uses must resolve:
// the names and _v2 versions are right.
func TestDriverEntryPoints(t *testing.T) {
	loadDriver()
	if !driverLoaded {
		t.Skipf("libcuda.so.1 is not installed here: %v", driverErr)
	}
	err := errorOf(cudaErrOutOfMemory, "cuMemAlloc of 8 bytes")
	if got := err.Error(); got != "cuda: cuMemAlloc of 8 bytes: CUDA_ERROR_OUT_OF_MEMORY (out of memory)" {
		t.Errorf("error text %q", got)
	}
	if !errors.Is(err, tensor.ErrOutOfMemory) {
		t.Errorf("%v does not match tensor.ErrOutOfMemory", err)
	}
	if errorOf(cudaSuccess, "x") != nil {
		t.Errorf("success is an error")
	}
}

// cuBLAS loads without a GPU: the symbols resolve and the version is read.
func TestCublasLoads(t *testing.T) {
	found := false
	for _, c := range cublasCandidates() {
		if strings.HasPrefix(c[1], "/") {
			found = true
		}
	}
	if !found {
		t.Skip("no libcublas in " + strings.Join(cublasDirs(), ", "))
	}
	if err := loadCublas(); err != nil {
		t.Fatal(err)
	}
	t.Logf("loaded %s", cublasPath)
}

func TestCublasCandidates(t *testing.T) {
	t.Setenv(EmulatorEnv, "") // the search for a real cuBLAS
	dir := t.TempDir()
	for _, name := range []string{"libcublas.so.12", "libcublasLt.so.12"} {
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("COMPASS_CUBLAS_DIR", dir)
	c := cublasCandidates()
	if len(c) == 0 || c[0] != [2]string{filepath.Join(dir, "libcublasLt.so.12"), filepath.Join(dir, "libcublas.so.12")} {
		t.Errorf("COMPASS_CUBLAS_DIR is not tried first: %v", c)
	}
	last := c[len(c)-1]
	if last != [2]string{"libcublasLt.so.11", "libcublas.so.11"} {
		t.Errorf("the loader's own search comes last: %v", last)
	}
	// The emulated device stands in for both libraries, alone.
	t.Setenv(EmulatorEnv, "/x/libcompass_emu.so")
	if c := cublasCandidates(); len(c) != 1 || c[0] != [2]string{"/x/libcompass_emu.so", "/x/libcompass_emu.so"} {
		t.Errorf("with %s set: %v", EmulatorEnv, c)
	}
	if got := driverPath(); got != "/x/libcompass_emu.so" {
		t.Errorf("driverPath with %s set: %q", EmulatorEnv, got)
	}
}

func TestSelectBackend(t *testing.T) {
	be, note, err := SelectBackend("cpu")
	if err != nil || be.Name() != "cpu" || note != "" {
		t.Errorf("cpu: %v %q %v", be, note, err)
	}
	if cpu, ok := be.(*tensor.CPU); !ok || !cpu.BF16Products {
		t.Errorf("cpu: %#v: want the CPU backend with bf16 products, as the commands compute on a GPU", be)
	}
	for _, name := range []string{"tpu", "cuda:x", "cuda:-1x"} {
		if _, _, err := SelectBackend(name); err == nil {
			t.Errorf("%q: no error", name)
		}
	}
	_, openErr := Open(0)
	be, note, err = SelectBackend("auto")
	if err != nil {
		t.Fatalf("auto: %v", err)
	}
	if openErr != nil {
		if be.Name() != "cpu" || !strings.Contains(note, "CPU") || strings.Contains(note, "\n") {
			t.Errorf("auto without a device: %s, note %q: want the CPU and one line saying so", be.Name(), note)
		}
		t.Logf("auto: %s", note)
		_, _, err := SelectBackend("cuda")
		if err == nil || !errors.Is(err, ErrNoDevice) || !strings.Contains(err.Error(), "device cuda") {
			t.Errorf("cuda without a device: %v", err)
		}
		return
	}
	if be.Name() != "cuda" || note != "" {
		t.Errorf("auto with a device: %s, note %q", be.Name(), note)
	}
	be.(*Backend).Close()
}

func TestDeviceFromEnv(t *testing.T) {
	t.Setenv(DeviceEnv, "")
	if got := DeviceFromEnv(); got != "auto" {
		t.Errorf("unset: %q", got)
	}
	t.Setenv(DeviceEnv, "cpu")
	if got := DeviceFromEnv(); got != "cpu" {
		t.Errorf("cpu: %q", got)
	}
}

func TestSizeClass(t *testing.T) {
	prev := 0
	for n := 1; n < 1<<22; n += 1 + n/50 {
		c := sizeClass(n)
		if c < n || c < minBlock || (n > minBlock && float64(c) > float64(n)*1.125) {
			t.Fatalf("sizeClass(%d) = %d: want >= n, >= %d and within 1/8 of n", n, c, minBlock)
		}
		if c < prev {
			t.Fatalf("sizeClass is not monotone at %d", n)
		}
		if sizeClass(c) != c {
			t.Fatalf("sizeClass(%d) = %d but sizeClass(%d) = %d", n, c, c, sizeClass(c))
		}
		prev = c
	}
	// Llama-3.1-8B's weights waste nothing.
	for _, n := range []int{4096 * 4096 * 2, 14336 * 4096 * 2, 1024 * 4096 * 2} {
		if sizeClass(n) != n {
			t.Errorf("sizeClass(%d) = %d", n, sizeClass(n))
		}
	}
}

// fakeMemory is device memory for allocator tests: it counts what is
// outstanding and can run out.
type fakeMemory struct {
	next        uintptr
	outstanding map[uintptr]int
	limit       int // bytes; 0 means no limit
	mallocs     int
}

func (f *fakeMemory) malloc(n int) (uintptr, error) {
	used := 0
	for _, b := range f.outstanding {
		used += b
	}
	if f.limit > 0 && used+n > f.limit {
		return 0, errorOf(cudaErrOutOfMemory, "cuMemAlloc")
	}
	f.mallocs++
	f.next += 1 << 30
	f.outstanding[f.next] = n
	return f.next, nil
}

func (f *fakeMemory) free(p uintptr) error {
	if _, ok := f.outstanding[p]; !ok {
		return errors.New("double free")
	}
	delete(f.outstanding, p)
	return nil
}

func TestAllocator(t *testing.T) {
	loadDriver() // error names, where there is a driver library
	raw := &fakeMemory{outstanding: map[uintptr]int{}}
	a := newAllocator(raw)
	p1, err := a.alloc(1000)
	if err != nil {
		t.Fatal(err)
	}
	p2, _ := a.alloc(5000)
	if in, peak, cached := a.stats(); in != int64(sizeClass(1000)+sizeClass(5000)) || peak != in || cached != 0 {
		t.Errorf("stats %d %d %d", in, peak, cached)
	}
	if a.release(p1, 999) {
		t.Errorf("released a block with the wrong length (a view)")
	}
	if !a.release(p1, 1000) || a.release(p1, 1000) {
		t.Errorf("release, then a double release")
	}
	p3, _ := a.alloc(1010) // the same class: reused
	if p3 != p1 || raw.mallocs != 2 {
		t.Errorf("a freed block of the same class was not reused (%#x, %#x, %d mallocs)", p3, p1, raw.mallocs)
	}
	a.release(p2, 5000)
	if in, peak, cached := a.stats(); in != int64(sizeClass(1000)) || peak != int64(sizeClass(1000)+sizeClass(5000)) || cached != int64(sizeClass(5000)) {
		t.Errorf("stats %d %d %d", in, peak, cached)
	}
	a.resetPeak()
	if _, peak, _ := a.stats(); peak != int64(sizeClass(1000)) {
		t.Errorf("resetPeak: %d", peak)
	}

	// Out of memory: the cached blocks go back and the allocation is tried again.
	raw.limit = sizeClass(1000) + sizeClass(sizeClass(5000)+1) + 100
	if _, err := a.alloc(sizeClass(5000) + 1); err != nil {
		t.Errorf("allocation after freeing the cache: %v", err)
	}
	if _, err := a.alloc(1 << 20); err == nil || !errors.Is(err, tensor.ErrOutOfMemory) || !strings.Contains(err.Error(), "in use") {
		t.Errorf("allocation beyond the memory: %v", err)
	}
	if err := a.close(); err != nil {
		t.Fatal(err)
	}
	if len(raw.outstanding) != 0 {
		t.Errorf("close left %d blocks", len(raw.outstanding))
	}
	if _, err := a.alloc(0); err == nil {
		t.Errorf("alloc(0): no error")
	}
}

func TestArgs(t *testing.T) {
	var a Args
	a.Ptr(0x1122334455667788).I32(-2).F32(1.5).U64(7).I32(3).Ptr(9)
	wantOffsets := []int32{0, 8, 12, 16, 24, 32}
	if a.Len() != 6 || len(a.buf) != 40 {
		t.Fatalf("%d arguments in %d bytes", a.Len(), len(a.buf))
	}
	for i, o := range wantOffsets {
		if a.offsets[i] != o {
			t.Errorf("argument %d at %d, want %d", i, a.offsets[i], o)
		}
	}
	if a.buf[0] != 0x88 || a.buf[7] != 0x11 || a.buf[8] != 0xfe || a.buf[11] != 0xff {
		t.Errorf("little-endian packing: % x", a.buf[:12])
	}
	if math.Float32frombits(uint32(a.buf[12])|uint32(a.buf[13])<<8|uint32(a.buf[14])<<16|uint32(a.buf[15])<<24) != 1.5 {
		t.Errorf("float packing")
	}
	if string(a.kinds) != "pifuip" {
		t.Errorf("kinds %q", a.kinds)
	}
	if a.Reset().Len() != 0 {
		t.Errorf("Reset")
	}
}

// colMajorGemm is cublasGemmEx's definition, in float64 over float32
// storage: C = alpha op(A) op(B) + beta C, column-major with leading
// dimensions.
func colMajorGemm(p gemmPlan, A, B, Cm []float32, alpha, beta float32) {
	at := func(M []float32, ld, r, c int) float64 { return float64(M[r+c*ld]) }
	for j := 0; j < p.n; j++ {
		for i := 0; i < p.m; i++ {
			s := 0.0
			for l := 0; l < p.k; l++ {
				var x, y float64
				if p.transA == 0 {
					x = at(A, p.lda, i, l)
				} else {
					x = at(A, p.lda, l, i)
				}
				if p.transB == 0 {
					y = at(B, p.ldb, l, j)
				} else {
					y = at(B, p.ldb, j, l)
				}
				s += x * y
			}
			c := float64(alpha) * s
			if beta != 0 {
				c += float64(beta) * float64(Cm[i+j*p.ldc])
			}
			Cm[i+j*p.ldc] = float32(c)
		}
	}
}

// The row-major to column-major plan, run through cuBLAS's definition on
// the same memory, gives what the CPU MatMul gives.
func TestGemmPlan(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	randT := func(shape ...int) *tensor.Tensor {
		x := tensor.New(tensor.F32, shape...)
		for i := range x.F32() {
			x.F32()[i] = float32(rng.NormFloat64())
		}
		return x
	}
	cpu := tensor.NewCPU()
	for _, s := range []struct {
		aShape         []int
		bShape         []int
		transA, transB bool
	}{
		{[]int{5, 7}, []int{7, 3}, false, false},
		{[]int{5, 7}, []int{3, 7}, false, true},
		{[]int{7, 5}, []int{7, 3}, true, false},
		{[]int{7, 5}, []int{3, 7}, true, true},
		{[]int{2, 3, 4}, []int{6, 4}, false, true}, // leading dimensions flattened into M
		{[]int{1, 1}, []int{1, 9}, false, false},
	} {
		a, b := randT(s.aShape...), randT(s.bShape...)
		var cShape []int
		switch {
		case s.transA:
			cShape = []int{a.Dim(1)}
		default:
			cShape = append([]int(nil), s.aShape[:len(s.aShape)-1]...)
		}
		if s.transB {
			cShape = append(cShape, b.Dim(0))
		} else {
			cShape = append(cShape, b.Dim(1))
		}
		want := randT(cShape...)
		got := tensor.New(tensor.F32, cShape...)
		copy(got.F32(), want.F32())
		M, K, N, err := matmulDims(got, a, b, s.transA, s.transB)
		if err != nil {
			t.Fatal(err)
		}
		if err := cpu.MatMul(want, a, b, s.transA, s.transB, 0.75, 0.5); err != nil {
			t.Fatal(err)
		}
		p := planGemm(M, K, N, a.Dim(-1), b.Dim(1), s.transA, s.transB)
		colMajorGemm(p, b.F32(), a.F32(), got.F32(), 0.75, 0.5) // cuBLAS's A is our b
		for i, w := range want.F32() {
			if d := math.Abs(float64(got.F32()[i] - w)); d > 1e-5*(1+math.Abs(float64(w))) {
				t.Fatalf("%v x %v (transA %v, transB %v): element %d is %g, CPU %g", a, b, s.transA, s.transB, i, got.F32()[i], w)
			}
		}
	}
	// Wrong shapes are refused as the CPU refuses them.
	if _, _, _, err := matmulDims(tensor.New(tensor.F32, 2, 2), tensor.New(tensor.F32, 2, 3), tensor.New(tensor.F32, 2, 2), false, false); err == nil {
		t.Errorf("inner dimensions: no error")
	}
	if _, _, _, err := matmulDims(tensor.New(tensor.F32, 2, 2), tensor.New(tensor.F32, 1, 2, 3), tensor.New(tensor.F32, 2, 2), true, false); err == nil {
		t.Errorf("transposed a of rank 3: no error")
	}
}

func TestGemmDTypes(t *testing.T) {
	f32, bf16, f16 := tensor.F32, tensor.BF16, tensor.F16
	for _, c := range []struct {
		a, b    tensor.DType
		precise bool
		want    tensor.DType
	}{
		{f32, f32, false, f32}, {bf16, bf16, false, bf16}, {f32, bf16, false, bf16}, {bf16, f32, false, bf16},
		{f16, f32, false, f16}, {f32, bf16, true, f32}, {bf16, f16, false, f32},
	} {
		if got := gemmInputDType(c.a, c.b, c.precise); got != c.want {
			t.Errorf("gemmInputDType(%s, %s, %v) = %s, want %s", c.a, c.b, c.precise, got, c.want)
		}
	}
	for _, c := range []struct {
		in, out tensor.DType
		ok      bool
	}{{f32, f32, true}, {bf16, bf16, true}, {bf16, f32, true}, {f16, f32, true}, {f16, f16, true}, {f32, bf16, false}, {bf16, f16, false}} {
		if gemmSupported(c.in, c.out) != c.ok {
			t.Errorf("gemmSupported(%s, %s) != %v", c.in, c.out, c.ok)
		}
	}
}

// A driver's out-of-memory error matches tensor.ErrOutOfMemory through
// any wrapping (the trainer adds what a step needs to it); another CUDA
// error does not. A backend without a device has no available memory to
// report.
func TestErrorIsOutOfMemory(t *testing.T) {
	oom := fmt.Errorf("model: layer 3: %w", &Error{Op: "cuMemAlloc of 8 bytes", Code: cudaErrOutOfMemory, Name: "CUDA_ERROR_OUT_OF_MEMORY"})
	if !errors.Is(oom, tensor.ErrOutOfMemory) {
		t.Errorf("%v does not match tensor.ErrOutOfMemory", oom)
	}
	if other := (&Error{Op: "cuLaunchKernel", Code: cudaErrInvalidValue, Name: "CUDA_ERROR_INVALID_VALUE"}); errors.Is(other, tensor.ErrOutOfMemory) {
		t.Errorf("%v matches tensor.ErrOutOfMemory", other)
	}
	be, _ := recBackend(t)
	if n, err := be.AvailableBytes(); err == nil {
		t.Errorf("the recording backend reports %d bytes available", n)
	}
}
