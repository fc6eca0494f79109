package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/compassml/compass/engine"
	"github.com/compassml/compass/lora"
	"github.com/compassml/compass/model"
	"github.com/compassml/compass/tensor"
)

// trainConfig is the benchmark model: 4 layers of hidden 512 with
// Llama-3's structure (GQA 4, SwiGLU), a 32k vocabulary, float32 weights
// (what both sides compute in on a CPU).
const trainConfig = `{"architectures":["LlamaForCausalLM"],"model_type":"llama","hidden_size":512,"intermediate_size":1536,
	"num_hidden_layers":4,"num_attention_heads":8,"num_key_value_heads":2,"vocab_size":32000,"max_position_embeddings":4096,
	"rms_norm_eps":1e-5,"rope_theta":500000.0,"tie_word_embeddings":false,"torch_dtype":"float32"}`

// runTrain times one LoRA training step (forward, fused loss, backward,
// AdamW on the LoRA parameters; r = 16 on all seven projections) on batch 4
// x 256 tokens, for compass and for the PyTorch reference
// (tools/reference/reference.py train-bench) on the same checkpoint and
// adapter, at each thread count.
func runTrain(w io.Writer, o Options) ([]Result, error) {
	dir, err := os.MkdirTemp(o.TempDir, "compass-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	B, T := 4, 256
	if o.Quick {
		B, T = 1, 32
	}
	modelDir, adapterDir := filepath.Join(dir, "model"), filepath.Join(dir, "adapter")
	fmt.Fprintf(o.Log, "train: writing a 4-layer hidden-512 checkpoint\n")
	if _, err := model.WriteRandomCheckpoint(modelDir, []byte(trainConfig), tensor.F32, 1); err != nil {
		return nil, err
	}
	m, err := model.Load(modelDir, nil)
	if err != nil {
		return nil, err
	}
	defer m.Close()
	cfg := lora.DefaultConfig()
	cfg.R, cfg.LoraAlpha = 16, 32
	cfg.TargetModules = lora.TargetString("all-linear")
	adapter, err := lora.New(cfg, m.LinearModules(), 1)
	if err != nil {
		return nil, err
	}
	if err := adapter.Save(adapterDir); err != nil {
		return nil, err
	}
	if err := m.AttachAdapter(adapter); err != nil {
		return nil, err
	}
	trainer, err := engine.NewTrainer(m, engine.DefaultAdamW())
	if err != nil {
		return nil, err
	}
	batch := randomBatch(m.Config.VocabSize, B, T)

	var results []Result
	var rows [][]string
	caseName := fmt.Sprintf("LoRA step, batch %dx%d, 4 layers hidden 512, r=16 all-linear", B, T)
	for _, threads := range o.Threads {
		fmt.Fprintf(o.Log, "train: compass, %d thread(s)\n", threads)
		prev := runtime.GOMAXPROCS(threads)
		d, err := measure(o.MinTime, func() error {
			_, err := trainer.Step(batch)
			return err
		})
		runtime.GOMAXPROCS(prev)
		if err != nil {
			return nil, err
		}
		ours := float64(B*T) / d.Seconds()
		results = append(results, Result{Suite: "train", Case: caseName, Impl: "compass", Threads: threads, Value: ours, Unit: "tokens/s"})
		row := []string{caseName, fmt.Sprint(threads), fmt.Sprintf("%.0f", ours)}

		fmt.Fprintf(o.Log, "train: pytorch, %d thread(s)\n", threads)
		theirs, err := torchTrain(o, modelDir, adapterDir, B, T, threads)
		if err != nil {
			fmt.Fprintf(o.Log, "pytorch: %v\n", err)
			rows = append(rows, append(row, "-", "-"))
			continue
		}
		results = append(results, Result{Suite: "train", Case: caseName, Impl: "pytorch", Threads: threads, Value: theirs, Unit: "tokens/s"})
		rows = append(rows, append(row, fmt.Sprintf("%.0f", theirs), ratio(ours, theirs)))
	}
	table(w, "LoRA training step on the CPU, tokens/s (median step; ratio = compass / pytorch)",
		[]string{"case", "threads", "compass", "pytorch", "ratio"}, rows)
	return results, nil
}

func randomBatch(vocab, B, T int) model.Batch {
	rng := rand.New(rand.NewPCG(3, 4))
	ids, labels := make([]int32, B*T), make([]int32, B*T)
	for i := range ids {
		ids[i] = int32(rng.IntN(vocab))
	}
	for i := range labels {
		labels[i] = model.IgnoreIndex
		if i%T != T-1 {
			labels[i] = ids[i+1]
		}
	}
	idT, _ := tensor.FromI32(ids, B, T)
	labT, _ := tensor.FromI32(labels, B, T)
	return model.Batch{IDs: idT, Labels: labT}
}

// referenceScript finds tools/reference/reference.py from the working
// directory or its parents (the benchmark runs from the repository).
func referenceScript() (string, error) {
	return findInRepository(filepath.Join("tools", "reference", "reference.py"))
}

func torchTrain(o Options, modelDir, adapterDir string, B, T, threads int) (float64, error) {
	script, err := referenceScript()
	if err != nil {
		return 0, err
	}
	steps := max(3, int(o.MinTime.Seconds()))
	cmd := exec.Command(o.Python, script, "train-bench", "--model", modelDir, "--adapter", adapterDir,
		"--batch", fmt.Sprint(B), "--seq", fmt.Sprint(T), "--steps", fmt.Sprint(steps), "--threads", fmt.Sprint(threads))
	cmd.Stderr = o.Log
	out, err := cmd.Output()
	if err != nil {
		return 0, fmt.Errorf("%s train-bench: %w", o.Python, err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	var r struct {
		TokensPerS float64 `json:"tokens_per_s"`
	}
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &r); err != nil {
		return 0, fmt.Errorf("train-bench output %q: %w", out, err)
	}
	return r.TokensPerS, nil
}
