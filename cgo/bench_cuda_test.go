//go:build cuda

package cgo

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/compassml/compass/tensor"
)

// BenchmarkGPU runs the GPU benchmark suite (gpubench.go; the same as
// `compass bench --only gpu` without the PyTorch references), one
// sub-benchmark per group:
//
//	go test -tags cuda -run '^$' -bench GPU -benchtime 1x ./cgo/
//
// The results are logged; with COMPASS_BENCH_OUT set each is also appended
// to that file as one JSON line. The training step reads
// testdata/configs/llama-3.1-8b.json (or $COMPASS_TESTDATA/configs/...).
// -short runs the suite's small sizes, without the step.
// BenchmarkGPUKernels and BenchmarkGPULoRA time the kernels and the LoRA
// products in go test's own loop.
func BenchmarkGPU(b *testing.B) {
	be := gpuBackend(b)
	config, err := os.ReadFile("../testdata/configs/llama-3.1-8b.json")
	if err != nil {
		config, _ = os.ReadFile(os.Getenv("COMPASS_TESTDATA") + "/configs/llama-3.1-8b.json")
	}
	for _, group := range GPUBenchGroups {
		b.Run(group, func(b *testing.B) {
			for b.Loop() {
				err := RunGPUBenchmarks(context.Background(), be, []string{group}, config, testing.Short(), os.Stderr, func(r BenchRecord) {
					b.Logf("%s %v %v", r.Name, r.Metrics, r.Text)
					appendBenchRecord(b, be, r)
				})
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkGPUKernels times each case of the suite's gemm and kernels
// groups (the same operands as `compass bench --only gpu`) in go test's own
// loop, one sub-benchmark per case, so that benchstat can set commits or
// devices side by side:
//
//	go test -tags cuda -run '^$' -bench GPUKernels -count 6 ./cgo/ | tee new.txt
//
// Each reports ns/op (the launches of b.N calls, the device synchronized
// at the end; one call, not timed, first), MB/s for a memory-bound case's
// fewest bytes (SetBytes) and of_copy_bw, its share of the copy bandwidth,
// or TFLOP/s and of_bf16_gemm, against the ceilings measured once at the
// start of the run. -short runs the suite's small sizes (the emulated
// device runs those in seconds).
func BenchmarkGPUKernels(b *testing.B) {
	be := gpuBackend(b)
	g := newGPUBench(context.Background(), be, testing.Short(), io.Discard, func(BenchRecord) {})
	var cases []benchCase
	if err := g.try(func() {
		g.ceilings()
		cases = append(g.gemmCases(), g.kernelCases()...)
	}); err != nil {
		b.Fatal(err)
	}
	for _, c := range cases {
		// The operands are made at the first call (go test calls a
		// sub-benchmark's function again with a larger b.N) and freed
		// after the last.
		var held []*tensor.Tensor
		var run func() error
		var bytes, flops float64
		b.Run(c.name, func(b *testing.B) {
			if run == nil {
				if err := g.try(func() {
					run, bytes, flops = c.setup(func(ts ...*tensor.Tensor) { held = append(held, ts...) })
				}); err != nil {
					b.Fatal(err)
				}
			}
			timeDeviceCalls(b, g, run, bytes, flops)
		})
		for _, t := range held {
			be.Free(t)
		}
	}
}

// BenchmarkGPULoRA times the LoRA products of each input of a
// Llama-3.1-8B layer as the model issues them (the suite's lora group:
// loraSet; 2048 tokens, r 16, activations in the dtypes of the model's
// bf16 step) in go test's own loop, on the LoRA kernels and on cuBLAS:
// all six kinds together (lora_qkv/all/kernels, lora_qkv/all/cublas, ...)
// and each alone (lora_qkv/dt/kernels, ...), with MB/s and of_copy_bw
// for the fewest bytes they move (each kind alone: its large operand's).
// For benchstat, as BenchmarkGPUKernels; -short runs the small sizes.
func BenchmarkGPULoRA(b *testing.B) {
	be := gpuBackend(b)
	g := newGPUBench(context.Background(), be, testing.Short(), io.Discard, func(BenchRecord) {})
	if err := g.try(func() { g.ceilings() }); err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(4, 4))
	for _, in := range g.loraInputs() {
		var set *loraSet
		if err := g.try(func() { set = g.newLoRASet(rng, in, true) }); err != nil {
			b.Fatal(err)
		}
		for _, p := range append([]loraProduct{{"all", set.asModel, set.bytes}}, set.products...) {
			for _, impl := range []struct {
				name string
				on   bool
			}{{"kernels", true}, {"cublas", false}} {
				b.Run("lora_"+in.name+"/"+p.name+"/"+impl.name, func(b *testing.B) {
					timeDeviceCalls(b, g, func() error { return p.run(impl.on) }, p.bytes, 0)
				})
			}
		}
		set.free()
	}
}

// timeDeviceCalls times b.N calls of run in go test's loop, after one call
// not timed, the device synchronized at the end, and reports the rates
// against g's ceilings: SetBytes for bytes (MB/s) with of_copy_bw, or
// TFLOP/s and of_bf16_gemm for flops.
func timeDeviceCalls(b *testing.B, g *gpuBench, run func() error, bytes, flops float64) {
	be := g.be
	if bytes > 0 {
		b.SetBytes(int64(bytes))
	}
	if err := run(); err != nil {
		b.Fatal(err)
	}
	if err := be.Synchronize(); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := run(); err != nil {
			b.Fatal(err)
		}
	}
	if err := be.Synchronize(); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	m := g.rates(b.Elapsed().Seconds()/float64(b.N), bytes, flops)
	for _, unit := range []string{"of_copy_bw", "TFLOP/s", "of_bf16_gemm"} {
		if v, ok := m[unit]; ok {
			b.ReportMetric(v, unit)
		}
	}
}

// appendBenchRecord appends r to $COMPASS_BENCH_OUT as one JSON line.
func appendBenchRecord(b *testing.B, be *Backend, r BenchRecord) {
	path := os.Getenv("COMPASS_BENCH_OUT")
	if path == "" {
		return
	}
	line := map[string]any{"time": time.Now().UTC().Format(time.RFC3339), "device": be.DeviceName(), "bench": r.Name}
	for k, v := range r.Metrics {
		line[strings.ReplaceAll(k, "/", "_per_")] = v
	}
	for k, v := range r.Text {
		line[k] = v
	}
	data, err := json.Marshal(line)
	if err != nil {
		b.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(append(data, '\n')); err != nil {
		b.Fatal(err)
	}
}

// TestGPUBenchInterrupted cancels the suite's context as the first
// product of the gemm group is recorded: nothing after it is measured, and
// the error names gemm as cut short and every later group as not run, and
// wraps the context's error.
func TestGPUBenchInterrupted(t *testing.T) {
	be := gpuBackend(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var got []string
	err := RunGPUBenchmarks(ctx, be, nil, nil, true, io.Discard, func(r BenchRecord) {
		got = append(got, r.Name)
		if strings.HasPrefix(r.Name, "gemm_") {
			cancel()
		}
	})
	if len(got) != 3 || got[0] != "copy_dtod" || got[1] != "cublas_bf16_gemm" {
		t.Errorf("recorded %v, want the two ceilings and one product", got)
	}
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "gemm: interrupted") ||
		!strings.Contains(err.Error(), "kernels, lora, kmeans, train-step not run") {
		t.Errorf("err = %v, want gemm cut short and every later group not run, wrapping context.Canceled", err)
	}
}

// TestGPUBenchQuick runs the GPU benchmark suite on its small sizes (the
// training step is skipped there) and checks that every group reports
// each of its cases with positive, finite metrics, and that the
// tensor-core k-means assigns (nearly) every point as the float32 kernel
// does.
func TestGPUBenchQuick(t *testing.T) {
	be := gpuBackend(t)
	got := map[string]BenchRecord{}
	err := RunGPUBenchmarks(context.Background(), be, nil, nil, true, io.Discard, func(r BenchRecord) { got[r.Name] = r })
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"copy_dtod", "cublas_bf16_gemm", "gemm_q_proj_bf16", "gemm_lm_head_chunk_f32xbf16",
		"elementwise_cast_f32_to_bf16", "elementwise_add_f32_cast_bf16_fused", "rope_pair_f32_to_bf16", "rope_pair_inverse_bf16_to_f32_cast_bf16_fused", "rmsnorm_backward_f32", "rmsnorm_forward_f32_to_bf16", "swiglu_forward_f32_to_bf16", "swiglu_backward_f32_cast_bf16_fused", "attention_forward_bf16_tc", "attention_backward_f32_rounded",
		"cross_entropy_f32xbf16_with_dh", "adamw_lora_8b_r16", "lora_qkv", "lora_gate_up", "lora_down_proj", "lora_qkv_f32", "lora_down_proj_f32",
		"kmeans_assign_tc_bf16", "kmeans_assign_tc_f32", "kmeans_assign_tc_f32_prepared", "kmeans_assign_fma_f32", "kmeans_update_f32"} {
		r, ok := got[name]
		if !ok {
			t.Errorf("no result %s (have %d)", name, len(got))
			continue
		}
		for unit, v := range r.Metrics {
			if !(v > 0) || math.IsInf(v, 0) {
				t.Errorf("%s: %s = %g", name, unit, v)
			}
		}
		if same, ok := r.Metrics["same_as_fma"]; ok && same < 0.999 {
			t.Errorf("%s: %.4f of the points assigned as the float32 kernel assigns them", name, same)
		}
	}
	for _, name := range []string{"lora_qkv", "lora_o_proj", "lora_gate_up", "lora_down_proj"} {
		for _, k := range []string{"t", "dt", "dB", "dA"} {
			if _, ok := got[name].Metrics[k+"_splits1_us"]; !ok {
				t.Errorf("%s: no %s_splits1_us (the sum in one chunk)", name, k)
			}
		}
	}
	if err := RunGPUBenchmarks(context.Background(), be, []string{"nope"}, nil, true, io.Discard, func(BenchRecord) {}); err == nil {
		t.Error("an unknown group: no error")
	}
}
