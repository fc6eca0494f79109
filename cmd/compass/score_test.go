package main

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/compassml/compass/lora"
	"github.com/compassml/compass/model"
	"github.com/compassml/compass/tensor"
)

const tinyQwen = `{"architectures":["Qwen2ForCausalLM"],"model_type":"qwen2","hidden_size":16,"intermediate_size":24,
	"num_hidden_layers":1,"num_attention_heads":2,"num_key_value_heads":1,"vocab_size":30,"torch_dtype":"float32"}`

func TestScoreCommand(t *testing.T) {
	dir := t.TempDir()
	modelDir := filepath.Join(dir, "model")
	if _, err := model.WriteRandomCheckpoint(modelDir, []byte(tinyQwen), tensor.BF16, 1); err != nil {
		t.Fatal(err)
	}
	in := filepath.Join(dir, "in.jsonl")
	if err := os.WriteFile(in, []byte("{\"ids\": [1, 2, 3]}\n{\"ids\": [4, 5]}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out.jsonl")
	if _, err := run(t, "score", "--model", modelDir, "--input", in, "--output", out); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d output lines:\n%s", len(lines), data)
	}
	var rec struct {
		Tokens     int       `json:"tokens"`
		LogProbs   []float64 `json:"logprobs"`
		Perplexity float64   `json:"perplexity"`
	}
	if err := json.Unmarshal([]byte(lines[0]), &rec); err != nil || rec.Tokens != 3 || len(rec.LogProbs) != 2 || rec.Perplexity <= 1 {
		t.Errorf("first line %s (%v)", lines[0], err)
	}

	// With a PEFT adapter whose B is not zero, the scores change.
	m, err := model.Load(modelDir, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := lora.DefaultConfig()
	cfg.TargetModules = lora.TargetNames("q_proj", "v_proj")
	cfg.InitLoraWeights = false // B random too
	a, err := lora.New(cfg, m.LinearModules(), 3)
	m.Close()
	if err != nil {
		t.Fatal(err)
	}
	adapterDir := filepath.Join(dir, "adapter")
	if err := a.Save(adapterDir); err != nil {
		t.Fatal(err)
	}
	withAdapter, err := run(t, "score", "--model", modelDir, "--adapter", adapterDir, "--input", in)
	if err != nil {
		t.Fatal(err)
	}
	if first := strings.SplitN(withAdapter, "\n", 2)[0]; first == lines[0] {
		t.Error("the adapter did not change the scores")
	}

	// A bad line fails and leaves no output file behind.
	if err := os.WriteFile(in, []byte("{\"ids\": [1, 2]}\n{\"ids\": [1, 99]}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.jsonl")
	if _, err := run(t, "score", "--model", modelDir, "--input", in, "--output", bad); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("bad id: err = %v", err)
	}
	if _, err := os.Stat(bad); !os.IsNotExist(err) {
		t.Errorf("output file left behind after a failure: %v", err)
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.Contains(e.Name(), ".tmp") {
			t.Errorf("temp file left behind: %s", e.Name())
		}
	}
	if _, err := run(t, "score", "--model", filepath.Join(dir, "nope"), "--input", in); err == nil {
		t.Error("missing model: no error")
	}
}

// With a tokenizer.json in the model directory, {"text": ...} lines are
// tokenized as HF does (with Llama-3's BOS) and scored like their ids.
func TestScoreText(t *testing.T) {
	dir := t.TempDir()
	cfg := `{"architectures":["LlamaForCausalLM"],"model_type":"llama","hidden_size":16,"intermediate_size":16,
		"num_hidden_layers":1,"num_attention_heads":2,"num_key_value_heads":1,"vocab_size":128256,"torch_dtype":"bfloat16"}`
	if _, err := model.WriteRandomCheckpoint(dir, []byte(cfg), tensor.BF16, 1); err != nil {
		t.Fatal(err)
	}
	tok, err := os.ReadFile(filepath.Join("..", "..", "tools", "tokref", "node_modules", "@lenml", "tokenizer-llama3_1", "models", "tokenizer.json"))
	if err != nil {
		t.Fatalf("the Llama-3.1 tokenizer fixture is missing (run `make tokref`): %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "tokenizer.json"), tok, 0o644); err != nil {
		t.Fatal(err)
	}
	in := filepath.Join(t.TempDir(), "in.jsonl")
	// "Hello world" is [128000, 9906, 1917] with the BOS (HF tokenizers).
	if err := os.WriteFile(in, []byte("{\"text\": \"Hello world\"}\n{\"ids\": [128000, 9906, 1917]}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := run(t, "score", "--model", dir, "--input", in)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 {
		t.Fatalf("output:\n%s", out)
	}
	var a, b struct {
		Tokens   int       `json:"tokens"`
		LogProbs []float64 `json:"logprobs"`
	}
	if err := json.Unmarshal([]byte(lines[0]), &a); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(lines[1]), &b); err != nil {
		t.Fatal(err)
	}
	if a.Tokens != 3 || len(a.LogProbs) != 2 || a.LogProbs[0] != b.LogProbs[0] || a.LogProbs[1] != b.LogProbs[1] {
		t.Errorf("text scored as %+v, ids as %+v", a, b)
	}
}

// Ctrl-C stops score --output between lines: exit status 130, no output
// and no temporary file left beside where it would be.
func TestScoreCommandInterrupt(t *testing.T) {
	dir := t.TempDir()
	modelDir := filepath.Join(dir, "model")
	if _, err := model.WriteRandomCheckpoint(modelDir, []byte(tinyQwen), tensor.BF16, 1); err != nil {
		t.Fatal(err)
	}
	in := filepath.Join(dir, "in.jsonl")
	if err := os.WriteFile(in, []byte(strings.Repeat("{\"ids\": [1, 2, 3, 4, 5, 6, 7, 8]}\n", 200000)), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out", "scores.jsonl")
	os.MkdirAll(filepath.Dir(out), 0o755)
	go func() {
		for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
			if tmps, _ := filepath.Glob(filepath.Join(dir, "out", ".scores.jsonl.tmp*")); len(tmps) > 0 {
				syscall.Kill(os.Getpid(), syscall.SIGINT)
				return
			}
		}
	}()
	_, stderr, err := runErr(t, "score", "--model", modelDir, "--input", in, "--output", out)
	var es *exitStatus
	if !errors.As(err, &es) || es.status != 130 || !strings.Contains(stderr, "score: interrupted") {
		t.Fatalf("interrupted score: %v, want exit status 130\n%s", err, stderr)
	}
	if left, _ := os.ReadDir(filepath.Join(dir, "out")); len(left) != 0 {
		t.Errorf("the interrupted score left %v", left)
	}
}
