//go:build cuda

package cgo

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/compassml/compass/model"
	"github.com/compassml/compass/tensor"
)

// TestGPUMemoryEstimate runs LoRA training steps of the published configs
// (random bf16 weights built in device memory, r = 16 on all seven
// projections, 2048 tokens) and compares the allocator's peak with
// model.EstimateLoRAMemory, which the README offers for planning:
//
//   - what stays resident (weights, LoRA A and B, their gradients, AdamW m
//     and v) must be at least the estimate's terms and at most
//     maxResidentRatio times them (the allocator's size classes round
//     large blocks up: measured on an H200, 1.00 for Llama-3.1-8B, 1.014
//     for Phi-4-mini, 1.103 for Qwen2.5-7B's 152k-row embeddings);
//   - the step's own peak above that must be at least the estimate's
//     Activations + Logits (the estimate is a floor) and at most
//     maxStepRatio times it: the transient buffers of a layer's backward,
//     which the estimate leaves out, add more than the activations kept
//     (measured: 2.27 to 2.35 without recomputation, 2.50 with it).
//
// The Workspace term (CUDA context, cuBLAS workspace) is outside the
// allocator: the test logs what the driver reports for it (0.62 GiB
// measured, against the 0.5 GiB allowed).
func TestGPUMemoryEstimate(t *testing.T) {
	be := gpuBackend(t)
	const T, rank = 2048, 16
	for _, tc := range stepMemoryCases {
		t.Run(tc.name(), func(t *testing.T) {
			cfg := readTestConfig(t, tc.config)
			est, err := model.EstimateLoRAMemory(cfg, model.MemoryOptions{SeqLen: T, Batch: 1, Rank: rank, Recompute: tc.recompute})
			must(t, err)
			must(t, be.Trim()) // blocks the earlier tests left cached
			free, total, err := be.Device().MemInfo()
			must(t, err)
			// Twice the estimate: room for what it leaves out.
			if free < 2*est.Total {
				t.Skipf("%d GiB free on the device, the step needs about %d", free>>30, est.Total>>30)
			}
			before := be.InUseBytes() // cuBLAS's workspace, anything still held

			m, held := deviceModel(t, be, cfg)
			defer func() {
				must(t, m.Close())
				for _, x := range held {
					be.Free(x)
				}
			}()
			m.Recompute = tc.recompute
			params, grads, m1, m2, err := attachTrainingAdapter(be, m, rank)
			must(t, err)
			held = append(append(held, m1...), m2...)
			resident := be.InUseBytes() - before
			wantResident := est.Weights + est.LoRAParams + est.LoRAGrads + est.Optimizer
			checkRatio(t, "resident (weights, LoRA, gradients, AdamW state) over the estimate's", resident, wantResident, 1, maxResidentRatio)

			batch := randomBatch(cfg.VocabSize, 1, T, 7)
			be.ResetPeak()
			for step := 1; step <= 2; step++ { // the first step also sets up cuBLAS
				must(t, m.ZeroLoRAGrads())
				out, err := m.ForwardBackward(batch)
				must(t, err)
				must(t, be.AdamW(params, grads, m1, m2, step, 1e-4, 0.9, 0.999, 1e-8, 0.01))
				must(t, be.Synchronize())
				if math.IsNaN(out.Loss) || math.IsInf(out.Loss, 0) {
					t.Fatalf("step %d: loss %v", step, out.Loss)
				}
			}
			peak := be.PeakBytes() - before
			stepPeak := peak - resident
			ratio := checkRatio(t, "step peak over the estimate's Activations + Logits", stepPeak, est.Activations+est.Logits, 1, maxStepRatio)
			planned := est.Total - est.Workspace
			t.Logf("%s T=%d r=%d recompute=%v: allocator peak %.2f GiB, estimate without Workspace %.2f GiB (peak/estimate %.3f); "+
				"resident %.2f GiB; step %.2f GiB vs Activations %.2f + Logits %.2f GiB (ratio %.3f); "+
				"before the model the driver reported %.2f GiB in use (context, cuBLAS workspace; the estimate allows %.2f GiB)",
				tc.config, T, rank, tc.recompute, gib(peak), gib(planned), float64(peak)/float64(planned),
				gib(resident), gib(stepPeak), gib(est.Activations), gib(est.Logits), ratio,
				gib(total-free), gib(est.Workspace))
		})
	}
}

// deviceModel builds a model of cfg with random weights made in device
// memory (randomDeviceModel) and returns it with the weights, which the
// caller frees after closing the model.
func deviceModel(t *testing.T, be *Backend, cfg *model.Config) (*model.Model, []*tensor.Tensor) {
	t.Helper()
	m, held, err := randomDeviceModel(be, cfg, rand.New(rand.NewPCG(6, 6)), 16<<20)
	if err != nil {
		t.Fatal(err)
	}
	return m, held
}
