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
	"slices"
	"strings"
	"time"

	"github.com/compassml/compass/model"
	"github.com/compassml/compass/tensor"
)

// generateCase is one model and batch of the generate suite.
type generateCase struct {
	name               string
	config             string
	batch, prompt, new int
	repeats            int // timed runs per side; the medians are reported
}

// generateCases: a small llama over the byte vocabulary (the train-run
// suite's), one prompt and a batch of eight.
func generateCases(quick bool) []generateCase {
	small := `{"architectures":["LlamaForCausalLM"],"model_type":"llama","hidden_size":256,"intermediate_size":768,
		"num_hidden_layers":4,"num_attention_heads":4,"num_key_value_heads":2,"vocab_size":260,"max_position_embeddings":4096,
		"eos_token_id":256,"bos_token_id":257,"rope_theta":10000,"torch_dtype":"float32"}`
	if quick {
		return []generateCase{{"small model (4 layers hidden 256), batch 2, prompt 64, 16 new", small, 2, 64, 16, 1}}
	}
	return []generateCase{
		{"small model (4 layers hidden 256), batch 1, prompt 512, 64 new", small, 1, 512, 64, 5},
		{"small model (4 layers hidden 256), batch 8, prompt 512, 64 new", small, 8, 512, 64, 5},
	}
}

// runGenerate times KV-cached greedy decoding on the CPU: the prefill of
// the prompts and the decode steps (one token per prompt each), compass
// (model.Prefill and Decode, as engine.Generate runs them) next to the
// PyTorch reference doing the same (reference.py generate-bench: plain
// torch, a KV cache of concatenated tensors, as HF's DynamicCache). Both
// decode the same random prompts greedily; the table says whether they
// chose the same tokens.
func runGenerate(w io.Writer, o Options) ([]Result, error) {
	var results []Result
	var rows [][]string
	for _, c := range generateCases(o.Quick) {
		dir, err := os.MkdirTemp(o.TempDir, "compass-bench-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
		if _, err := model.WriteRandomCheckpoint(dir, []byte(c.config), tensor.F32, 1); err != nil {
			return nil, err
		}
		rng := rand.New(rand.NewPCG(2, 3))
		prompts := make([][]int, c.batch)
		for b := range prompts {
			for range c.prompt {
				prompts[b] = append(prompts[b], rng.IntN(256))
			}
		}
		input := filepath.Join(dir, "prompts.json")
		data, err := json.Marshal(map[string]any{"input_ids": prompts})
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(input, data, 0o644); err != nil {
			return nil, err
		}
		m, err := model.Load(dir, nil)
		if err != nil {
			return nil, err
		}
		for _, th := range o.Threads {
			fmt.Fprintf(o.Log, "generate: compass, %s, %d thread(s)\n", c.name, th)
			prev := runtime.GOMAXPROCS(th)
			prefill, decode, ours, err := timeGenerate(m, prompts, c.new, c.repeats)
			runtime.GOMAXPROCS(prev)
			if err != nil {
				m.Close()
				return nil, err
			}
			results = append(results,
				Result{Suite: "generate", Case: c.name + ": prefill", Impl: "compass", Threads: th, Value: prefill, Unit: "tokens/s"},
				Result{Suite: "generate", Case: c.name + ": decode", Impl: "compass", Threads: th, Value: decode, Unit: "tokens/s"})
			row := []string{c.name, fmt.Sprint(th), fmt.Sprintf("%.0f", prefill), fmt.Sprintf("%.0f", decode)}

			fmt.Fprintf(o.Log, "generate: pytorch, %s, %d thread(s)\n", c.name, th)
			tp, td, theirs, err := torchGenerate(o, dir, input, c.new, c.repeats, th)
			if err != nil {
				fmt.Fprintf(o.Log, "pytorch: %v\n", err)
				rows = append(rows, append(row, "-", "-", "-", "-", "-"))
				continue
			}
			same := "yes"
			for b := range ours {
				if !slices.Equal(ours[b], theirs[b]) {
					same = "no"
				}
			}
			results = append(results,
				Result{Suite: "generate", Case: c.name + ": prefill", Impl: "pytorch", Threads: th, Value: tp, Unit: "tokens/s"},
				Result{Suite: "generate", Case: c.name + ": decode", Impl: "pytorch", Threads: th, Value: td, Unit: "tokens/s"})
			rows = append(rows, append(row, fmt.Sprintf("%.0f", tp), fmt.Sprintf("%.0f", td),
				ratio(prefill, tp), ratio(decode, td), same))
		}
		m.Close()
	}
	table(w, "KV-cached greedy generation on the CPU vs the PyTorch reference: tokens/s (ratio = compass / pytorch)",
		[]string{"case", "threads", "compass prefill", "compass decode", "pytorch prefill", "pytorch decode",
			"prefill ratio", "decode ratio", "same tokens"}, rows)
	return results, nil
}

// timeGenerate decodes greedily with the KV cache after a warm-up, repeats
// times over (a fresh cache each), and returns the median prefill and
// decode tokens/s and the tokens chosen (the same every time).
func timeGenerate(m *model.Model, prompts [][]int, steps, repeats int) (prefill, decode float64, out [][]int, err error) {
	B := len(prompts)
	warm, err := m.NewKVCache(B, 16, 0)
	if err != nil {
		return 0, 0, nil, err
	}
	short := make([][]int, B)
	for b, p := range prompts {
		short[b] = p[:8]
	}
	_, err = m.Prefill(warm, short)
	warm.Close()
	if err != nil {
		return 0, 0, nil, err
	}
	var prefills, decodes []float64
	for range repeats {
		p, d, o, err := generateOnce(m, prompts, steps)
		if err != nil {
			return 0, 0, nil, err
		}
		prefills, decodes, out = append(prefills, p), append(decodes, d), o
	}
	return medianOf(prefills), medianOf(decodes), out, nil
}

// generateOnce prefills a fresh cache with the prompts and decodes steps
// tokens greedily, returning both rates and the tokens.
func generateOnce(m *model.Model, prompts [][]int, steps int) (prefill, decode float64, out [][]int, err error) {
	B, T := len(prompts), len(prompts[0])
	c, err := m.NewKVCache(B, T+steps, 0)
	if err != nil {
		return 0, 0, nil, err
	}
	defer c.Close()
	begin := time.Now()
	logits, err := m.Prefill(c, prompts)
	if err != nil {
		return 0, 0, nil, err
	}
	prefill = float64(B*T) / time.Since(begin).Seconds()
	out = make([][]int, B)
	V := m.Config.VocabSize
	next := make([]int, B)
	begin = time.Now()
	for step := range steps {
		for b := range B {
			next[b] = argmaxF32(logits.F32()[b*V : (b+1)*V])
			out[b] = append(out[b], next[b])
		}
		if step+1 < steps {
			if logits, err = m.Decode(c, next); err != nil {
				return 0, 0, nil, err
			}
		}
	}
	decode = float64(B*(steps-1)) / time.Since(begin).Seconds()
	return prefill, decode, out, nil
}

// medianOf returns the middle value of xs (the upper of the two middle ones
// for an even count); xs is sorted in place.
func medianOf(xs []float64) float64 {
	slices.Sort(xs)
	return xs[len(xs)/2]
}

func argmaxF32(x []float32) int {
	best := 0
	for i, v := range x {
		if v > x[best] {
			best = i
		}
	}
	return best
}

// torchGenerate runs reference.py generate-bench.
func torchGenerate(o Options, modelDir, input string, steps, repeats, threads int) (prefill, decode float64, generated [][]int, err error) {
	script, err := referenceScript()
	if err != nil {
		return 0, 0, nil, err
	}
	cmd := exec.Command(o.Python, script, "generate-bench", "--model", modelDir, "--input", input,
		"--new-tokens", fmt.Sprint(steps), "--repeats", fmt.Sprint(repeats), "--threads", fmt.Sprint(threads))
	cmd.Stderr = o.Log
	msg, err := cmd.Output()
	if err != nil {
		return 0, 0, nil, fmt.Errorf("%s generate-bench: %w %s", o.Python, err, strings.TrimSpace(string(msg)))
	}
	var r struct {
		Prefill   float64 `json:"prefill_tokens_per_s"`
		Decode    float64 `json:"decode_tokens_per_s"`
		Generated [][]int `json:"generated"`
	}
	if err := json.Unmarshal(msg, &r); err != nil {
		return 0, 0, nil, fmt.Errorf("generate-bench output: %w", err)
	}
	return r.Prefill, r.Decode, r.Generated, nil
}
