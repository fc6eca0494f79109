package engine

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/compassml/compass/model/encoder"
	"github.com/compassml/compass/sampling/embed"
	"github.com/compassml/compass/tensor"
)

// writeTinyEncoder writes a random 1-layer XLM-R over the UDHR Unigram
// tokenizer of testdata into dir.
func writeTinyEncoder(t *testing.T, dir string) {
	t.Helper()
	cfg := `{"architectures": ["XLMRobertaModel"], "model_type": "xlm-roberta", "hidden_size": 16,
		"num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32, "vocab_size": 4002,
		"max_position_embeddings": 130, "type_vocab_size": 1, "layer_norm_eps": 1e-05, "pad_token_id": 1}`
	if _, err := encoder.WriteRandomCheckpoint(dir, []byte(cfg), tensor.F32, 2, ""); err != nil {
		t.Fatal(err)
	}
	tok, err := os.ReadFile(filepath.Join("..", "testdata", "tokenizers", "unigram", "udhr-xlmr", "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "tokenizer.json"), tok, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestAdaptEncoder: with embed.encoder every data file is embedded by the
// encoder, the usage set with "query: " and the pool and D_t with
// "passage: " (e5's), and the encoder and the prefixes are part of the
// embed steps' addresses.
func TestAdaptEncoder(t *testing.T) {
	path, cfg := adaptFixture(t)
	encDir := filepath.Join(filepath.Dir(path), "e5")
	writeTinyEncoder(t, encDir)
	plan := func() *adaptRun {
		t.Helper()
		r, err := planAdapt(context.Background(), readAdapt(t, path), AdaptEnv{})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	embedKeys := func(r *adaptRun) map[string]string {
		k := map[string]string{}
		for _, s := range r.steps {
			if s.kind == "embed" {
				k[s.name] = s.key
			}
		}
		return k
	}
	decoder := embedKeys(plan())
	cfg["embed"] = map[string]any{"encoder": "e5"}
	writeJSON(t, path, cfg)
	r := plan()
	defer r.close()
	withEncoder := embedKeys(r)
	for name, key := range withEncoder {
		if decoder[name] == key {
			t.Errorf("%s: the same address with the encoder as with the model", name)
		}
	}
	for _, s := range r.steps {
		if s.kind != "embed" {
			continue
		}
		dir := t.TempDir()
		if _, err := s.run(s, dir); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		e, err := embed.Load(embeddingsFile(dir), embed.LoadOptions{})
		if err != nil {
			t.Fatal(err)
		}
		want := `prefix="passage: "`
		if strings.HasSuffix(s.name, "usage") {
			want = `prefix="query: "`
		}
		if e.Vectors.Dim(1) != 16 || !strings.HasPrefix(e.Embedder, "encoder;") || !strings.Contains(e.Embedder, want) {
			t.Errorf("%s: %v embedded by %q, want the encoder with %s", s.name, e.Vectors, e.Embedder, want)
		}
	}

	// Another usage prefix changes the usage set's address alone.
	empty := ""
	cfg["embed"] = map[string]any{"encoder": "e5", "usage_prefix": &empty}
	writeJSON(t, path, cfg)
	for name, key := range embedKeys(plan()) {
		if changed := key != withEncoder[name]; changed != strings.HasSuffix(name, "usage") {
			t.Errorf("usage_prefix: %s's address changed: %v", name, changed)
		}
	}

	for _, bad := range []struct {
		embed map[string]any
		want  string
	}{
		{map[string]any{"pooling": "cls"}, "embed.pooling: goes with embed.encoder"},
		{map[string]any{"encoder": "e5", "pooling": "max"}, "embed.pooling"},
		{map[string]any{"encoder": "nowhere"}, "embed.encoder"},
	} {
		cfg["embed"] = bad.embed
		writeJSON(t, path, cfg)
		if err := readAdapt(t, path).Validate(); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("embed %v: %v, want %q", bad.embed, err, bad.want)
		}
	}
}
