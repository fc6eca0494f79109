//go:build cuda

package cgo

import (
	"bufio"
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/compassml/compass/engine"
	"github.com/compassml/compass/internal/tinymodel"
	"github.com/compassml/compass/model"
	"github.com/compassml/compass/tensor"
)

// trainLosses reads the per-step losses of a run's metrics.jsonl.
func trainLosses(t *testing.T, out string) []float64 {
	t.Helper()
	f, err := os.Open(filepath.Join(out, "metrics.jsonl"))
	must(t, err)
	defer f.Close()
	var losses []float64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var rec struct {
			Type string  `json:"type"`
			Loss float64 `json:"loss"`
		}
		must(t, json.Unmarshal(sc.Bytes(), &rec))
		if rec.Type == "train" {
			losses = append(losses, rec.Loss)
		}
	}
	return losses
}

// compass train on the GPU follows the CPU run: the same data, packing,
// dropout masks, accumulation, clipping and schedule give the same losses
// step by step (float32 weights: no bf16 rounding of activations), and a
// run interrupted and resumed on the GPU ends where the whole one does.
func TestGPUTrainMatchesCPU(t *testing.T) {
	b := gpuBackend(t)
	work := t.TempDir()
	modelDir := filepath.Join(work, "model")
	_, err := model.WriteRandomCheckpoint(modelDir, []byte(tinymodel.Config), tensor.F32, 3)
	must(t, err)
	must(t, tinymodel.WriteTokenizer(modelDir))
	data := filepath.Join(work, "train.jsonl")
	must(t, tinymodel.WriteTextData(data, 3))
	// 12 steps of 4 rows of 64 tokens, interrupted after step 5 (a
	// checkpoint every 4); on the emulated device, where a step takes
	// seconds, 6 steps of rows of 32, interrupted after step 3.
	steps, seqLen, stop, every := 12, 64, 5, 4
	if onEmulator() {
		steps, seqLen, stop, every = 6, 32, 3, 2
	}
	opts := func(out string) engine.TrainOptions {
		o := engine.DefaultTrainOptions()
		o.Model, o.Data, o.Output = modelDir, []string{data}, out
		o.SeqLen, o.MicroBatch, o.GlobalBatch, o.MaxSteps, o.Rank, o.Alpha = seqLen, 2, 4, steps, 4, 8
		o.LR, o.WarmupSteps, o.Dropout, o.MaxGradNorm, o.EvalEvery, o.SaveEvery, o.Seed = 5e-3, 2, 0.1, 0.5, 0, every, 7
		return o
	}
	cpuOut, gpuOut := filepath.Join(work, "cpu"), filepath.Join(work, "gpu")
	_, err = engine.Train(context.Background(), opts(cpuOut), engine.TrainEnv{Backend: cpu})
	must(t, err)
	res, err := engine.Train(context.Background(), opts(gpuOut), engine.TrainEnv{Backend: b})
	must(t, err)
	want, got := trainLosses(t, cpuOut), trainLosses(t, gpuOut)
	if len(got) != steps || len(want) != steps {
		t.Fatalf("%d GPU and %d CPU losses, want %d", len(got), len(want), steps)
	}
	worst := 0.0
	for i := range want {
		rel := math.Abs(got[i]-want[i]) / want[i]
		worst = max(worst, rel)
		if rel > 1e-3 {
			t.Errorf("step %d: GPU loss %.6f, CPU %.6f", i+1, got[i], want[i])
		}
	}
	t.Logf("largest relative loss difference GPU vs CPU over %d steps: %.2g; %.0f tokens/s; peak %d bytes", steps, worst, res.TokensPerSec, res.PeakBytes)

	// Interrupted after step stop (a checkpoint plus the interruption's), resumed.
	partOut := filepath.Join(work, "part")
	ctx, cancel := context.WithCancel(context.Background())
	env := engine.TrainEnv{Backend: b, OnStep: func(step int, _ []model.Batch) {
		if step == stop {
			cancel()
		}
	}}
	_, err = engine.Train(ctx, opts(partOut), env)
	cancel()
	must(t, err)
	o := opts(partOut)
	o.Resume = "latest"
	_, err = engine.Train(context.Background(), o, engine.TrainEnv{Backend: b})
	must(t, err)
	resumed := trainLosses(t, partOut)
	for i := range resumed {
		if math.Abs(resumed[i]-got[i]) > 1e-5*got[i] {
			t.Errorf("step %d after resume on the GPU: loss %.6f, uninterrupted %.6f", i+1, resumed[i], got[i])
		}
	}
}
