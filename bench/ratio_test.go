package bench

import (
	"math"
	"reflect"
	"strings"
	"testing"

	"github.com/compassml/compass/cgo"
)

// A ratio is a number or "-", never +Inf or NaN (a side that did not run,
// or one that measured no time).
func TestRatio(t *testing.T) {
	for _, c := range []struct {
		a, b float64
		want string
	}{
		{3, 2, "1.50x"}, {1, 0, "-"}, {0, 0, "-"}, {math.Inf(1), 2, "-"}, {1, math.Inf(1), "0.00x"},
		{math.NaN(), 1, "-"}, {1e300, 1e-300, "-"},
	} {
		if got := ratio(c.a, c.b); got != c.want {
			t.Errorf("ratio(%g, %g) = %q, want %q", c.a, c.b, got, c.want)
		}
	}
}

// kmeansRows pairs each compass case with its PyTorch counterpart, ratio =
// PyTorch's time / compass's, and leaves "-" where a side did not run.
func TestKMeansRows(t *testing.T) {
	ours := map[string]cgo.BenchRecord{
		"kmeans_assign_tc_bf16": {Metrics: map[string]float64{"us": 2000, "same_as_fma": 0.99999}},
		"kmeans_update_f32":     {Metrics: map[string]float64{"us": 500}},
	}
	torch := []map[string]any{
		{"bench": "kmeans_assign_bf16", "us": 3000.0, "same_as_f32": 0.998},
		{"bench": "kmeans_assign_f32", "us": 30000.0, "same_as_f32": 1.0},
	}
	got := kmeansRows(ours, torch)
	want := [][]string{
		{"kmeans_assign_tc_bf16", "2000", "0.99999", "kmeans_assign_bf16", "3000", "0.99800", "1.50x"},
		{"kmeans_update_f32", "500", "-", "kmeans_update_f32", "-", "-", "-"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("kmeansRows:\n got %q\nwant %q", got, want)
	}
}

// targetRows sets a run against the GPU path's targets: attention's
// forward (not the backward) against flash SDPA, the step's speed-up and
// memory against HF + PEFT, and each memory-bound kernel (not the copy
// itself, nor a "_then_" pair of launches, nor a product) against the
// copy bandwidth; a goal just met is met, a missing measurement no row.
func TestTargetRows(t *testing.T) {
	ours := map[string]cgo.BenchRecord{
		"copy_dtod":                          {Metrics: map[string]float64{"GB/s": 4000}},
		"cublas_bf16_gemm":                   {Metrics: map[string]float64{"TFLOP/s": 700}},
		"elementwise_cast_f32_to_bf16":       {Metrics: map[string]float64{"us": 10, "GB/s": 3800, "of_copy_bw": 0.95}},
		"elementwise_add_f32_then_cast_bf16": {Metrics: map[string]float64{"us": 20, "GB/s": 2000, "of_copy_bw": 0.5}},
		"rmsnorm_forward_f32":                {Metrics: map[string]float64{"us": 12, "GB/s": 2800, "of_copy_bw": 0.70}},
		"embedding_bf16_to_f32":              {Metrics: map[string]float64{"us": 40, "GB/s": 960, "of_copy_bw": 0.24}},
		"attention_forward_bf16_tc":          {Metrics: map[string]float64{"us": 200, "TFLOP/s": 300}},
		"attention_backward_bf16_tc":         {Metrics: map[string]float64{"us": 900, "TFLOP/s": 200}},
		"train_step_llama31_8b_r16_seq2048":  {Metrics: map[string]float64{"tokens/s": 12000, "peak_GiB": 35.4}},
	}
	order := []string{"copy_dtod", "cublas_bf16_gemm", "elementwise_cast_f32_to_bf16", "elementwise_add_f32_then_cast_bf16",
		"rmsnorm_forward_f32", "embedding_bf16_to_f32", "attention_forward_bf16_tc", "attention_backward_bf16_tc", "train_step_llama31_8b_r16_seq2048"}
	sdpa := []map[string]any{{"bench": "attention_forward_bf16", "us": 100.0}, {"bench": "attention_backward_bf16", "us": 100.0}}
	hf := []map[string]any{{"tokens_per_s": 8000.0, "peak_memory_bytes": 36.5 * (1 << 30)}}
	got := targetRows(ours, order, sdpa, hf)
	want := [][]string{
		{"attention_forward_bf16, speed of flash SDPA's", "0.50", ">= 0.50", "yes"},
		{"8B LoRA step, tokens/s of HF + PEFT's", "1.50x", ">= 1.50x", "yes"},
		{"8B LoRA step, peak GiB", "35.4", "<= 36.5 (HF + PEFT's)", "yes"},
		{"elementwise_cast_f32_to_bf16, of the copy bandwidth", "0.95", ">= 0.70", "yes"},
		{"rmsnorm_forward_f32, of the copy bandwidth", "0.70", ">= 0.70", "yes"},
		{"embedding_bf16_to_f32, of the copy bandwidth", "0.24", ">= 0.70", "NO"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("targetRows:\n got %q\nwant %q", got, want)
	}

	// Misses, and the references missing.
	ours["attention_forward_bf16_tc"].Metrics["us"] = 250
	ours["train_step_llama31_8b_r16_seq2048"].Metrics["peak_GiB"] = 37
	got = targetRows(ours, order, sdpa, hf)
	if got[0][3] != "NO" || got[2][3] != "NO" || got[1][3] != "yes" {
		t.Errorf("attention at 0.40 and the step at 37 GiB: %q", got[:3])
	}
	if got := targetRows(ours, order, nil, nil); len(got) != 3 || !strings.HasPrefix(got[0][0], "elementwise_cast") {
		t.Errorf("without the references: %q, want the three kernels' rows alone", got)
	}
}
