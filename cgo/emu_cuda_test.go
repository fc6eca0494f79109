//go:build cuda

package cgo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/compassml/compass/engine"
	"github.com/compassml/compass/model"
	"github.com/compassml/compass/tensor"
)

// onEmulator reports whether the device is the emulated one (make emu),
// which checks what a GPU cannot: the count and size of every argument.
func onEmulator() bool { return os.Getenv(EmulatorEnv) != "" }

// The launch checks reach Go as errors: those of Function.Launch itself,
// the driver's (launch bounds, shared memory), and the emulator's argument
// checks. A good launch next to each shows that the failure is the check's.
func TestGPULaunchChecks(t *testing.T) {
	b := gpuBackend(t)
	f := b.q.(*gpuQueue).kern.funcs["elementwise_scale"] // (out, dt, a, dt, float s, size_t n), __launch_bounds__(256)
	const n = 1000
	rng := newRNG(t)
	xh := randHost(rng, tensor.F32, 1, n)
	x := toDev(t, b, xh)
	out, err := b.alloc(tensor.F32, n)
	must(t, err)
	defer b.Free(out)
	defer b.Free(x)
	good := func() *Args { return new(Args).Tensor(out).Tensor(x).F32(2).U64(n) }
	grid, block := Dim3{4, 1, 1}, Dim3{256, 1, 1}
	if err := f.Launch(grid, block, 0, good()); err != nil {
		t.Fatalf("a good launch: %v", err)
	}
	got := hostOf(t, b, out).F32()
	for i, v := range xh.F32() {
		if got[i] != 2*v {
			t.Fatalf("element %d: %g, want %g", i, got[i], 2*v)
		}
	}

	var cudaErr *Error
	for _, c := range []struct {
		name        string
		grid, block Dim3
		shared      int
		args        *Args
		driver      bool // the driver's error (else Function.Launch's own)
		emuOnly     bool // only the emulator can see it
	}{
		{"grid.y over 65535", Dim3{1, 65536, 1}, block, 0, good(), false, false},
		{"grid.z over 65535", Dim3{1, 1, 65536}, block, 0, good(), false, false},
		{"block over 1024 threads", grid, Dim3{64, 32, 1}, 0, good(), false, false},
		{"block.z over 64", grid, Dim3{1, 1, 128}, 0, good(), false, false},
		{"block over __launch_bounds__", grid, Dim3{512, 1, 1}, 0, good(), true, false},
		{"64 KiB of dynamic shared memory without opting in", grid, block, 64 << 10, good(), true, false},
		{"one argument missing", grid, block, 0, new(Args).Tensor(out).Tensor(x).F32(2), true, true},
		{"one argument too many", grid, block, 0, good().I32(1), true, true},
		{"the last argument 4 bytes, not 8", grid, block, 0, new(Args).Tensor(out).Tensor(x).F32(2).I32(n), true, true},
		// (A 4-byte argument followed by an 8-byte one takes 8 bytes either
		// way: passing it as 8 bytes is harmless, and not seen.)
		{"the scale 8 bytes, not 4", grid, block, 0, new(Args).Tensor(out).Tensor(x).U64(2).U64(n), true, true},
	} {
		if c.emuOnly && !onEmulator() {
			continue
		}
		err := f.Launch(c.grid, c.block, c.shared, c.args)
		switch {
		case err == nil:
			t.Errorf("%s: launched", c.name)
		case c.driver && (!errors.As(err, &cudaErr) || cudaErr.Name == ""):
			t.Errorf("%s: %v, want the driver's error", c.name, err)
		default:
			t.Logf("%s: %v", c.name, err)
		}
	}
	// The device still works after refused launches.
	if err := f.Launch(grid, block, 40<<10, good()); err != nil {
		t.Errorf("a good launch with 40 KiB of shared memory: %v", err)
	}
	must(t, b.Synchronize())
}

// Zero clears NaNs too, which Scale by 0 cannot (0 x NaN is NaN), and the
// emulator hands out fresh memory as NaN.
func TestGPUZero(t *testing.T) {
	b := gpuBackend(t)
	g, err := b.alloc(tensor.F32, 3, 257)
	must(t, err)
	defer b.Free(g)
	if onEmulator() {
		for i, v := range hostOf(t, b, g).F32() {
			if !math.IsNaN(float64(v)) {
				t.Fatalf("fresh emulated memory: element %d is %g, want NaN", i, v)
			}
		}
	}
	nan := tensor.New(tensor.F32, 3, 257)
	for i := range nan.F32() {
		nan.F32()[i] = float32(math.NaN())
	}
	must(t, b.Copy(g, nan))
	must(t, b.Zero(g))
	for i, v := range hostOf(t, b, g).F32() {
		if v != 0 || math.Signbit(float64(v)) {
			t.Fatalf("after Zero, element %d is %g", i, v)
		}
	}
	if err := b.Zero(nan); err == nil {
		t.Errorf("Zero of a host tensor: no error")
	}
}

// TestGPUZeroTensors clears tensors of several sizes, a few bytes (no
// whole 16-byte store) to several blocks' worth, and of several dtypes
// in one ZeroTensors launch: every byte of each is zero after it, NaNs
// included, and a tensor left out of the list keeps its values.
func TestGPUZeroTensors(t *testing.T) {
	b := gpuBackend(t)
	rng := newRNG(t)
	var list []*tensor.Tensor
	var kept pair
	for i, shape := range []struct {
		dt   tensor.DType
		dims []int
	}{{tensor.F32, []int{3, 257}}, {tensor.BF16, []int{5}}, {tensor.F16, []int{1, 3}}, {tensor.F32, []int{2000, 9}},
		{tensor.I32, []int{40}}, {tensor.F32, []int{0, 4}}, {tensor.BF16, []int{1024, 33}}} {
		h := tensor.New(shape.dt, shape.dims...)
		for j := range h.Bytes() {
			h.Bytes()[j] = 0xFF // NaN in every float dtype
		}
		list = append(list, toDev(t, b, h))
		if i == 2 {
			kept = input(t, b, rng, tensor.F32, 7, 19)
		}
	}
	must(t, b.ZeroTensors(list))
	for i, d := range list {
		for j, v := range hostOf(t, b, d).Bytes() {
			if v != 0 {
				t.Fatalf("tensor %d, %v: byte %d is %#x after ZeroTensors", i, d, j, v)
			}
		}
	}
	if !slices.Equal(hostOf(t, b, kept.d).F32(), kept.h.F32()) {
		t.Error("a tensor not in the list changed")
	}
	must(t, b.ZeroTensors(nil))
	if err := b.ZeroTensors([]*tensor.Tensor{list[0], tensor.New(tensor.F32, 2)}); err == nil {
		t.Errorf("ZeroTensors with a host tensor: no error")
	}
}

func hostOf(tb testing.TB, b *Backend, d *tensor.Tensor) *tensor.Tensor {
	tb.Helper()
	h, err := b.ToHost(d)
	if err != nil {
		tb.Fatal(err)
	}
	return h
}

// A fault of asynchronous work shows at the next synchronisation, whose
// error names the last work issued. The fault (a GEMM reading past its
// operand) kills the context, as on a GPU, so it is planted in a child
// process; only the emulator survives it to report.
func TestGPUFaultNamesLastWork(t *testing.T) {
	if !onEmulator() {
		t.Skip("plants a memory fault: only on the emulated device")
	}
	if os.Getenv("COMPASS_EMU_PLANT_FAULT") == "1" {
		b := gpuBackend(t)
		x, err := b.alloc(tensor.F32, 4, 4)
		must(t, err)
		c, err := b.alloc(tensor.F32, 4, 4)
		must(t, err)
		xm, _ := x.Device()
		cm, _ := c.Device()
		// A 4 x 4 product whose first operand has a leading dimension of 64.
		p := gemmPlan{m: 4, n: 4, k: 4, lda: 64, ldb: 4, ldc: 4}
		must(t, b.q.(*gpuQueue).blas.gemm(p, cm.Ptr, xm.Ptr, xm.Ptr, tensor.F32, tensor.F32, 1, 0))
		fmt.Printf("synchronize: %v\n", b.Synchronize())
		os.Exit(0)
	}
	if os.Getenv("COMPASS_EMU_PLANT_FAULT") == "kernel" {
		b := gpuBackend(t)
		x, err := b.alloc(tensor.F32, 1024) // a block of exactly 4096 bytes
		must(t, err)
		f := b.q.(*gpuQueue).kern.funcs["elementwise_scale"]
		// 1100 elements of a 1024-element tensor: the kernel writes past it.
		must(t, f.Launch(Dim3{8, 1, 1}, Dim3{256, 1, 1}, 0, new(Args).Tensor(x).Tensor(x).F32(2).U64(1100)))
		fmt.Printf("synchronize: %v\n", b.Synchronize())
		os.Exit(0)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestGPUFaultNamesLastWork$")
	cmd.Env = append(os.Environ(), "COMPASS_EMU_PLANT_FAULT=kernel")
	out, _ := cmd.CombinedOutput()
	if !strings.Contains(string(out), "CUDA_ERROR_ILLEGAL_ADDRESS: kernel elementwise_scale") || !strings.Contains(string(out), "past its end") {
		t.Errorf("a kernel writing past its tensor: the emulator's report is missing; the child's output:\n%s", out)
	}
	cmd = exec.Command(os.Args[0], "-test.run=^TestGPUFaultNamesLastWork$")
	cmd.Env = append(os.Environ(), "COMPASS_EMU_PLANT_FAULT=1")
	out, _ = cmd.CombinedOutput()
	var line string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "synchronize: ") {
			line = l
		}
	}
	if !strings.Contains(line, "CUDA_ERROR_ILLEGAL_ADDRESS") || !strings.Contains(line, "the last work issued: cublasGemmEx") {
		t.Errorf("the child's synchronisation: %q, want CUDA_ERROR_ILLEGAL_ADDRESS naming cublasGemmEx; its output:\n%s", line, out)
	}
	t.Logf("%s", line)
}

// compass score on the device (engine.Score, what `compass score --device
// cuda` runs) gives the CPU's log-probabilities on every tiny variant, from
// a bf16 checkpoint as published: within 3e-2 relative (activations rounded
// to bf16 for the tensor-core GEMMs, as TestGPUModelParity allows).
func TestGPUScore(t *testing.T) {
	b := gpuBackend(t)
	for _, v := range tinyConfigs {
		t.Run(v.name, func(t *testing.T) {
			dir := t.TempDir()
			_, err := model.WriteRandomCheckpoint(dir, []byte(v.config), tensor.BF16, 21)
			must(t, err)
			onCPU, err := model.Load(dir, cpu)
			must(t, err)
			defer onCPU.Close()
			onGPU, err := model.Load(dir, b)
			must(t, err)
			defer onGPU.Close()
			var in strings.Builder
			for line, n := range []int{v.seqLen, 2} {
				batch := randomBatch(onCPU.Config.VocabSize, 1, n, uint64(31+line))
				ids, err := json.Marshal(map[string][]int32{"ids": batch.IDs.I32()})
				must(t, err)
				in.Write(append(ids, '\n'))
			}
			score := func(m *model.Model) []engine.ScoreRecord {
				var out bytes.Buffer
				_, err := engine.Score(context.Background(), m, nil, strings.NewReader(in.String()), &out)
				must(t, err)
				var recs []engine.ScoreRecord
				dec := json.NewDecoder(&out)
				for dec.More() {
					var r engine.ScoreRecord
					must(t, dec.Decode(&r))
					recs = append(recs, r)
				}
				return recs
			}
			want, got := score(onCPU), score(onGPU)
			if len(got) != len(want) || len(got) != 2 {
				t.Fatalf("%d records on the device, %d on the CPU, want 2", len(got), len(want))
			}
			for i := range want {
				if len(got[i].LogProbs) != len(want[i].LogProbs) {
					t.Errorf("line %d: %d log-probs, CPU %d", i+1, len(got[i].LogProbs), len(want[i].LogProbs))
				} else if e := relErr(got[i].LogProbs, want[i].LogProbs); e > 3e-2 {
					t.Errorf("line %d: log-probs relative error %.3g > 3e-2", i+1, e)
				} else {
					t.Logf("line %d (%d tokens): log-probs relative error %.3g; sum %.5g, CPU %.5g", i+1, got[i].Tokens, e, got[i].Sum, want[i].Sum)
				}
			}
		})
	}
}
