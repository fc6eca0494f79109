package main

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/compassml/compass/model/encoder"
	"github.com/compassml/compass/sampling/embed"
	"github.com/compassml/compass/tensor"
)

// TestEmbedCommandEncoder embeds with --encoder: a tiny random XLM-R over
// the UDHR Unigram tokenizer of testdata, with e5's prefixes.
func TestEmbedCommandEncoder(t *testing.T) {
	dir := t.TempDir()
	encDir := filepath.Join(dir, "encoder")
	cfg := `{"architectures": ["XLMRobertaModel"], "model_type": "xlm-roberta", "hidden_size": 32,
		"num_hidden_layers": 1, "num_attention_heads": 4, "intermediate_size": 64, "vocab_size": 4002,
		"max_position_embeddings": 130, "type_vocab_size": 1, "layer_norm_eps": 1e-05, "pad_token_id": 1}`
	if _, err := encoder.WriteRandomCheckpoint(encDir, []byte(cfg), tensor.F32, 3, ""); err != nil {
		t.Fatal(err)
	}
	tok, err := os.ReadFile("../../testdata/tokenizers/unigram/udhr-xlmr/tokenizer.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(encDir, "tokenizer.json"), tok, 0o644); err != nil {
		t.Fatal(err)
	}
	cache := filepath.Join(dir, "cache")
	input := "../../testdata/datasets/aya.parquet"
	out := filepath.Join(dir, "usage.safetensors")
	msg, err := runEmbed(t, "--encoder", encDir, "--prefix", "query: ", "--input", input, "--output", out, "--cache", cache)
	if err != nil {
		t.Fatalf("%v\n%s", err, msg)
	}
	if !strings.Contains(msg, "embedded 7 records") || !strings.Contains(msg, "7 by the model, 0 from the cache") {
		t.Errorf("first run printed %q", msg)
	}
	usage, err := embed.Load(out, embed.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if usage.Vectors.Dim(0) != 7 || usage.Vectors.Dim(1) != 32 {
		t.Fatalf("vectors %v", usage.Vectors)
	}
	for i := range 7 {
		var norm float64
		for _, x := range usage.Vectors.F32()[32*i : 32*(i+1)] {
			norm += float64(x) * float64(x)
		}
		if math.Abs(norm-1) > 1e-5 {
			t.Errorf("row %d: squared norm %v", i, norm)
		}
	}
	if !strings.HasPrefix(usage.Embedder, "encoder;model:") || !strings.Contains(usage.Embedder, `prefix="query: "`) {
		t.Errorf("embedder %q", usage.Embedder)
	}

	// Another prefix is another embedding space: nothing from the cache.
	out2 := filepath.Join(dir, "pool.safetensors")
	msg, err = runEmbed(t, "--encoder", encDir, "--prefix", "passage: ", "--input", input, "--output", out2, "--cache", cache)
	if err != nil || !strings.Contains(msg, "7 by the model, 0 from the cache") {
		t.Errorf("passage run: %v\n%s", err, msg)
	}
	pool, err := embed.Load(out2, embed.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if pool.Vectors.F32()[0] == usage.Vectors.F32()[0] {
		t.Errorf("the prefix did not change the first vector")
	}
	// The same settings again: all from the cache.
	msg, err = runEmbed(t, "--encoder", encDir, "--prefix", "query: ", "--input", input, "--output", filepath.Join(dir, "again.npy"), "--cache", cache)
	if err != nil || !strings.Contains(msg, "0 by the model, 7 from the cache") {
		t.Errorf("cached run: %v\n%s", err, msg)
	}

	// More tokens than the positions cover; an unknown pooling.
	if _, err := runEmbed(t, "--encoder", encDir, "--max-len", "200", "--input", input, "--output", filepath.Join(dir, "x.npy"), "--no-cache"); err == nil || !strings.Contains(err.Error(), "position embeddings cover") {
		t.Errorf("--max-len 200: %v", err)
	}
	if _, err := runEmbed(t, "--encoder", encDir, "--pooling", "max", "--input", input, "--output", filepath.Join(dir, "x.npy"), "--no-cache"); err == nil || !strings.Contains(err.Error(), `pooling "max"`) {
		t.Errorf("--pooling max: %v", err)
	}
}
