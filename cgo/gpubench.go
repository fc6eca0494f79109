package cgo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/compassml/compass/kernels"
	"github.com/compassml/compass/lora"
	"github.com/compassml/compass/model"
	"github.com/compassml/compass/tensor"
)

// The GPU benchmark suite (`compass bench --only gpu`, and BenchmarkGPU for
// go test -tags cuda -bench): each kernel and product on Llama-3.1-8B's
// sizes, timed with device events after a warm-up (the median of five
// measurements), next to the two ceilings measured first in the same run:
// a large device-to-device copy (bytes read plus written) and a large
// cuBLAS bf16 GEMM; and one LoRA training step of Llama-3.1-8B's shapes,
// with a profile of where its device time goes. BenchmarkGPUKernels and
// BenchmarkGPULoRA time the gemm, kernels and lora groups' cases in go
// test's own loop instead.

// benchSizes are the suite's problem sizes: Llama-3.1-8B's layer for 2048
// tokens, or (quick) a small model's for 64, to check the suite runs.
type benchSizes struct {
	N, H, I, Hq, Hkv, D, V, KV int // tokens, hidden, intermediate, heads, kv heads, head dim, vocabulary, kv width
	Layers                     int // layers of adapters AdamW updates
	CopyBytes, GemmM           int // the ceilings' copy and square bf16 GEMM
	KmN, KmD, KmK              int // k-means: points, dimension, centroids
}

var (
	llama8bSizes = benchSizes{N: 2048, H: 4096, I: 14336, Hq: 32, Hkv: 8, D: 128, V: 128256, KV: 1024, Layers: 32, CopyBytes: 1 << 30, GemmM: 8192,
		KmN: 1000000, KmD: 768, KmK: 1024}
	quickSizes = benchSizes{N: 64, H: 256, I: 512, Hq: 4, Hkv: 2, D: 64, V: 1000, KV: 128, Layers: 2, CopyBytes: 1 << 20, GemmM: 256,
		KmN: 300, KmD: 40, KmK: 136}
)

// BenchRecord is one result of RunGPUBenchmarks: metrics by unit ("us",
// "GB/s", "of_copy_bw", "TFLOP/s", "of_bf16_gemm", "tokens/s", ...) and,
// for a profile line, the work it times in Text["work"].
type BenchRecord struct {
	Name    string
	Metrics map[string]float64
	Text    map[string]string
}

// GPUBenchGroups are RunGPUBenchmarks' groups, in the order they run.
var GPUBenchGroups = []string{"ceilings", "gemm", "kernels", "lora", "kmeans", "train-step"}

// RunGPUBenchmarks runs the named groups of the GPU benchmark suite (all
// when groups is empty) on be, calling report with each result as it is
// measured and writing progress to log. llama8bConfig is Llama-3.1-8B's
// config.json, for the training step (skipped, saying so, when it is nil
// or the device has less than 60 GiB free). The ceilings are measured
// first whatever the groups. quick runs every group but the training step
// on small sizes, in seconds, to check the suite itself (results are not
// worth recording). A group that fails does not stop the others: the
// error, once they have run, names each one that did. Once ctx is done the
// suite stops before its next measurement (a time limit on a lent machine
// must leave time to write what was measured): the error says which
// groups were cut short or not run, and wraps ctx's error.
func RunGPUBenchmarks(ctx context.Context, be *Backend, groups []string, llama8bConfig []byte, quick bool, log io.Writer, report func(BenchRecord)) error {
	for _, name := range groups {
		if !slices.Contains(GPUBenchGroups, name) {
			return fmt.Errorf("cuda: gpu bench: unknown group %q (have %s)", name, strings.Join(GPUBenchGroups, ", "))
		}
	}
	if log == nil {
		log = io.Discard
	}
	g := newGPUBench(ctx, be, quick, log, report)
	want := func(name string) bool { return len(groups) == 0 || slices.Contains(groups, name) }
	if err := g.try(func() {
		fmt.Fprintf(log, "gpu bench: %s: ceilings\n", be.DeviceName())
		copyGBs, tflops := g.ceilings()
		if want("ceilings") {
			g.record("copy_dtod", map[string]float64{"GB/s": copyGBs, "bytes": float64(g.sz.CopyBytes)}, nil)
			g.record("cublas_bf16_gemm", map[string]float64{"TFLOP/s": tflops, "M": float64(g.sz.GemmM)}, nil)
		}
	}); err != nil {
		return fmt.Errorf("cuda: gpu bench: ceilings: %w", err) // every other result is a ratio to them
	}
	var steps []benchStep
	for _, s := range []benchStep{
		{"gemm", func() { g.runCases(g.gemmCases()) }}, {"kernels", func() { g.runCases(g.kernelCases()) }},
		{"lora", g.benchLoRA}, {"kmeans", g.benchKMeans},
		{"train-step", func() {
			if quick {
				fmt.Fprintln(log, "gpu bench: train step skipped (quick)")
				return
			}
			g.benchTrainStep(llama8bConfig)
		}},
	} {
		if want(s.name) {
			steps = append(steps, s)
		}
	}
	return g.runSteps(steps)
}

// benchStep is one group of the suite.
type benchStep struct {
	name string
	run  func()
}

// runSteps runs each step, going on past one that fails: device time is
// scarce, and a failing group (a kernel's check, an allocation) should not
// cost the others' results. The error names every step that failed. (An
// error that leaves the device unusable fails the later steps too, each
// saying so.)
func (g *gpuBench) runSteps(steps []benchStep) error {
	var errs []error
	for i, s := range steps {
		if err := g.ctx.Err(); err != nil {
			var left []string
			for _, l := range steps[i:] {
				left = append(left, l.name)
			}
			errs = append(errs, fmt.Errorf("cuda: gpu bench: interrupted (%w): %s not run", err, strings.Join(left, ", ")))
			break
		}
		fmt.Fprintf(g.log, "gpu bench: %s\n", s.name)
		if err := g.try(s.run); err != nil {
			fmt.Fprintf(g.log, "gpu bench: %s failed: %v; going on\n", s.name, err)
			errs = append(errs, fmt.Errorf("cuda: gpu bench: %s: %w", s.name, err))
		}
	}
	return errors.Join(errs...)
}

// newGPUBench starts a run of the suite on be: on Llama-3.1-8B's sizes, or
// the small ones when quick. It measures nothing once ctx is done.
func newGPUBench(ctx context.Context, be *Backend, quick bool, log io.Writer, report func(BenchRecord)) *gpuBench {
	g := &gpuBench{ctx: ctx, be: be, log: log, report: report, sz: llama8bSizes}
	if quick {
		g.sz = quickSizes
	}
	return g
}

// gpuBench is one run of the suite.
type gpuBench struct {
	ctx    context.Context
	be     *Backend
	log    io.Writer
	report func(BenchRecord)
	sz     benchSizes

	copyGBs, bf16TFLOPs float64 // the ceilings, once measured
}

// benchError carries an error out of the suite's code through a panic, so
// that each step reads as a list of operations (as the benchmark functions
// it was written as did with b.Fatal).
type benchError struct{ err error }

func (g *gpuBench) must(err error) {
	if err != nil {
		panic(benchError{err})
	}
}

// stopIfDone ends the piece of the suite running (as g.must does) once
// g.ctx is done.
func (g *gpuBench) stopIfDone() {
	if err := g.ctx.Err(); err != nil {
		g.must(fmt.Errorf("interrupted: %w", err))
	}
}

// try runs fn, a piece of the suite, and returns the error a g.must in it
// ended it with.
func (g *gpuBench) try(fn func()) (err error) {
	defer func() {
		if r := recover(); r != nil {
			e, ok := r.(benchError)
			if !ok {
				panic(r)
			}
			err = e.err
		}
	}()
	fn()
	return nil
}

func (g *gpuBench) record(name string, metrics map[string]float64, text map[string]string) {
	g.report(BenchRecord{Name: name, Metrics: metrics, Text: text})
}

// measure returns the median seconds per call of fn over five timed runs,
// each of enough calls to last at least 20 ms, after three warm-up calls.
// It stops the suite instead once g.ctx is done.
func (g *gpuBench) measure(fn func() error) float64 {
	g.stopIfDone()
	be := g.be
	for i := 0; i < 3; i++ {
		g.must(fn())
	}
	g.must(be.Synchronize())
	start, err := be.Device().NewEvent()
	g.must(err)
	defer start.Destroy()
	end, err := be.Device().NewEvent()
	g.must(err)
	defer end.Destroy()
	timed := func(reps int) float64 {
		g.must(start.Record())
		for i := 0; i < reps; i++ {
			g.must(fn())
		}
		g.must(end.Record())
		g.must(end.Wait())
		ms, err := end.Since(start)
		g.must(err)
		return float64(ms) / 1e3
	}
	reps := 1
	for t := timed(1); t < 0.02 && reps < 1<<16; t = timed(reps) {
		reps *= 4
	}
	var runs []float64
	for i := 0; i < 5; i++ {
		runs = append(runs, timed(reps)/float64(reps))
	}
	slices.Sort(runs)
	return runs[2]
}

// ceilings returns the copy bandwidth (GB/s, read plus written) and the
// cuBLAS bf16 rate (TFLOP/s), measuring them the first time.
func (g *gpuBench) ceilings() (copyGBs, bf16TFLOPs float64) {
	if g.copyGBs > 0 {
		return g.copyGBs, g.bf16TFLOPs
	}
	be := g.be
	n := g.sz.CopyBytes
	src, err := be.alloc(tensor.I32, n/4)
	g.must(err)
	defer be.Free(src)
	dst, err := be.alloc(tensor.I32, n/4)
	g.must(err)
	defer be.Free(dst)
	sm, _ := src.Device()
	dm, _ := dst.Device()
	g.must(be.q.memsetD32(sm.Ptr, 0x3f800001, n/4)) // not zeros
	sec := g.measure(func() error { return be.q.copyDtoD(dm.Ptr, sm.Ptr, n) })
	copyGBs = 2 * float64(n) / sec / 1e9

	m := g.sz.GemmM
	rng := rand.New(rand.NewPCG(1, 1))
	x, w := g.randDevice(rng, tensor.BF16, 1, m, m), g.randDevice(rng, tensor.BF16, 1, m, m)
	defer be.Free(x)
	defer be.Free(w)
	c, err := be.alloc(tensor.BF16, m, m)
	g.must(err)
	defer be.Free(c)
	sec = g.measure(func() error { return be.MatMul(c, x, w, false, true, 1, 0) })
	g.copyGBs, g.bf16TFLOPs = copyGBs, 2*float64(m)*float64(m)*float64(m)/sec/1e12
	return g.copyGBs, g.bf16TFLOPs
}

// toDevice copies a host tensor to the device.
func (g *gpuBench) toDevice(h *tensor.Tensor) *tensor.Tensor {
	d, err := g.be.ToDevice(h)
	g.must(err)
	return d
}

// randDevice is a device tensor of N(0, scale^2) values; beyond 16M
// elements a random block is tiled (drawing billions of normals on the
// host would take longer than the benchmarks).
func (g *gpuBench) randDevice(rng *rand.Rand, dt tensor.DType, scale float64, shape ...int) *tensor.Tensor {
	be := g.be
	const block = 1 << 24
	n := 1
	for _, d := range shape {
		n *= d
	}
	if n <= block {
		return g.toDevice(randHost(rng, dt, scale, shape...))
	}
	t, err := be.alloc(dt, shape...)
	g.must(err)
	src := g.toDevice(randHost(rng, dt, scale, block))
	defer be.Free(src)
	tm, _ := t.Device()
	sm, _ := src.Device()
	for off := 0; off < tm.Bytes; off += sm.Bytes {
		g.must(be.q.copyDtoD(tm.Ptr+uintptr(off), sm.Ptr, min(sm.Bytes, tm.Bytes-off)))
	}
	return t
}

// randHost returns a host tensor of N(0, 1) values (scaled by scale),
// rounded to dt.
func randHost(rng *rand.Rand, dt tensor.DType, scale float64, shape ...int) *tensor.Tensor {
	f := tensor.New(tensor.F32, shape...)
	for i := range f.F32() {
		f.F32()[i] = float32(scale * rng.NormFloat64())
	}
	if dt == tensor.F32 {
		return f
	}
	t := tensor.New(dt, shape...)
	if err := tensor.NewCPU().Copy(t, f); err != nil {
		panic(err) // F32 to a float dtype does not fail
	}
	return t
}

// benchCase is one timed call of the suite's gemm and kernels groups
// (also BenchmarkGPUKernels' sub-benchmarks): setup allocates its
// operands, handing each to keep (the caller frees them after), and
// returns the call to time with the fewest bytes it must move (inputs
// read once, outputs written once) or the FLOPs it must do.
type benchCase struct {
	name  string
	setup func(keep func(...*tensor.Tensor)) (run func() error, bytes, flops float64)
}

// runCases times each case (g.measure) and records its time with its rate
// against the ceilings: GB/s and the share of the copy bandwidth for its
// bytes, TFLOP/s and the share of cuBLAS's bf16 rate for its FLOPs.
func (g *gpuBench) runCases(cases []benchCase) {
	for _, c := range cases {
		func() {
			var held []*tensor.Tensor
			defer func() {
				for _, t := range held {
					g.be.Free(t)
				}
			}()
			run, bytes, flops := c.setup(func(ts ...*tensor.Tensor) { held = append(held, ts...) })
			sec := g.measure(run)
			g.record(c.name, g.rates(sec, bytes, flops), nil)
		}()
	}
}

// rates are the metrics of a call that took sec seconds to move bytes or
// do flops: us, GB/s and of_copy_bw, TFLOP/s and of_bf16_gemm.
func (g *gpuBench) rates(sec, bytes, flops float64) map[string]float64 {
	copyGBs, peak := g.ceilings()
	m := map[string]float64{"us": sec * 1e6}
	if bytes > 0 {
		gbs := bytes / sec / 1e9
		m["GB/s"], m["of_copy_bw"] = gbs, gbs/copyGBs
	}
	if flops > 0 {
		tf := flops / sec / 1e12
		m["TFLOP/s"], m["of_bf16_gemm"] = tf, tf/peak
	}
	return m
}

// gemmCases are cuBLAS's products of a Llama-3.1-8B layer for 2048 tokens
// (x W^T), bf16 inputs, and the mixed f32 x bf16 product the decoder
// issues (its activations are float32).
func (g *gpuBench) gemmCases() []benchCase {
	be, z := g.be, g.sz
	rng := rand.New(rand.NewPCG(2, 2))
	var cases []benchCase
	for _, s := range []struct {
		name    string
		M, K, N int
		x       tensor.DType
	}{
		{"q_proj_bf16", z.N, z.H, z.H, tensor.BF16}, {"kv_proj_bf16", z.N, z.H, z.KV, tensor.BF16},
		{"up_proj_bf16", z.N, z.H, z.I, tensor.BF16}, {"down_proj_bf16", z.N, z.I, z.H, tensor.BF16},
		{"up_proj_f32xbf16", z.N, z.H, z.I, tensor.F32}, {"lm_head_chunk_f32xbf16", z.N, z.H, 2 * z.H, tensor.F32},
	} {
		cases = append(cases, benchCase{"gemm_" + s.name, func(keep func(...*tensor.Tensor)) (func() error, float64, float64) {
			x, w := g.randDevice(rng, s.x, 1, s.M, s.K), g.randDevice(rng, tensor.BF16, 1, s.N, s.K)
			keep(x, w)
			c, err := be.alloc(tensor.F32, s.M, s.N)
			g.must(err)
			keep(c)
			return func() error { return be.MatMul(c, x, w, false, true, 1, 0) }, 0, 2 * float64(s.M) * float64(s.K) * float64(s.N)
		}})
	}
	return cases
}

// kernelCases are each kernel on Llama-3.1-8B sizes (2048 tokens,
// hidden 4096, intermediate 14336, 32 heads of 128, 8 kv heads, vocabulary
// 128256), float32 activations as the decoder keeps them, and reports GB/s
// for the memory-bound ones (the fewest bytes: inputs read once, outputs
// written once) and TFLOP/s for attention and the loss.
func (g *gpuBench) kernelCases() []benchCase {
	be := g.be
	rng := rand.New(rand.NewPCG(3, 3))
	z := g.sz
	N, H, I, Hq, Hkv, D, V := z.N, z.H, z.I, z.Hq, z.Hkv, z.D, z.V
	f32, bf16 := tensor.F32, tensor.BF16
	rnd := func(dt tensor.DType, scale float64, shape ...int) *tensor.Tensor {
		return g.randDevice(rng, dt, scale, shape...)
	}
	n := float64(N * I)
	scale := float32(1 / math.Sqrt(float64(D)))
	// attnBackward makes an attention backward's inputs in dtype dt (the
	// forward run for out and lse) and returns the backward.
	attnBackward := func(dt tensor.DType, keep func(...*tensor.Tensor)) func() error {
		q, k, v := rnd(dt, 1, 1, N, Hq, D), rnd(dt, 1, 1, N, Hkv, D), rnd(dt, 1, 1, N, Hkv, D)
		o, lse := rnd(dt, 1, 1, N, Hq, D), rnd(f32, 1, 1, Hq, N)
		g.must(be.Attention(o, lse, q, k, v, nil, scale))
		dq, dk, dv, d := rnd(dt, 1, 1, N, Hq, D), rnd(dt, 1, 1, N, Hkv, D), rnd(dt, 1, 1, N, Hkv, D), rnd(dt, 1, 1, N, Hq, D)
		keep(q, k, v, o, lse, dq, dk, dv, d)
		return func() error { return be.AttentionBackward(dq, dk, dv, d, q, k, v, nil, o, lse, scale) }
	}
	return []benchCase{
		{"elementwise_add_f32", func(keep func(...*tensor.Tensor)) (func() error, float64, float64) {
			x, y, o := rnd(f32, 1, N, I), rnd(f32, 1, N, I), rnd(f32, 1, N, I)
			keep(x, y, o)
			return func() error { return be.Add(o, x, y) }, 3 * 4 * n, 0
		}},
		// The residual's fused cast in the backward (AddCast, [N, H] as
		// the model adds), and the two launches it replaces.
		{"elementwise_add_f32_cast_bf16_fused", func(keep func(...*tensor.Tensor)) (func() error, float64, float64) {
			x, y, o, c := rnd(f32, 1, N, H), rnd(f32, 1, N, H), rnd(f32, 1, N, H), rnd(bf16, 1, N, H)
			keep(x, y, o, c)
			return func() error { return be.AddCast(o, c, x, y) }, float64(14 * N * H), 0
		}},
		{"elementwise_add_f32_then_cast_bf16", func(keep func(...*tensor.Tensor)) (func() error, float64, float64) {
			x, y, o, c := rnd(f32, 1, N, H), rnd(f32, 1, N, H), rnd(f32, 1, N, H), rnd(bf16, 1, N, H)
			keep(x, y, o, c)
			return func() error { return errors.Join(be.Add(o, x, y), be.Copy(c, o)) }, float64(14 * N * H), 0
		}},
		{"elementwise_cast_f32_to_bf16", func(keep func(...*tensor.Tensor)) (func() error, float64, float64) {
			x, o := rnd(f32, 1, N, I), rnd(bf16, 1, N, I)
			keep(x, o)
			return func() error { return be.Copy(o, x) }, 6 * n, 0
		}},
		{"swiglu_forward_f32", func(keep func(...*tensor.Tensor)) (func() error, float64, float64) {
			gt, u, o := rnd(f32, 1, N, I), rnd(f32, 1, N, I), rnd(f32, 1, N, I)
			keep(gt, u, o)
			return func() error { return be.SwiGLU(o, gt, u) }, 3 * 4 * n, 0
		}},
		// What the model runs for bf16 weights (model.inputDType): the
		// output written in bf16 only, the input of the down product and
		// its adapter.
		{"swiglu_forward_f32_to_bf16", func(keep func(...*tensor.Tensor)) (func() error, float64, float64) {
			gt, u, o := rnd(f32, 1, N, I), rnd(f32, 1, N, I), rnd(bf16, 1, N, I)
			keep(gt, u, o)
			return func() error { return be.SwiGLU(o, gt, u) }, 10 * n, 0
		}},
		{"swiglu_backward_f32", func(keep func(...*tensor.Tensor)) (func() error, float64, float64) {
			gt, u, d, dg, du := rnd(f32, 1, N, I), rnd(f32, 1, N, I), rnd(f32, 1, N, I), rnd(f32, 1, N, I), rnd(f32, 1, N, I)
			keep(gt, u, d, dg, du)
			return func() error { return be.SwiGLUBackward(dg, du, d, gt, u) }, 5 * 4 * n, 0
		}},
		// The backward's fused casts (dgate and dup for the gate and up
		// products), and the three launches they replace.
		{"swiglu_backward_f32_cast_bf16_fused", func(keep func(...*tensor.Tensor)) (func() error, float64, float64) {
			gt, u, d, dg, du := rnd(f32, 1, N, I), rnd(f32, 1, N, I), rnd(f32, 1, N, I), rnd(f32, 1, N, I), rnd(f32, 1, N, I)
			gc, uc := rnd(bf16, 1, N, I), rnd(bf16, 1, N, I)
			keep(gt, u, d, dg, du, gc, uc)
			return func() error { return be.SwiGLUBackwardCast(dg, du, gc, uc, d, gt, u) }, 24 * n, 0
		}},
		{"swiglu_backward_f32_then_cast_bf16", func(keep func(...*tensor.Tensor)) (func() error, float64, float64) {
			gt, u, d, dg, du := rnd(f32, 1, N, I), rnd(f32, 1, N, I), rnd(f32, 1, N, I), rnd(f32, 1, N, I), rnd(f32, 1, N, I)
			gc, uc := rnd(bf16, 1, N, I), rnd(bf16, 1, N, I)
			keep(gt, u, d, dg, du, gc, uc)
			return func() error {
				return errors.Join(be.SwiGLUBackward(dg, du, d, gt, u), be.Copy(gc, dg), be.Copy(uc, du))
			}, 24 * n, 0
		}},
		{"rmsnorm_forward_f32", func(keep func(...*tensor.Tensor)) (func() error, float64, float64) {
			x, w, rstd, o := rnd(f32, 1, N, H), rnd(bf16, 1, H), rnd(f32, 1, N), rnd(f32, 1, N, H)
			keep(x, w, rstd, o)
			return func() error { return be.RMSNorm(o, rstd, x, w, 1e-5) }, float64(2*4*N*H + 2*H + 4*N), 0
		}},
		// What the model runs for bf16 weights: n1 and n2 in bf16 only.
		{"rmsnorm_forward_f32_to_bf16", func(keep func(...*tensor.Tensor)) (func() error, float64, float64) {
			x, w, rstd, o := rnd(f32, 1, N, H), rnd(bf16, 1, H), rnd(f32, 1, N), rnd(bf16, 1, N, H)
			keep(x, w, rstd, o)
			return func() error { return be.RMSNorm(o, rstd, x, w, 1e-5) }, float64(6*N*H + 2*H + 4*N), 0
		}},
		{"rmsnorm_backward_f32", func(keep func(...*tensor.Tensor)) (func() error, float64, float64) {
			x, w, rstd, d, dx := rnd(f32, 1, N, H), rnd(bf16, 1, H), rnd(f32, 1, N), rnd(f32, 1, N, H), rnd(f32, 1, N, H)
			keep(x, w, rstd, d, dx)
			return func() error { return be.RMSNormBackward(dx, d, x, w, rstd) }, float64(3*4*N*H + 2*H + 4*N), 0
		}},
		{"rope_f32_in_place", func(keep func(...*tensor.Tensor)) (func() error, float64, float64) {
			q, cos, sin := rnd(f32, 1, N, Hq, D), rnd(f32, 1, N, D/2), rnd(f32, 1, N, D/2)
			keep(q, cos, sin)
			return func() error { return be.RoPE(q, q, cos, sin, false) }, float64(2*4*N*Hq*D + 2*4*N*D/2), 0
		}},
		// q and k as the model rotates them for bf16 attention tensors: the
		// float32 projections into bf16, in one launch (RoPEPair).
		{"rope_pair_f32_to_bf16", func(keep func(...*tensor.Tensor)) (func() error, float64, float64) {
			q, k, cos, sin := rnd(f32, 1, N, Hq, D), rnd(f32, 1, N, Hkv, D), rnd(f32, 1, N, D/2), rnd(f32, 1, N, D/2)
			qo, ko := rnd(bf16, 1, N, Hq, D), rnd(bf16, 1, N, Hkv, D)
			keep(q, k, cos, sin, qo, ko)
			return func() error { return be.RoPEPair(qo, ko, q, k, cos, sin, false) }, float64(6*N*(Hq+Hkv)*D + 2*4*N*D/2), 0
		}},
		// RoPE's inverse in the backward: the attention's bf16 dq and dk
		// into float32 for the LoRA products and bf16 for the frozen
		// ones, in one launch (RoPEPairCast).
		{"rope_pair_inverse_bf16_to_f32_cast_bf16_fused", func(keep func(...*tensor.Tensor)) (func() error, float64, float64) {
			q, k, cos, sin := rnd(bf16, 1, N, Hq, D), rnd(bf16, 1, N, Hkv, D), rnd(f32, 1, N, D/2), rnd(f32, 1, N, D/2)
			qo, ko, qc, kc := rnd(f32, 1, N, Hq, D), rnd(f32, 1, N, Hkv, D), rnd(bf16, 1, N, Hq, D), rnd(bf16, 1, N, Hkv, D)
			keep(q, k, cos, sin, qo, ko, qc, kc)
			return func() error { return be.RoPEPairCast(qo, ko, qc, kc, q, k, cos, sin, true) }, float64(8*N*(Hq+Hkv)*D + 2*4*N*D/2), 0
		}},
		{"embedding_bf16_to_f32", func(keep func(...*tensor.Tensor)) (func() error, float64, float64) {
			idv := make([]int32, N)
			for i := range idv {
				idv[i] = int32(rng.IntN(V))
			}
			ih, _ := tensor.FromI32(idv, N)
			ids, table, out := g.toDevice(ih), rnd(bf16, 1, V, H), rnd(f32, 1, N, H)
			keep(ids, table, out)
			return func() error { return be.Embedding(out, table, ids) }, float64((2 + 4) * N * H), 0
		}},
		// The float32 kernels of attention.cu (Precise mode).
		{"attention_forward_f32_precise", func(keep func(...*tensor.Tensor)) (func() error, float64, float64) {
			q, k, v := rnd(f32, 1, 1, N, Hq, D), rnd(f32, 1, 1, N, Hkv, D), rnd(f32, 1, 1, N, Hkv, D)
			o, lse := rnd(f32, 1, 1, N, Hq, D), rnd(f32, 1, 1, Hq, N)
			keep(q, k, v, o, lse)
			return func() error { return preciseDo(be, func() error { return be.Attention(o, lse, q, k, v, nil, scale) }) }, 0, float64(2 * Hq * N * N * D)
		}},
		{"attention_backward_f32_precise", func(keep func(...*tensor.Tensor)) (func() error, float64, float64) {
			run := attnBackward(f32, keep)
			return func() error { return preciseDo(be, run) }, 0, float64(5 * Hq * N * N * D)
		}},
		// float32 tensors in the default mode: rounded to bf16 for the
		// tensor-core kernels and widened back (roundAttention), as the
		// decoder's training step runs them.
		{"attention_forward_f32_rounded", func(keep func(...*tensor.Tensor)) (func() error, float64, float64) {
			q, k, v := rnd(f32, 1, 1, N, Hq, D), rnd(f32, 1, 1, N, Hkv, D), rnd(f32, 1, 1, N, Hkv, D)
			o, lse := rnd(f32, 1, 1, N, Hq, D), rnd(f32, 1, 1, Hq, N)
			keep(q, k, v, o, lse)
			return func() error { return be.Attention(o, lse, q, k, v, nil, scale) }, 0, float64(2 * Hq * N * N * D)
		}},
		{"attention_backward_f32_rounded", func(keep func(...*tensor.Tensor)) (func() error, float64, float64) {
			return attnBackward(f32, keep), 0, float64(5 * Hq * N * N * D)
		}},
		{"attention_forward_bf16_tc", func(keep func(...*tensor.Tensor)) (func() error, float64, float64) {
			// bf16 q, k, v and out: the tensor-core kernel (attention_tc.cu).
			q, k, v := rnd(bf16, 1, 1, N, Hq, D), rnd(bf16, 1, 1, N, Hkv, D), rnd(bf16, 1, 1, N, Hkv, D)
			o, lse := rnd(bf16, 1, 1, N, Hq, D), rnd(f32, 1, 1, Hq, N)
			keep(q, k, v, o, lse)
			return func() error { return be.Attention(o, lse, q, k, v, nil, scale) }, 0, float64(2 * Hq * N * N * D)
		}},
		{"attention_backward_bf16_tc", func(keep func(...*tensor.Tensor)) (func() error, float64, float64) {
			return attnBackward(bf16, keep), 0, float64(5 * Hq * N * N * D)
		}},
		{"attention_backward_bf16_tc_group_blocks", func(keep func(...*tensor.Tensor)) (func() error, float64, float64) {
			// The same with a kv head's query heads per block of the dk/dv
			// kernel (the layout before dkdvPerHead, which at this shape
			// picks one head per block): what that choice is worth.
			return withKnob(&be.dkdvGroupBlocks, attnBackward(bf16, keep)), 0, float64(5 * Hq * N * N * D)
		}},
		{"attention_backward_bf16_tc_dq_recomputed", func(keep func(...*tensor.Tensor)) (func() error, float64, float64) {
			// The same with dq's S and dP recomputed (attention_tc_backward_dq)
			// instead of read from the dS the dk/dv kernel writes
			// (attentionDS): what the scratch is worth.
			return withKnob(&be.attentionRecomputeDQ, attnBackward(bf16, keep)), 0, float64(5 * Hq * N * N * D)
		}},
		{"cross_entropy_f32xbf16_with_dh", func(keep func(...*tensor.Tensor)) (func() error, float64, float64) {
			lv := make([]int32, N)
			for i := range lv {
				lv[i] = int32(rng.IntN(V))
			}
			lh, _ := tensor.FromI32(lv, N)
			h, w, labels, lp, dh := rnd(f32, 1, N, H), rnd(bf16, 0.02, V, H), g.toDevice(lh), rnd(f32, 1, N), rnd(f32, 1, N, H)
			keep(h, w, labels, lp, dh)
			return func() error { return be.CrossEntropy(lp, dh, h, w, labels, 0, 1/float32(N)) }, 0, 4 * float64(N) * float64(V) * float64(H)
		}},
		{"adamw_lora_8b_r16", func(keep func(...*tensor.Tensor)) (func() error, float64, float64) {
			// Llama-3.1-8B, r = 16 on all seven projections: 448 tensors.
			ins := []int{H, H, H, H, H, H, I}
			outs := []int{H, z.KV, z.KV, H, I, I, H}
			var ps, gs, ms, vs []*tensor.Tensor
			total := 0
			for l := 0; l < z.Layers; l++ {
				for j := range ins {
					for _, shape := range [][]int{{16, ins[j]}, {outs[j], 16}} {
						ps, gs = append(ps, rnd(f32, 0.01, shape...)), append(gs, rnd(f32, 0.01, shape...))
						ms, vs = append(ms, rnd(f32, 0.01, shape...)), append(vs, rnd(f32, 0.01, shape...))
						total += shape[0] * shape[1]
					}
				}
			}
			for i := range vs {
				g.must(be.Mul(vs[i], vs[i], vs[i])) // the second moment is not negative
			}
			keep(ps...)
			keep(gs...)
			keep(ms...)
			keep(vs...)
			// p, g, m, v read; p, m, v written.
			return func() error { return be.AdamW(ps, gs, ms, vs, 10, 1e-4, 0.9, 0.999, 1e-8, 0.01) }, 7 * 4 * float64(total), 0
		}},
	}
}

// withKnob returns run with the backend knob set for its duration.
func withKnob(knob *bool, run func() error) func() error {
	return func() error {
		*knob = true
		defer func() { *knob = false }()
		return run()
	}
}

// benchLoRA times, for the adapters of each input of a Llama-3.1-8B layer
// (2048 tokens, r = 16, float32 adapters), the LoRA products of a training
// step as the model issues them (loraSet), with the activations in the
// dtypes the model's bf16 step has them in: every input bf16 (n1, the
// attention output, n2, the SwiGLU output: model.inputDType), and v's
// gradient bf16 (the attention's backward writes dv so). Each time is set
// against the fewest bytes the products must move at the copy bandwidth
// measured in the same run; against the same products as the model's
// cuBLAS variant runs them (the bf16 operands widened into float32 copies,
// then MatMul: cublas_us, kernels_speedup; and each kind alone: t_us and
// t_cublas_us and so on, each with the share of the copy bandwidth its
// large operand's bytes take); and against the products as the model
// issued them before the stacking, with float32 activations (one adapter
// at a time, t = x A^T [N, r], all on cuBLAS: before_us, speedup). For
// the split sums, t_splits4_us and so on time t, dA, and the first
// adapter's dt and dB with the sum in 1, 4 and 16 chunks (t_splits is the
// count narrowSplits or gradSplits chooses, which t_us times). The same
// inputs with float32 activations (as a float32 model's step has them)
// are lora_<input>_f32: us, cublas_us, kernels_speedup. (thin.cu,
// float32 CUDA-core kernels shaped for the rank-16 side, measured
// 0.80-1.02x of cuBLAS on an H200 and was taken out:
// bench/results/2026-12-04-h200-device-check-5.md.)
func (g *gpuBench) benchLoRA() {
	rng := rand.New(rand.NewPCG(4, 4))
	copyGBs, _ := g.ceilings()
	for _, in := range g.loraInputs() {
		func() {
			set := g.newLoRASet(rng, in, true)
			defer set.free()
			sec, cublas := g.measure(func() error { return set.asModel(true) }), g.measure(func() error { return set.asModel(false) })
			old := g.measure(set.before)
			m := g.rates(sec, set.bytes, 0)
			m["before_us"], m["speedup"], m["cublas_us"], m["kernels_speedup"] = old*1e6, old/sec, cublas*1e6, cublas/sec
			for _, p := range set.products {
				on, off := g.measure(func() error { return p.run(true) }), g.measure(func() error { return p.run(false) })
				m[p.name+"_us"], m[p.name+"_cublas_us"] = on*1e6, off*1e6
				m[p.name+"_of_copy_bw"] = p.bytes / on / 1e9 / copyGBs
			}
			for _, sw := range set.sweeps {
				m[sw.name+"_splits"] = float64(sw.count(sw.chosen))
				for _, splits := range []int{1, 4, 16} {
					key := fmt.Sprintf("%s_splits%d_us", sw.name, sw.count(splits))
					if _, done := m[key]; !done {
						m[key] = g.measure(func() error { return sw.run(splits) }) * 1e6
					}
				}
			}
			g.record("lora_"+in.name, m, nil)
		}()
		func() {
			set := g.newLoRASet(rng, in, false)
			defer set.free()
			sec, cublas := g.measure(func() error { return set.asModel(true) }), g.measure(func() error { return set.asModel(false) })
			g.record("lora_"+in.name+"_f32", map[string]float64{"us": sec * 1e6, "cublas_us": cublas * 1e6, "kernels_speedup": cublas / sec}, nil)
		}()
	}
}

// loraInput is one input of a layer, the output widths of the adapted
// projections that read it, and which of those outputs' gradients the
// model's bf16 step has in bf16.
type loraInput struct {
	name   string
	in     int
	outs   []int
	bf16Dy []bool
}

// loraInputs are a Llama-3.1-8B layer's four inputs (at the suite's sizes).
func (g *gpuBench) loraInputs() []loraInput {
	z := g.sz
	return []loraInput{{"qkv", z.H, []int{z.H, z.KV, z.KV}, []bool{false, false, true}}, {"o_proj", z.H, []int{z.H}, nil},
		{"gate_up", z.H, []int{z.I, z.I}, nil}, {"down_proj", z.I, []int{z.H}, nil}}
}

// loraSet is the LoRA products of one layer input's adapters (r = 16,
// scaling 2, float32 adapters), on operands of the suite's sizes made by
// newLoRASet, as the model runs them (linearForward and groupBackward in
// package model): t = A x^T kept transposed [r, N], y = s t^T B^T;
// backward dB += s dy^T t^T, dt = s B^T dy^T, dA += dt x, dx = dt^T A,
// stacked where several adapters read one input (q, k and v; gate and up:
// one t, one dA and one dx product for the group). With on, t and dt go
// through NarrowMatMul (lora_narrow), dA and dB through GradMatMul
// (lora_grad), y and dx through ExpandMatMul (lora_expand); without, the
// same calls with the LoRA kernels off (loraKernelsOff, as the training
// step's cuBLAS variant): MatMul, a bf16 operand widened first.
type loraSet struct {
	asModel  func(on bool) error // all six kinds, in the model's order
	before   func() error        // as the model ran them before the stacking: one adapter at a time, t = x A^T [N, r], float32, on cuBLAS
	products []loraProduct       // each kind alone
	sweeps   []loraSweep         // t, dA, and the first adapter's dt and dB, the sum split as asked
	bytes    float64             // the fewest bytes asModel moves
	free     func()
}

// loraProduct is one kind of the set's products (t, y, dt, dB, dA or dx)
// with the bytes of the large operand it reads or writes (x, each dy,
// each y, dx).
type loraProduct struct {
	name  string
	run   func(on bool) error
	bytes float64
}

// loraSweep is one product on the LoRA kernels with its sum split into a
// given number of chunks (at most): chosen is the count the backend picks,
// count the count a request gives.
type loraSweep struct {
	name   string
	run    func(splits int) error
	count  func(splits int) int
	chosen int
}

// newLoRASet allocates in's adapters and operands (random) and returns
// their products: with bf16, the activations in the dtypes of the model's
// bf16 step (loraInput); else all float32.
func (g *gpuBench) newLoRASet(rng *rand.Rand, in loraInput, bf16 bool) *loraSet {
	be := g.be
	N, r, s := g.sz.N, 16, float32(2.0)
	var all []*tensor.Tensor
	set := &loraSet{free: func() {
		for _, x := range all {
			be.Free(x)
		}
	}}
	rnd := func(shape ...int) *tensor.Tensor {
		t := g.randDevice(rng, tensor.F32, 0.1, shape...)
		all = append(all, t)
		return t
	}
	narrowed := func(t *tensor.Tensor, to bool) *tensor.Tensor { // t, or a bf16 copy
		if !to {
			return t
		}
		c, err := be.alloc(tensor.BF16, t.Shape()...)
		g.must(err)
		all = append(all, c)
		g.must(be.cast(c, t))
		return c
	}
	n := len(in.outs)
	x32, dx := rnd(N, in.in), rnd(N, in.in)
	x := narrowed(x32, bf16)
	A, dA, t, dt := rnd(n*r, in.in), rnd(n*r, in.in), rnd(n*r, N), rnd(n*r, N) // stacked
	var B, dB, y, dy, dy32 []*tensor.Tensor
	outs, dyBytes := 0, 0.0
	for i, out := range in.outs {
		d := rnd(N, out)
		B, dB, y, dy32 = append(B, rnd(out, r)), append(dB, rnd(out, r)), append(y, rnd(N, out)), append(dy32, d)
		dy = append(dy, narrowed(d, bf16 && in.bf16Dy != nil && in.bf16Dy[i]))
		outs += out
		dyBytes += float64(N * out * dy[i].DType().Size())
	}
	rows := func(t *tensor.Tensor, i int) *tensor.Tensor { // adapter i's rows
		v, err := t.Slice(i*r, (i+1)*r)
		g.must(err)
		return v
	}
	// onKernels runs f with the LoRA kernels on, or off (the cuBLAS variant).
	onKernels := func(on bool, f func() error) error {
		if on {
			return f()
		}
		return withKnob(&be.loraKernelsOff, f)()
	}
	narrow := func(on bool, c, p, q *tensor.Tensor, transP bool, alpha float32) error {
		return onKernels(on, func() error { return be.NarrowMatMul(c, p, q, transP, alpha, 0) })
	}
	grad := func(on bool, c, p, q *tensor.Tensor, transC bool, alpha float32) error {
		return onKernels(on, func() error { return be.GradMatMul(c, p, q, transC, alpha, 1) })
	}
	expand := func(on bool, c, p, w *tensor.Tensor, transW bool, alpha float32) error {
		return onKernels(on, func() error { return be.ExpandMatMul(c, p, w, transW, alpha, 0) })
	}
	each := func(f func(i int) error) error {
		var errs []error
		for i := range n {
			errs = append(errs, f(i))
		}
		return errors.Join(errs...)
	}
	tOut, tA := t, A // one adapter: its own rows, as the model's unstacked slot
	if n == 1 {
		tOut, tA = rows(t, 0), rows(A, 0)
	}
	tProduct := func(on bool) error { return narrow(on, tOut, tA, x, false, 1) }
	yProducts := func(on bool) error {
		return each(func(i int) error { return expand(on, y[i], rows(t, i), B[i], true, s) })
	}
	dtProducts := func(on bool) error {
		return each(func(i int) error { return narrow(on, rows(dt, i), B[i], dy[i], true, s) })
	}
	dBProducts := func(on bool) error {
		return each(func(i int) error { return grad(on, dB[i], rows(t, i), dy[i], true, s) })
	}
	dAProduct := func(on bool) error { return grad(on, dA, dt, x, false, 1) }
	dxProduct := func(on bool) error { return expand(on, dx, dt, A, false, 1) }
	set.asModel = func(on bool) error {
		var errs []error
		do := func(err error) { errs = append(errs, err) }
		do(tProduct(on))
		do(yProducts(on))
		for i := range n {
			do(grad(on, dB[i], rows(t, i), dy[i], true, s))
			do(narrow(on, rows(dt, i), B[i], dy[i], true, s))
		}
		do(dAProduct(on))
		do(dxProduct(on))
		return errors.Join(errs...)
	}
	var tr, dtr []*tensor.Tensor
	for range n {
		tr, dtr = append(tr, rnd(N, r)), append(dtr, rnd(N, r))
	}
	set.before = func() error {
		var errs []error
		do := func(err error) { errs = append(errs, err) }
		for i := range n {
			do(be.MatMul(tr[i], x32, rows(A, i), false, true, 1, 0))
			do(be.MatMul(y[i], tr[i], B[i], false, true, s, 0))
		}
		for i := range n {
			do(be.MatMul(dB[i], dy32[i], tr[i], true, false, s, 1))
			do(be.MatMul(dtr[i], dy32[i], B[i], false, false, s, 0))
			do(be.MatMul(rows(dA, i), dtr[i], x32, true, false, 1, 1))
			do(be.MatMul(dx, dtr[i], rows(A, i), false, false, 1, float32(min(i, 1))))
		}
		return errors.Join(errs...)
	}
	// Fewest bytes: x twice (t, dA), each y written, each dy twice (dB,
	// dt), dx written, the adapters and their gradients.
	xBytes := float64(N * in.in * x.DType().Size())
	set.bytes = 2*xBytes + 2*dyBytes + 4*float64(N*in.in+N*outs+3*n*r*in.in+3*r*outs)
	set.products = []loraProduct{{"t", tProduct, xBytes}, {"y", yProducts, 4 * float64(N*outs)},
		{"dt", dtProducts, dyBytes}, {"dB", dBProducts, dyBytes},
		{"dA", dAProduct, xBytes}, {"dx", dxProduct, 4 * float64(N*in.in)}}

	// count asks loraChunks, as the launch does, how many chunks a request
	// for splits gives.
	count := func(kernel string, q *tensor.Tensor, terms int, sizes kernels.Sizes, stage int) func(splits int) int {
		return func(splits int) int {
			sizes.Splits = splits
			_, k, err := be.loraChunks(loraKernel(kernel, q), terms, sizes, stage)
			g.must(err)
			return k
		}
	}
	narrowSweep := func(name string, c, p, q *tensor.Tensor, transP bool, alpha float32) loraSweep {
		Rc, N, K := c.Dim(0), q.Dim(0), q.Dim(1)
		return loraSweep{name: name, chosen: be.narrowSplits(Rc, N, K),
			run:   func(splits int) error { return be.narrowMatMul(c, p, q, transP, alpha, 0, splits) },
			count: count("lora_narrow", q, K, kernels.Sizes{M: Rc, Cols: N}, kernels.LoRANarrowDepth)}
	}
	gradSweep := func(name string, c, p, q *tensor.Tensor, transC bool, alpha float32) loraSweep {
		Rp, N, M := p.Dim(0), p.Dim(1), q.Dim(1)
		return loraSweep{name: name, chosen: be.gradSplits(Rp, M, N),
			run:   func(splits int) error { return be.gradMatMul(c, p, q, transC, alpha, 1, splits) },
			count: count("lora_grad", q, N, kernels.Sizes{M: Rp, Cols: M}, kernels.LoRAGradTokens)}
	}
	set.sweeps = []loraSweep{narrowSweep("t", tOut, tA, x, false, 1), gradSweep("dA", dA, dt, x, false, 1),
		narrowSweep("dt", rows(dt, 0), B[0], dy[0], true, s), gradSweep("dB", dB[0], rows(t, 0), dy[0], true, s)}
	return set
}

// benchKMeans times one Lloyd iteration of k-means on 1M points of 768
// dimensions into 1024 clusters (the COMPASS clustering's shape at scale):
// the assignment on the tensor cores with bf16 points (used in place) and
// with float32 points (split in two per call, the split included, and
// prepared once by KMeansAssigner, as the clustering's loop runs it), the
// float32 FMA kernel on the float32 points, and the update. The assignments
// report their rate against the cuBLAS bf16 ceiling (2 N K D FLOPs) and
// the share of points the tensor-core kernels assign as the float32 one
// does.
func (g *gpuBench) benchKMeans() {
	be, z := g.be, g.sz
	rng := rand.New(rand.NewPCG(5, 5))
	N, D, K := z.KmN, z.KmD, z.KmK
	x32 := g.randDevice(rng, tensor.F32, 1, N, D)
	defer be.Free(x32)
	x16 := g.randDevice(rng, tensor.BF16, 1, N, D)
	defer be.Free(x16)
	c := g.toDevice(randHost(rng, tensor.F32, 1, K, D))
	defer be.Free(c)
	assign, err := be.alloc(tensor.I32, N)
	g.must(err)
	defer be.Free(assign)
	dist, err := be.alloc(tensor.F32, N)
	g.must(err)
	defer be.Free(dist)
	counts, err := be.alloc(tensor.I32, K)
	g.must(err)
	defer be.Free(counts)
	labels := func(x *tensor.Tensor, f func(assign, dist, x, c *tensor.Tensor) error) []int32 {
		g.must(f(assign, dist, x, c))
		h, err := be.ToHost(assign)
		g.must(err)
		return h.I32()
	}
	same := func(a, b []int32) float64 {
		n := 0
		for i := range a {
			if a[i] == b[i] {
				n++
			}
		}
		return float64(n) / float64(len(a))
	}
	ref32, ref16 := labels(x32, be.kmeansAssignF32), labels(x16, be.kmeansAssignF32)
	prepared, free, err := be.KMeansAssigner(x32) // split once, as the Lloyd loop does
	g.must(err)
	defer free()
	assignPrepared := func(assign, dist, _, c *tensor.Tensor) error { return prepared(assign, dist, c) }
	_, tflops := g.ceilings()
	flops := 2 * float64(N) * float64(K) * float64(D)
	for _, cs := range []struct {
		name string
		x    *tensor.Tensor
		f    func(assign, dist, x, c *tensor.Tensor) error
		ref  []int32
	}{
		{"kmeans_assign_tc_bf16", x16, be.KMeansAssign, ref16},
		{"kmeans_assign_tc_f32", x32, be.KMeansAssign, ref32},
		{"kmeans_assign_tc_f32_prepared", x32, assignPrepared, ref32},
		{"kmeans_assign_fma_f32", x32, be.kmeansAssignF32, ref32},
	} {
		agree := same(labels(cs.x, cs.f), cs.ref)
		sec := g.measure(func() error { return cs.f(assign, dist, cs.x, c) })
		g.record(cs.name, map[string]float64{"us": sec * 1e6, "TFLOP/s": flops / sec / 1e12,
			"of_bf16_gemm": flops / sec / 1e12 / tflops, "same_as_fma": agree,
			"N": float64(N), "D": float64(D), "K": float64(K)}, nil)
	}
	// The update from the last assignment (float32 points), restoring the
	// centroids after each call so that every call does the same work.
	g.must(be.kmeansAssignF32(assign, dist, x32, c))
	c0, err := be.alloc(tensor.F32, K, D)
	g.must(err)
	defer be.Free(c0)
	g.must(be.Copy(c0, c))
	sec := g.measure(func() error {
		if err := be.Copy(c, c0); err != nil {
			return err
		}
		return be.KMeansUpdate(c, counts, x32, assign)
	})
	g.record("kmeans_update_f32", map[string]float64{"us": sec * 1e6, "N": float64(N), "D": float64(D), "K": float64(K)}, nil)
}

// benchTrainStep times one LoRA training step (forward, fused
// loss, backward, AdamW; r = 16 on all seven projections, batch 1 x 2048
// tokens) of a model with Llama-3.1-8B's exact config and random bf16
// weights built in device memory (no checkpoint on disk), and reports
// tokens/s, the model FLOP utilisation and the allocator's peak memory.
//
// FLOPs per step: the base weights are frozen, so the backward computes
// activation gradients only: 2 N P forward plus 2 N P backward over the P
// matrix parameters (lm_head included), attention 2 Hq T^2 D forward
// (causal: half the scores) and 5 Hq T^2 D backward, and the LoRA products
// 2 N r (in + out) forward and twice that backward per adapter. MFU is that
// over the step time, against the bf16 dense peak of the datasheet (989
// TFLOP/s on H100 and H200 SXM) and against the cuBLAS bf16 rate measured
// in the same run.
func (g *gpuBench) benchTrainStep(configJSON []byte) {
	be := g.be
	if configJSON == nil {
		fmt.Fprintln(g.log, "gpu bench: train step skipped: no llama-3.1-8b.json")
		return
	}
	cfg, err := model.ParseConfig(configJSON)
	g.must(err)
	g.must(be.Trim()) // the earlier benchmarks' cached blocks
	free, _, err := be.Device().MemInfo()
	g.must(err)
	if free < 60<<30 {
		fmt.Fprintf(g.log, "gpu bench: train step skipped: %d GiB free on the device, the step needs about 45\n", free>>30)
		return
	}

	// Weights like model.WriteRandomCheckpoint's, built on the device.
	rng := rand.New(rand.NewPCG(5, 5))
	before := be.InUseBytes()
	m, held, err := randomDeviceModel(be, cfg, rng, 32<<20)
	g.must(err)
	defer func() { // the model has no Free
		for _, t := range held {
			be.Free(t)
		}
	}()
	weights := be.InUseBytes() - before

	params, grads, m1, m2, err := attachTrainingAdapter(be, m, 16)
	g.must(err)
	loraParams := 0
	for i, p := range params {
		held = append(held, p, grads[i], m1[i], m2[i])
		loraParams += p.NumElements()
	}

	const T = 2048
	ids, labels := make([]int32, T), make([]int32, T)
	for i := range ids {
		ids[i] = int32(rng.IntN(cfg.VocabSize))
	}
	for i := range labels {
		labels[i] = model.IgnoreIndex
		if i < T-1 {
			labels[i] = ids[i+1]
		}
	}
	idT, _ := tensor.FromI32(ids, 1, T)
	labT, _ := tensor.FromI32(labels, 1, T)
	batch := model.Batch{IDs: idT, Labels: labT}
	step := 0
	trainStep := func() (float64, error) {
		if err := m.ZeroLoRAGrads(); err != nil {
			return 0, err
		}
		out, err := m.ForwardBackward(batch)
		if err != nil {
			return 0, err
		}
		step++
		if err := be.AdamW(params, grads, m1, m2, step, 1e-4, 0.9, 0.999, 1e-8, 0.01); err != nil {
			return 0, err
		}
		return out.Loss, be.Synchronize()
	}

	// FLOPs of a step (see above).
	c := cfg
	Q, KV := c.NumAttentionHeads*c.HeadDim, c.NumKeyValueHeads*c.HeadDim
	perLayer := float64(c.HiddenSize*Q + 2*c.HiddenSize*KV + Q*c.HiddenSize + 3*c.HiddenSize*c.IntermediateSize)
	P := float64(c.NumHiddenLayers)*perLayer + float64(c.VocabSize*c.HiddenSize)
	attn := float64(c.NumHiddenLayers) * float64(c.NumAttentionHeads) * float64(T) * float64(T) * float64(c.HeadDim)
	flops := 4*T*P + 7*attn + 6*T*float64(loraParams)

	loss, err := trainStep() // warm-up: JIT, cuBLAS heuristics, allocator caches
	g.must(err)
	fmt.Fprintf(g.log, "gpu bench: train step: warm-up loss %.4f; weights %.2f GiB, %d LoRA parameters\n", loss, float64(weights)/(1<<30), loraParams)
	// median3 is the median wall time of three steps.
	median3 := func() float64 {
		var times []float64
		for i := 0; i < 3; i++ {
			g.stopIfDone()
			start := time.Now()
			_, err := trainStep()
			g.must(err)
			times = append(times, time.Since(start).Seconds())
		}
		slices.Sort(times)
		return times[1]
	}
	be.ResetPeak()
	sec := median3()
	_, peak := g.ceilings()
	tf := flops / sec / 1e12
	g.record("train_step_llama31_8b_r16_seq2048", map[string]float64{
		"s/step": sec, "tokens/s": T / sec, "TFLOP/s": tf,
		"MFU_datasheet": tf / 989, "MFU_of_cublas_bf16": tf / peak,
		"peak_GiB": float64(be.PeakBytes()) / (1 << 30), "weights_GiB": float64(weights) / (1 << 30),
		"flops_per_step": flops, "loss": loss,
	}, nil)
	// One more step with every piece of device work timed: where the
	// step's time goes, kernel by kernel and product by product.
	g.must(be.StartProfile())
	_, err = trainStep()
	g.must(err)
	lines, err := be.StopProfile()
	g.must(err)
	g.profile("train_step_llama31_8b_profile", lines)
	// The same step with the LoRA products on cuBLAS instead of the LoRA
	// kernels. cuBLAS multiplies one dtype: the float32 adapters' bf16
	// inputs (n1, n2, the SwiGLU and attention outputs, dv; inputDType)
	// are widened into a float32 copy for each product, casts the step
	// on the kernels does not have.
	be.loraKernelsOff = true
	cublas := median3()
	be.loraKernelsOff = false
	g.record("train_step_llama31_8b_r16_seq2048_lora_on_cublas", map[string]float64{
		"s/step": cublas, "tokens/s": T / cublas, "kernels_speedup": cublas / sec,
	}, nil)
	// And with q, k, v and the attention output kept in float32, cast to
	// bf16 around each attention launch (the model's layout before
	// attentionDType): what keeping them in bf16 saves in time and memory.
	be.attentionActsF32 = true
	defer func() { be.attentionActsF32 = false }()
	be.ResetPeak()
	f32Acts := median3()
	g.record("train_step_llama31_8b_r16_seq2048_attention_acts_f32", map[string]float64{
		"s/step": f32Acts, "tokens/s": T / f32Acts, "bf16_acts_speedup": f32Acts / sec,
		"peak_GiB": float64(be.PeakBytes()) / (1 << 30),
	}, nil)
}

// attachTrainingAdapter attaches to m a LoRA adapter of rank r (alpha 2r)
// on all seven projections, A and B both random (B = 0 would time and test
// products of zeros), and returns its parameters, their gradients, and
// AdamW's two moments for each, allocated on be for the caller to free.
func attachTrainingAdapter(be *Backend, m *model.Model, r int) (params, grads, m1, m2 []*tensor.Tensor, err error) {
	lcfg := lora.DefaultConfig()
	lcfg.R, lcfg.LoraAlpha = r, float64(2*r)
	lcfg.TargetModules = lora.TargetString("all-linear")
	lcfg.InitLoraWeights = false
	adapter, err := lora.New(lcfg, m.LinearModules(), 1)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	if err := m.AttachAdapter(adapter); err != nil {
		return nil, nil, nil, nil, err
	}
	for name, p := range m.LoRAParams() {
		g := m.LoRAGrads()[name]
		for k := range p {
			mt, err := be.Alloc(tensor.F32, p[k].Shape()...)
			if err != nil {
				return nil, nil, nil, nil, err
			}
			vt, err := be.Alloc(tensor.F32, p[k].Shape()...)
			if err != nil {
				be.Free(mt)
				return nil, nil, nil, nil, err
			}
			params, grads, m1, m2 = append(params, p[k]), append(grads, g[k]), append(m1, mt), append(m2, vt)
		}
	}
	return params, grads, m1, m2, nil
}

// randomDeviceModel builds a model of cfg with random bf16 weights made in
// device memory: a pool of poolElems random values tiled into each weight,
// norm weights 1 + N(0, 0.01), linear weights scaled by 1/sqrt(in) (as
// model.WriteRandomCheckpoint's N(0, 1/in)). It returns the model and its
// weights, which the caller frees when done with the model. With poolElems
// 0 the weights other than the norms' are left as allocated (what a test
// on the recording queue, which runs no kernel, needs to count memory
// without writing gigabytes of host memory).
func randomDeviceModel(be *Backend, cfg *model.Config, rng *rand.Rand, poolElems int) (*model.Model, []*tensor.Tensor, error) {
	var poolMem tensor.DeviceMem
	if poolElems > 0 {
		pool, err := be.ToDevice(randHost(rng, tensor.BF16, 1, poolElems))
		if err != nil {
			return nil, nil, err
		}
		defer be.Free(pool)
		poolMem, _ = pool.Device()
	}
	ones := tensor.New(tensor.F32, cfg.HiddenSize)
	for i := range ones.F32() {
		ones.F32()[i] = 1 + 0.1*float32(rng.NormFloat64())
	}
	shapes := map[string][]int{}
	for _, s := range cfg.Tensors() {
		shapes[s.Name] = s.Shape
	}
	var held []*tensor.Tensor
	get := func(name string) (*tensor.Tensor, error) {
		shape, ok := shapes[name]
		if !ok {
			return nil, os.ErrNotExist
		}
		w, err := be.alloc(tensor.BF16, shape...)
		if err != nil {
			return nil, err
		}
		held = append(held, w)
		if strings.HasSuffix(name, "norm.weight") {
			return w, be.Copy(w, ones)
		}
		if poolElems == 0 {
			return w, nil
		}
		mem, _ := w.Device()
		for off := 0; off < mem.Bytes; off += 2 * poolElems {
			if err := be.q.copyDtoD(mem.Ptr+uintptr(off), poolMem.Ptr, min(2*poolElems, mem.Bytes-off)); err != nil {
				return nil, err
			}
		}
		if strings.HasSuffix(name, "proj.weight") {
			return w, be.Scale(w, w, float32(1/math.Sqrt(float64(shape[len(shape)-1]))))
		}
		return w, nil
	}
	m, err := model.New(cfg, be, get)
	if err != nil {
		for _, w := range held {
			be.Free(w)
		}
		return nil, nil, err
	}
	return m, held, nil
}

// profile prints a profile's lines (each with its share of the total
// device time) and reports the largest 40.
func (g *gpuBench) profile(name string, lines []ProfileLine) {
	total := 0.0
	for _, l := range lines {
		total += l.Seconds
	}
	fmt.Fprintf(g.log, "%s: %.1f ms of device work\n", name, total*1e3)
	for i, l := range lines {
		fmt.Fprintf(g.log, "  %8.3f ms %5.1f%% %6d calls  %s\n", l.Seconds*1e3, 100*l.Seconds/total, l.Calls, l.Name)
		if i < 40 {
			g.record(name, map[string]float64{"ms": l.Seconds * 1e3, "calls": float64(l.Calls), "share": l.Seconds / total},
				map[string]string{"work": l.Name})
		}
	}
}

// preciseDo runs f with be in Precise mode.
func preciseDo(be *Backend, f func() error) error {
	be.Precise = true
	defer func() { be.Precise = false }()
	return f()
}
