package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"

	"github.com/compassml/compass/model/encoder"
	"github.com/compassml/compass/tensor"
)

// encodeCase is one encoder and batch of the encode suite.
type encodeCase struct {
	name       string
	config     string
	batch, seq int
}

// encodeCases: a small XLM-R (4 layers, hidden 256, e5's head dimension
// 64) over a 1,000-token vocabulary, texts of 128 tokens.
func encodeCases(quick bool) []encodeCase {
	small := `{"architectures":["XLMRobertaModel"],"model_type":"xlm-roberta","hidden_size":256,"num_hidden_layers":4,
		"num_attention_heads":4,"intermediate_size":1024,"vocab_size":1000,"max_position_embeddings":514,
		"type_vocab_size":1,"layer_norm_eps":1e-05,"pad_token_id":1}`
	if quick {
		return []encodeCase{{"small XLM-R (4 layers hidden 256), 4 texts of 32 tokens", small, 4, 32}}
	}
	return []encodeCase{{"small XLM-R (4 layers hidden 256), 16 texts of 128 tokens", small, 16, 128}}
}

// runEncode times the sentence encoder on the CPU: one forward pass over a
// batch of texts and their mean pooling to unit length, compass
// (encoder.Model.Forward and Pool, as the embedder runs them) next to the
// PyTorch reference doing the same (reference.py encode-bench: HF's
// modeling code in plain torch, eager attention).
func runEncode(w io.Writer, o Options) ([]Result, error) {
	var results []Result
	var rows [][]string
	for _, c := range encodeCases(o.Quick) {
		dir, err := os.MkdirTemp(o.TempDir, "compass-bench-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
		cfg, err := encoder.WriteRandomCheckpoint(dir, []byte(c.config), tensor.F32, 1, "")
		if err != nil {
			return nil, err
		}
		m, err := encoder.Load(dir, nil)
		if err != nil {
			return nil, err
		}
		rng := rand.New(rand.NewPCG(4, 5))
		seqs, lengths := make([][]int, c.batch), make([]int, c.batch)
		for b := range seqs {
			for range c.seq {
				seqs[b] = append(seqs[b], 2+rng.IntN(cfg.VocabSize-2))
			}
			lengths[b] = c.seq
		}
		for _, th := range o.Threads {
			fmt.Fprintf(o.Log, "encode: compass, %s, %d thread(s)\n", c.name, th)
			prev := runtime.GOMAXPROCS(th)
			d, err := measure(o.MinTime, func() error {
				h, err := m.Forward(seqs)
				if err == nil {
					_, err = encoder.Pool(h, lengths, encoder.PoolMean, true)
				}
				return err
			})
			runtime.GOMAXPROCS(prev)
			if err != nil {
				m.Close()
				return nil, err
			}
			texts := float64(c.batch) / d.Seconds()
			results = append(results,
				Result{Suite: "encode", Case: c.name, Impl: "compass", Threads: th, Value: texts, Unit: "texts/s"},
				Result{Suite: "encode", Case: c.name, Impl: "compass", Threads: th, Value: texts * float64(c.seq), Unit: "tokens/s"})
			row := []string{c.name, fmt.Sprint(th), fmt.Sprintf("%.1f", texts), fmt.Sprintf("%.0f", texts*float64(c.seq))}

			fmt.Fprintf(o.Log, "encode: pytorch, %s, %d thread(s)\n", c.name, th)
			theirs, err := torchEncode(o, dir, c, th)
			if err != nil {
				fmt.Fprintf(o.Log, "pytorch: %v\n", err)
				rows = append(rows, append(row, "-", "-", "-"))
				continue
			}
			results = append(results,
				Result{Suite: "encode", Case: c.name, Impl: "pytorch", Threads: th, Value: theirs, Unit: "texts/s"},
				Result{Suite: "encode", Case: c.name, Impl: "pytorch", Threads: th, Value: theirs * float64(c.seq), Unit: "tokens/s"})
			rows = append(rows, append(row, fmt.Sprintf("%.1f", theirs), fmt.Sprintf("%.0f", theirs*float64(c.seq)), ratio(texts, theirs)))
		}
		m.Close()
	}
	table(w, "Sentence encoder (forward + mean pooling) on the CPU vs the PyTorch reference (ratio = compass / pytorch)",
		[]string{"case", "threads", "compass texts/s", "compass tokens/s", "pytorch texts/s", "pytorch tokens/s", "ratio"}, rows)
	return results, nil
}

// torchEncode runs reference.py encode-bench and returns its texts/s.
func torchEncode(o Options, modelDir string, c encodeCase, threads int) (float64, error) {
	script, err := referenceScript()
	if err != nil {
		return 0, err
	}
	steps := max(1, int(o.MinTime/(200*time.Millisecond)))
	cmd := exec.Command(o.Python, script, "encode-bench", "--model", modelDir, "--batch", fmt.Sprint(c.batch),
		"--seq", fmt.Sprint(c.seq), "--steps", fmt.Sprint(min(steps, 20)), "--threads", fmt.Sprint(threads))
	cmd.Stderr = o.Log
	msg, err := cmd.Output()
	if err != nil {
		return 0, fmt.Errorf("%s encode-bench: %w %s", o.Python, err, strings.TrimSpace(string(msg)))
	}
	var r struct {
		Texts float64 `json:"texts_per_s"`
	}
	if err := json.Unmarshal(msg, &r); err != nil {
		return 0, fmt.Errorf("encode-bench output: %w", err)
	}
	return r.Texts, nil
}
