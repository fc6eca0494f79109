//go:build cuda

package cgo

import (
	"encoding/json"
	"io"
	"math"
	"os"
	"strings"
	"testing"
	"time"
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
func BenchmarkGPU(b *testing.B) {
	be := gpuBackend(b)
	config, err := os.ReadFile("../testdata/configs/llama-3.1-8b.json")
	if err != nil {
		config, _ = os.ReadFile(os.Getenv("COMPASS_TESTDATA") + "/configs/llama-3.1-8b.json")
	}
	for _, group := range GPUBenchGroups {
		b.Run(group, func(b *testing.B) {
			for b.Loop() {
				err := RunGPUBenchmarks(be, []string{group}, config, false, os.Stderr, func(r BenchRecord) {
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

// TestGPUBenchQuick runs the GPU benchmark suite on its small sizes (the
// training step is skipped there) and checks that every group reports
// each of its cases with positive, finite metrics, and that the
// tensor-core k-means assigns (nearly) every point as the float32 kernel
// does.
func TestGPUBenchQuick(t *testing.T) {
	be := gpuBackend(t)
	got := map[string]BenchRecord{}
	err := RunGPUBenchmarks(be, nil, nil, true, io.Discard, func(r BenchRecord) { got[r.Name] = r })
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"copy_dtod", "cublas_bf16_gemm", "gemm_q_proj_bf16", "gemm_lm_head_chunk_f32xbf16",
		"elementwise_cast_f32_to_bf16", "elementwise_add_f32_cast_bf16_fused", "rope_pair_f32_to_bf16", "rope_pair_inverse_bf16_to_f32_cast_bf16_fused", "rmsnorm_backward_f32", "rmsnorm_forward_f32_cast_bf16_fused", "swiglu_forward_f32_cast_bf16_fused", "swiglu_backward_f32_cast_bf16_fused", "attention_forward_bf16_tc", "attention_backward_f32_rounded",
		"cross_entropy_f32xbf16_with_dh", "adamw_lora_8b_r16", "lora_qkv", "lora_gate_up", "lora_down_proj",
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
	if err := RunGPUBenchmarks(be, []string{"nope"}, nil, true, io.Discard, func(BenchRecord) {}); err == nil {
		t.Error("an unknown group: no error")
	}
}
