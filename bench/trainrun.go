package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/compassml/compass/engine"
	"github.com/compassml/compass/internal/tinymodel"
	"github.com/compassml/compass/lora"
	"github.com/compassml/compass/model"
	"github.com/compassml/compass/tensor"
)

// trainRunCase is one model of the train-run suite.
type trainRunCase struct {
	name   string
	config string
	dtype  tensor.DType
	seqLen int
	micro  int
	accum  int
	steps  int
}

// trainRunCases: a small model over the byte vocabulary, and
// Llama-3.1-8B's layer shapes and 128k vocabulary cut to one layer (what
// fits the machine), bf16 weights as published.
func trainRunCases(quick bool) []trainRunCase {
	small := `{"architectures":["LlamaForCausalLM"],"model_type":"llama","hidden_size":256,"intermediate_size":768,
		"num_hidden_layers":4,"num_attention_heads":4,"num_key_value_heads":2,"vocab_size":260,"max_position_embeddings":2048,
		"eos_token_id":256,"bos_token_id":257,"rope_theta":10000,"torch_dtype":"float32"}`
	llama8B := `{"architectures":["LlamaForCausalLM"],"model_type":"llama","hidden_size":4096,"intermediate_size":14336,
		"num_hidden_layers":1,"num_attention_heads":32,"num_key_value_heads":8,"vocab_size":128256,"max_position_embeddings":131072,
		"rms_norm_eps":1e-5,"rope_theta":500000.0,"rope_scaling":{"factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,
		"original_max_position_embeddings":8192,"rope_type":"llama3"},"eos_token_id":256,"bos_token_id":257,"torch_dtype":"bfloat16"}`
	if quick {
		return []trainRunCase{{"small model (4 layers hidden 256), seq 64", small, tensor.F32, 64, 2, 2, 2}}
	}
	return []trainRunCase{
		{"small model (4 layers hidden 256), seq 256, micro 4 x 2", small, tensor.F32, 256, 4, 2, 6},
		{"Llama-3.1-8B shapes, 1 layer, bf16, seq 256, micro 1", llama8B, tensor.BF16, 256, 1, 1, 2},
	}
}

// runTrainRun times whole `compass train` runs (data file to adapter:
// tokenizing, packing, steps with accumulation, clipping and AdamW on
// r = 16 all-linear adapters) and the PyTorch reference's training loop
// (tools/reference/reference.py train) on the same model, initial adapter
// and batches, in the same run. Both report input tokens (rows x seq_len)
// per second of training, loading excluded.
func runTrainRun(w io.Writer, o Options) ([]Result, error) {
	var results []Result
	var rows [][]string
	for ci, c := range trainRunCases(o.Quick) {
		dir, err := os.MkdirTemp(o.TempDir, "compass-bench-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
		modelDir := filepath.Join(dir, "model")
		fmt.Fprintf(o.Log, "train-run: writing the checkpoint of %s\n", c.name)
		if _, err := model.WriteRandomCheckpoint(modelDir, []byte(c.config), c.dtype, 1); err != nil {
			return nil, err
		}
		if err := tinymodel.WriteTokenizer(modelDir); err != nil {
			return nil, err
		}
		data := filepath.Join(dir, "data.jsonl")
		if err := tinymodel.WriteTextData(data, 8*c.seqLen/64+4); err != nil {
			return nil, err
		}
		initDir, err := writeInitAdapter(modelDir, filepath.Join(dir, "init"))
		if err != nil {
			return nil, err
		}
		threads := o.Threads
		if ci > 0 {
			threads = threads[len(threads)-1:] // the large case at full width only
		}
		for _, th := range threads {
			opts := engine.DefaultTrainOptions()
			opts.Model, opts.Data, opts.Output, opts.InitAdapter = modelDir, []string{data}, filepath.Join(dir, fmt.Sprint("run", th)), initDir
			opts.SeqLen, opts.MicroBatch, opts.GlobalBatch, opts.MaxSteps = c.seqLen, c.micro, c.micro*c.accum, c.steps
			opts.EvalEvery, opts.SaveEvery, opts.LR, opts.WarmupSteps = 0, 0, 1e-3, 1
			var plan []map[string]any
			// The CPU backend as `compass train` has it (cgo.SelectBackend):
			// bf16 weights' products in bf16, as the reference's bf16 model does.
			env := engine.TrainEnv{Backend: &tensor.CPU{BF16Products: true},
				OnStep: func(step int, micro []model.Batch) { plan = append(plan, planStep(micro)) }}
			fmt.Fprintf(o.Log, "train-run: compass, %d thread(s)\n", th)
			prev := runtime.GOMAXPROCS(th)
			res, err := engine.Train(context.Background(), opts, env)
			runtime.GOMAXPROCS(prev)
			if err != nil {
				return nil, err
			}
			results = append(results, Result{Suite: "train-run", Case: c.name, Impl: "compass", Threads: th, Value: res.TokensPerSec, Unit: "tokens/s"})
			row := []string{c.name, fmt.Sprint(th), fmt.Sprintf("%.0f", res.TokensPerSec)}

			fmt.Fprintf(o.Log, "train-run: pytorch, %d thread(s)\n", th)
			theirs, err := torchTrainRun(o, modelDir, initDir, dir, opts, plan, th)
			if err != nil {
				fmt.Fprintf(o.Log, "pytorch: %v\n", err)
				rows = append(rows, append(row, "-", "-"))
				continue
			}
			results = append(results, Result{Suite: "train-run", Case: c.name, Impl: "pytorch", Threads: th, Value: theirs, Unit: "tokens/s"})
			rows = append(rows, append(row, fmt.Sprintf("%.0f", theirs), ratio(res.TokensPerSec, theirs)))
		}
	}
	table(w, "compass train vs the PyTorch reference's loop, same batches: tokens/s (ratio = compass / pytorch)",
		[]string{"case", "threads", "compass", "pytorch", "ratio"}, rows)
	return results, nil
}

// writeInitAdapter writes PEFT's initialisation of an r = 16 all-linear
// adapter for the model in modelDir.
func writeInitAdapter(modelDir, dir string) (string, error) {
	m, err := model.Load(modelDir, nil)
	if err != nil {
		return "", err
	}
	defer m.Close()
	cfg := lora.DefaultConfig()
	cfg.R, cfg.LoraAlpha, cfg.TargetModules = 16, 32, lora.TargetString("all-linear")
	a, err := lora.New(cfg, m.LinearModules(), 1)
	if err != nil {
		return "", err
	}
	return dir, a.Save(dir)
}

// planStep writes one step's micro-batches as the reference's plan reads them.
func planStep(micro []model.Batch) map[string]any {
	var mbs []map[string]any
	for _, b := range micro {
		B, T := b.IDs.Dim(0), b.IDs.Dim(1)
		ids, labels := make([][]int32, B), make([][]int32, B)
		for i := range B {
			ids[i] = b.IDs.I32()[i*T : (i+1)*T]
			labels[i] = b.Labels.I32()[i*T : (i+1)*T]
		}
		mbs = append(mbs, map[string]any{"input_ids": ids, "labels": labels, "doc_lens": b.DocLens})
	}
	return map[string]any{"micro_batches": mbs}
}

// torchTrainRun runs the reference's training loop on the plan and returns
// its tokens/s.
func torchTrainRun(o Options, modelDir, initDir, dir string, opts engine.TrainOptions, plan []map[string]any, threads int) (float64, error) {
	script, err := referenceScript()
	if err != nil {
		return 0, err
	}
	warm := opts.WarmupSteps
	data, err := json.Marshal(map[string]any{
		"steps":         plan,
		"optimizer":     map[string]any{"lr": opts.LR, "betas": []float64{opts.Beta1, opts.Beta2}, "eps": opts.Eps, "weight_decay": opts.WeightDecay},
		"schedule":      map[string]any{"name": opts.Schedule, "warmup_steps": warm, "total_steps": opts.MaxSteps, "min_lr": opts.MinLR},
		"max_grad_norm": opts.MaxGradNorm,
	})
	if err != nil {
		return 0, err
	}
	planPath, out := filepath.Join(dir, "plan.json"), filepath.Join(dir, fmt.Sprint("ref", threads))
	if err := os.WriteFile(planPath, data, 0o644); err != nil {
		return 0, err
	}
	cmd := exec.Command(o.Python, script, "train", "--model", modelDir, "--adapter", initDir, "--plan", planPath,
		"--output", out, "--threads", fmt.Sprint(threads))
	cmd.Stderr = o.Log
	if msg, err := cmd.Output(); err != nil {
		return 0, fmt.Errorf("%s train: %w %s", o.Python, err, strings.TrimSpace(string(msg)))
	}
	var m struct {
		TokensPerS float64 `json:"tokens_per_s"`
	}
	raw, err := os.ReadFile(filepath.Join(out, "metrics.json"))
	if err != nil {
		return 0, err
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		return 0, err
	}
	return m.TokensPerS, nil
}
