package engine

import (
	"bufio"
	"context"
	"encoding/json"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/compassml/compass/lora"
	"github.com/compassml/compass/model"
	"github.com/compassml/compass/tensor/safetensors"
)

// referencePython is Debian's interpreter with torch (COMPASS_PYTHON
// overrides it); CI installs python3-torch, so a missing torch fails.
func referencePython(t *testing.T) string {
	t.Helper()
	py := os.Getenv("COMPASS_PYTHON")
	if py == "" {
		py = "/usr/bin/python3"
	}
	if out, err := exec.Command(py, "-c", "import torch").CombinedOutput(); err != nil {
		t.Fatalf("the PyTorch reference needs %s with torch (apt-get install python3-torch, or set COMPASS_PYTHON): %v\n%s", py, err, out)
	}
	return py
}

// readTrainLosses returns the loss of each train line of metrics.jsonl.
func readTrainLosses(t *testing.T, path string) (losses, norms []float64) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var rec struct {
			Type     string  `json:"type"`
			Loss     float64 `json:"loss"`
			GradNorm float64 `json:"grad_norm"`
		}
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatal(err)
		}
		if rec.Type == "train" {
			losses, norms = append(losses, rec.Loss), append(norms, rec.GradNorm)
		}
	}
	return losses, norms
}

// parityOptions are the settings both trainers run: a schedule with
// warmup and a floor, gradient accumulation over two micro-batches,
// clipping that bites, weight decay, no dropout.
func parityOptions(modelDir, data, out, init string, packing bool) TrainOptions {
	o := DefaultTrainOptions()
	o.Model, o.Data, o.Output, o.InitAdapter = modelDir, []string{data}, out, init
	o.SeqLen, o.Packing, o.MicroBatch, o.GlobalBatch = 64, packing, 2, 4
	o.MaxSteps, o.Schedule, o.WarmupSteps, o.LR, o.MinLR = 20, "cosine", 3, 1e-2, 1e-3
	o.WeightDecay, o.MaxGradNorm = 0.01, 0.5
	o.EvalEvery, o.SaveEvery, o.Seed = 0, 0, 7
	return o
}

// The trainer against the PyTorch reference's own training loop: the same
// tiny model, initial adapter, batches and hyperparameters give the same
// loss at each of 20 steps and the same final adapter, packed and padded.
func TestTrainMatchesReference(t *testing.T) {
	py := referencePython(t)
	for _, packing := range []bool{true, false} {
		name := map[bool]string{true: "packed", false: "padded"}[packing]
		t.Run(name, func(t *testing.T) {
			work := t.TempDir()
			modelDir := writeTinyByteModel(t, tinyByteLlama, 3)
			data := writeTextData(t, work, 3)

			// The initial adapter, B not zero so that every path carries signal.
			m, err := model.Load(modelDir, nil)
			if err != nil {
				t.Fatal(err)
			}
			cfg := lora.DefaultConfig()
			cfg.R, cfg.LoraAlpha, cfg.TargetModules = 4, 8, lora.TargetString("all-linear")
			cfg.InitLoraWeights = false
			init, err := lora.New(cfg, m.LinearModules(), 11)
			m.Close()
			if err != nil {
				t.Fatal(err)
			}
			initDir := filepath.Join(work, "init")
			if err := init.Save(initDir); err != nil {
				t.Fatal(err)
			}

			out := filepath.Join(work, "run")
			opts := parityOptions(modelDir, data, out, initDir, packing)
			var plan []map[string]any
			mostDocs := 0
			env := TrainEnv{OnStep: func(step int, micro []model.Batch) {
				var mbs []map[string]any
				for _, b := range micro {
					for _, d := range b.DocLens {
						mostDocs = max(mostDocs, len(d))
					}
					B, T := b.IDs.Dim(0), b.IDs.Dim(1)
					ids, labels := make([][]int32, B), make([][]int32, B)
					for i := range B {
						ids[i] = b.IDs.I32()[i*T : (i+1)*T]
						labels[i] = b.Labels.I32()[i*T : (i+1)*T]
					}
					mbs = append(mbs, map[string]any{"input_ids": ids, "labels": labels, "doc_lens": b.DocLens})
				}
				plan = append(plan, map[string]any{"micro_batches": mbs})
			}}
			res, err := Train(context.Background(), opts, env)
			if err != nil {
				t.Fatal(err)
			}
			if res.Steps != 20 || len(plan) != 20 {
				t.Fatalf("%d steps, %d recorded, want 20", res.Steps, len(plan))
			}
			if packing && mostDocs < 3 || !packing && mostDocs > 2 {
				t.Fatalf("packing %v: at most %d documents in a row", packing, mostDocs)
			}
			planPath := filepath.Join(work, "plan.json")
			writeJSON(t, planPath, map[string]any{
				"steps":         plan,
				"optimizer":     map[string]any{"lr": opts.LR, "betas": []float64{opts.Beta1, opts.Beta2}, "eps": opts.Eps, "weight_decay": opts.WeightDecay},
				"schedule":      map[string]any{"name": opts.Schedule, "warmup_steps": opts.WarmupSteps, "total_steps": opts.MaxSteps, "min_lr": opts.MinLR},
				"max_grad_norm": opts.MaxGradNorm,
			})
			refOut := filepath.Join(work, "ref")
			cmd := exec.Command(py, filepath.Join("..", "tools", "reference", "reference.py"), "train",
				"--model", modelDir, "--adapter", initDir, "--plan", planPath, "--output", refOut, "--threads", "1")
			if msg, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("reference train: %v\n%s", err, msg)
			}
			var ref struct {
				Loss     []float64 `json:"loss"`
				GradNorm []float64 `json:"grad_norm"`
			}
			refData, err := os.ReadFile(filepath.Join(refOut, "metrics.json"))
			if err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(refData, &ref); err != nil {
				t.Fatal(err)
			}
			losses, norms := readTrainLosses(t, filepath.Join(out, "metrics.jsonl"))
			if len(losses) != 20 || len(ref.Loss) != 20 {
				t.Fatalf("%d losses, the reference %d, want 20", len(losses), len(ref.Loss))
			}
			clipped := 0
			for _, n := range norms {
				if n > opts.MaxGradNorm {
					clipped++
				}
			}
			if clipped == 0 {
				t.Errorf("no step's gradient norm exceeded --max-grad-norm %g: clipping is untested", opts.MaxGradNorm)
			}
			worst := 0.0
			for i := range losses {
				rel := math.Abs(losses[i]-ref.Loss[i]) / math.Abs(ref.Loss[i])
				worst = max(worst, rel)
				if rel > 1e-4 {
					t.Errorf("step %d: loss %.8f, reference %.8f (relative %.2g > 1e-4)", i+1, losses[i], ref.Loss[i], rel)
				}
				if d := math.Abs(norms[i]-ref.GradNorm[i]) / ref.GradNorm[i]; d > 1e-3 {
					t.Errorf("step %d: gradient norm %.6g, reference %.6g", i+1, norms[i], ref.GradNorm[i])
				}
			}
			if losses[19] > 0.9*losses[0] {
				t.Errorf("loss %.4f after 20 steps from %.4f: the run did not learn, so the comparison shows little", losses[19], losses[0])
			}
			t.Logf("largest relative loss difference over 20 steps: %.2g; %d of 20 steps clipped; up to %d documents a row", worst, clipped, mostDocs)
			compareAdapters(t, filepath.Join(out, lora.WeightsName), filepath.Join(refOut, lora.WeightsName), 1e-3)
		})
	}
}

// compareAdapters requires every tensor of two adapter files to agree to
// tol relative to the tensor's largest magnitude.
func compareAdapters(t *testing.T, got, want string, tol float64) {
	t.Helper()
	g, err := safetensors.Open(got)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	w, err := safetensors.Open(want)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if len(g.Names()) != len(w.Names()) {
		t.Fatalf("%d tensors, the reference %d", len(g.Names()), len(w.Names()))
	}
	worst := 0.0
	for _, name := range w.Names() {
		wt, err := w.Tensor(name)
		if err != nil {
			t.Fatal(err)
		}
		gt, err := g.Tensor(name)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		wv, gv := wt.F32(), gt.F32()
		scale := 0.0
		for _, v := range wv {
			scale = max(scale, math.Abs(float64(v)))
		}
		for i := range wv {
			d := math.Abs(float64(gv[i]-wv[i])) / scale
			worst = max(worst, d)
			if d > tol {
				t.Errorf("%s[%d]: %g, reference %g", name, i, gv[i], wv[i])
				break
			}
		}
	}
	t.Logf("largest adapter difference (relative to each tensor's largest value): %.2g", worst)
}
