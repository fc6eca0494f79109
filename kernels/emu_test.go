package kernels_test

// The emulator harness. TestMain compiles emu/driver.cpp, which includes
// every .cu file under emu/cuda_emu.h, once per test binary; each test
// writes fresh random inputs, runs one driver command (one kernel, or the
// launch sequence of one backend op, with the launch shapes of the Table)
// and compares what the kernels wrote with the CPU backend's op.

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/compassml/compass/kernels"
	"github.com/compassml/compass/tensor"
)

var seedFlag = flag.Uint64("emu.seed", 0, "seed of the emulator tests' random inputs (0: COMPASS_TEST_SEED, else the fixed default)")

// defaultSeed makes every run draw the same inputs, so that a failure in CI
// repeats anywhere. COMPASS_TEST_SEED=N (or -emu.seed=N) draws others, and
// COMPASS_TEST_SEED=random a new seed each run; each test logs its seed.
const defaultSeed = 1

var (
	driverPath string // the compiled emulator driver
	driverErr  error  // why there is none
	seed       uint64
)

func TestMain(m *testing.M) {
	flag.Parse()
	var err error
	if seed, err = testSeed(*seedFlag, os.Getenv("COMPASS_TEST_SEED")); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	dir, err := os.MkdirTemp("", "kernels-emu-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	driverErr = buildDriver(dir)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// testSeed returns the seed of the run: the flag's when set, else
// COMPASS_TEST_SEED's (a number, or "random" for one from the clock), else
// defaultSeed.
func testSeed(flagSeed uint64, env string) (uint64, error) {
	switch {
	case flagSeed != 0:
		return flagSeed, nil
	case env == "":
		return defaultSeed, nil
	case env == "random":
		return uint64(time.Now().UnixNano()) | 1, nil
	}
	s, err := strconv.ParseUint(env, 10, 64)
	if err != nil || s == 0 {
		return 0, fmt.Errorf("COMPASS_TEST_SEED=%q: want a positive integer or \"random\"", env)
	}
	return s, nil
}

// emuSources are the files the driver is built from.
func emuSources() ([]string, error) {
	var files []string
	for _, pattern := range []string{"*.cu", "*.cuh", "emu/*.h", "emu/*.cpp"} {
		m, err := filepath.Glob(pattern)
		if err != nil {
			return nil, err
		}
		files = append(files, m...)
	}
	return files, nil
}

func buildDriver(dir string) error {
	gxx, err := exec.LookPath("g++")
	if err != nil {
		return errors.New("g++ not found: install g++ (Debian: apt-get install g++), which the kernel emulator needs")
	}
	driverPath = filepath.Join(dir, "driver")
	args := []string{"-O2", "-fopenmp", "-std=c++17", "-ffp-contract=off", "-Wall", "-Wno-unknown-pragmas"}
	// EMU_CXXFLAGS adds flags, e.g. "-fsanitize=address,undefined -g" to
	// catch reads out of bounds, which the guard bytes do not.
	args = append(args, strings.Fields(os.Getenv("EMU_CXXFLAGS"))...)
	cmd := exec.Command(gxx, append(args, "-o", driverPath, "emu/driver.cpp")...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("building the kernel emulator: %v\n%s", err, out)
	}
	if len(out) > 0 {
		return fmt.Errorf("building the kernel emulator: warnings:\n%s", out)
	}
	return nil
}

var (
	sourcesOnce sync.Once
	sourcesErr  error
)

// readSources reads the files the driver is built from during the tests
// (TestMain runs before go test starts logging what the test reads), so
// that go test's cache knows that a change to any of them changes the
// result.
func readSources() error {
	os.Getenv("EMU_CXXFLAGS")      // read by TestMain too: a change rebuilds the driver
	os.Getenv("COMPASS_TEST_SEED") // and a change of seed draws other inputs ("random" needs -count=1)
	files, err := emuSources()
	if err != nil {
		return err
	}
	for _, f := range files {
		if _, err := os.ReadFile(f); err != nil {
			return err
		}
	}
	return nil
}

// newRand returns the random source of one test, derived from the run's
// seed and the test's name; the seed is logged so that a failure can be
// repeated with COMPASS_TEST_SEED.
func newRand(t *testing.T) *rand.Rand {
	t.Helper()
	h := uint64(14695981039346656037)
	for _, c := range []byte(t.Name()) {
		h = (h ^ uint64(c)) * 1099511628211
	}
	t.Logf("seed %d (COMPASS_TEST_SEED=%d repeats it)", seed, seed)
	return rand.New(rand.NewPCG(seed, h))
}

// emu is one driver run: a command, its input tensors and its parameters.
type emu struct {
	t      *testing.T
	cmd    string
	inputs map[string]*tensor.Tensor
	params map[string]string
}

func newEmu(t *testing.T, cmd string) *emu {
	t.Helper()
	if driverErr != nil {
		t.Fatal(driverErr)
	}
	sourcesOnce.Do(func() { sourcesErr = readSources() })
	if sourcesErr != nil {
		t.Fatal(sourcesErr)
	}
	return &emu{t: t, cmd: cmd, inputs: map[string]*tensor.Tensor{}, params: map[string]string{}}
}

func (e *emu) in(name string, x *tensor.Tensor) *emu {
	e.inputs[name] = x
	return e
}

// set adds a parameter: ints, float32 (printed so that it parses back to
// the same float32), bools and dtypes.
func (e *emu) set(key string, v any) *emu {
	switch v := v.(type) {
	case int:
		e.params[key] = strconv.Itoa(v)
	case int64:
		e.params[key] = strconv.FormatInt(v, 10)
	case float32:
		e.params[key] = strconv.FormatFloat(float64(v), 'g', -1, 32)
	case bool:
		e.params[key] = map[bool]string{false: "0", true: "1"}[v]
	case tensor.DType:
		e.params[key] = strconv.Itoa(int(v))
	default:
		e.t.Fatalf("parameter %s: unsupported type %T", key, v)
	}
	return e
}

// launch passes the Table's launch shape of kernel for sizes s.
func (e *emu) launch(kernel string, s kernels.Sizes) *emu {
	return e.launchAs(kernel, kernel, s)
}

// launchAs passes the shape of kernel under another key, for a command
// that launches one kernel twice with different sizes.
func (e *emu) launchAs(key, kernel string, s kernels.Sizes) *emu {
	k, err := kernels.Lookup(kernel)
	if err != nil {
		e.t.Fatal(err)
	}
	return e.shape(key, k.Launch(s))
}

// shape passes an explicit launch shape.
func (e *emu) shape(key string, l kernels.Launch) *emu {
	e.params[key+".grid"] = fmt.Sprintf("%d,%d,%d", l.Grid[0], l.Grid[1], l.Grid[2])
	e.params[key+".block"] = strconv.Itoa(l.Block[0] * l.Block[1] * l.Block[2])
	e.params[key+".shared"] = strconv.Itoa(l.Shared)
	return e
}

// run runs the driver and returns its outputs by name.
func (e *emu) run() map[string]*tensor.Tensor {
	e.t.Helper()
	outs, err := e.try()
	if err != nil {
		e.t.Fatal(err)
	}
	return outs
}

func (e *emu) try() (map[string]*tensor.Tensor, error) {
	dir := e.t.TempDir()
	for name, x := range e.inputs {
		if err := writeTensor(filepath.Join(dir, name+".in"), x); err != nil {
			return nil, err
		}
	}
	args := []string{e.cmd, dir}
	for k, v := range e.params {
		args = append(args, k+"="+v)
	}
	// A kernel whose threads disagree on barriers can hang the emulator.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, driverPath, args...)
	// Passive waiting: a block's threads far outnumber the cores, and
	// spinning at barriers would take the time of the threads that work.
	cmd.Env = append(os.Environ(), "OMP_WAIT_POLICY=PASSIVE")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("emulator %s: %v\n%s", e.cmd, err, stderr.String())
	}
	files, err := filepath.Glob(filepath.Join(dir, "*.out"))
	if err != nil {
		return nil, err
	}
	outs := map[string]*tensor.Tensor{}
	for _, f := range files {
		x, err := readTensor(f)
		if err != nil {
			return nil, err
		}
		outs[strings.TrimSuffix(filepath.Base(f), ".out")] = x
	}
	return outs, nil
}

// The driver's tensor files: "CEMU", uint32 dtype, uint32 rank, int64 dims,
// elements; little-endian.
func writeTensor(path string, x *tensor.Tensor) error {
	var b bytes.Buffer
	b.WriteString("CEMU")
	shape := x.Shape()
	binary.Write(&b, binary.LittleEndian, uint32(x.DType()))
	binary.Write(&b, binary.LittleEndian, uint32(len(shape)))
	for _, d := range shape {
		binary.Write(&b, binary.LittleEndian, int64(d))
	}
	b.Write(x.Bytes())
	return os.WriteFile(path, b.Bytes(), 0o644)
}

func readTensor(path string) (*tensor.Tensor, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if len(data) < 12 || string(data[:4]) != "CEMU" {
		return nil, fmt.Errorf("%s: not a tensor file", path)
	}
	dt := tensor.DType(binary.LittleEndian.Uint32(data[4:]))
	rank := int(binary.LittleEndian.Uint32(data[8:]))
	if len(data) < 12+8*rank {
		return nil, fmt.Errorf("%s: short header", path)
	}
	shape := make([]int, rank)
	for i := range shape {
		shape[i] = int(binary.LittleEndian.Uint64(data[12+8*i:]))
	}
	return tensor.FromBytes(dt, shape, append([]byte(nil), data[12+8*rank:]...))
}

// randTensor returns a tensor of dtype with values uniform in
// [-scale, scale), rounded to the dtype.
func randTensor(rng *rand.Rand, dtype tensor.DType, scale float64, shape ...int) *tensor.Tensor {
	n := 1
	for _, d := range shape {
		n *= d
	}
	v := make([]float32, n)
	for i := range v {
		v[i] = float32((2*rng.Float64() - 1) * scale)
	}
	return convert(must(tensor.FromF32(v, shape...)), dtype)
}

// convert returns x in dtype (x itself when it is already).
func convert(x *tensor.Tensor, dtype tensor.DType) *tensor.Tensor {
	if x.DType() == dtype {
		return x
	}
	y := tensor.New(dtype, x.Shape()...)
	if err := cpu.Copy(y, x); err != nil {
		panic(err)
	}
	return y
}

// like returns a new tensor of x's shape in dtype.
func like(x *tensor.Tensor, dtype tensor.DType) *tensor.Tensor {
	return tensor.New(dtype, x.Shape()...)
}

func i32s(v []int32, shape ...int) *tensor.Tensor { return must(tensor.FromI32(v, shape...)) }

var cpu = tensor.NewCPU()

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// tolerance is the error allowed relative to the reference: elementwise,
// |got - want| <= tol * (|want| + rms(want)), the rms term a floor for
// elements near zero. float32 results are held to 1e-5 or so, bf16 to 1e-2
// (its 8-bit mantissa is 4e-3 relative); each test states its own.
type tolerance float64

// closeTo fails the test unless got matches want within tol; NaN never
// passes. It logs the largest error found, in units of the scale.
func closeTo(t *testing.T, what string, got, want *tensor.Tensor, tol tolerance) {
	t.Helper()
	closeWithin(t, what, got, want, tol, 0)
}

// closeWithin is closeTo with an absolute floor added to the scale, for
// results that cancel to rounding noise (|got - want| <= tol * (|want| +
// rms(want) + floor)).
func closeWithin(t *testing.T, what string, got, want *tensor.Tensor, tol tolerance, floor float64) {
	t.Helper()
	if got == nil {
		t.Fatalf("%s: no output", what)
	}
	if !got.SameShape(want) {
		t.Fatalf("%s: shape %v, want %v", what, got, want)
	}
	g, w := got.ToF32(), want.ToF32()
	rms := 0.0
	for _, x := range w {
		rms += float64(x) * float64(x)
	}
	if len(w) > 0 {
		rms = math.Sqrt(rms / float64(len(w)))
	}
	worst, at, bad := 0.0, -1, 0
	for i := range w {
		scale := math.Abs(float64(w[i])) + rms + floor
		err := math.Abs(float64(g[i])-float64(w[i])) / scale
		if math.IsNaN(err) || math.IsNaN(float64(g[i])) {
			err = math.Inf(1)
		}
		if err > worst || at < 0 {
			worst, at = err, i
		}
		if err > float64(tol) {
			if bad < 5 {
				t.Errorf("%s: element %d = %g, want %g (error %.3g > %g)", what, i, g[i], w[i], err, float64(tol))
			}
			bad++
		}
	}
	if bad > 0 {
		t.Errorf("%s: %d of %d elements out of tolerance", what, bad, len(w))
		return
	}
	t.Logf("%s: %d elements, max error %.2g (tolerance %g)", what, len(w), worst, float64(tol))
}

// sameBits fails the test unless got and want are identical bit for bit.
func sameBits(t *testing.T, what string, got, want *tensor.Tensor) {
	t.Helper()
	if got == nil {
		t.Fatalf("%s: no output", what)
	}
	if got.DType() != want.DType() || !got.SameShape(want) {
		t.Fatalf("%s: %v, want %v", what, got, want)
	}
	g, w := got.Bytes(), want.Bytes()
	size := want.DType().Size()
	bad := 0
	for i := 0; i < len(w); i += size {
		if !bytes.Equal(g[i:i+size], w[i:i+size]) {
			if bad < 5 {
				t.Errorf("%s: element %d is %x, want %x", what, i/size, g[i:i+size], w[i:i+size])
			}
			bad++
		}
	}
	if bad > 0 {
		t.Errorf("%s: %d of %d elements differ", what, bad, len(w)/size)
		return
	}
	t.Logf("%s: %d elements, identical", what, len(w)/size)
}

// TestEmulatorSelfTest runs the emulator's own checks: shuffles of each
// kind and width, 64-bit shuffles, votes, atomics, barriers, the poisoning
// of dynamic shared memory, thread indices and the bf16/half types.
func TestEmulatorSelfTest(t *testing.T) {
	newEmu(t, "selftest").run()
}
