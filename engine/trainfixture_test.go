package engine

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/compassml/compass/internal/tinymodel"
	"github.com/compassml/compass/model"
	"github.com/compassml/compass/model/tokenizer"
	"github.com/compassml/compass/tensor"
)

// tinyByteLlama is the training tests' model: tinymodel's two-layer llama
// over the byte vocabulary.
const tinyByteLlama = tinymodel.Config

// writeTinyByteModel writes a random checkpoint of config with the
// byte-level tokenizer into a new directory.
func writeTinyByteModel(t testing.TB, config string, seed uint64) string {
	t.Helper()
	dir := t.TempDir()
	if _, err := model.WriteRandomCheckpoint(dir, []byte(config), tensor.F32, seed); err != nil {
		t.Fatal(err)
	}
	if err := tinymodel.WriteTokenizer(dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

func writeJSON(t testing.TB, path string, v any) {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// writeTextData writes tinymodel's sentences n times as dir/train.jsonl.
func writeTextData(t testing.TB, dir string, n int) string {
	t.Helper()
	path := filepath.Join(dir, "train.jsonl")
	if err := tinymodel.WriteTextData(path, n); err != nil {
		t.Fatal(err)
	}
	return path
}

// loadTok loads the tokenizer of a model directory.
func loadTok(t testing.TB, dir string) *tokenizer.Tokenizer {
	t.Helper()
	tok, err := tokenizer.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}
