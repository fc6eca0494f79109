package demodata

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// demoDir is the committed demonstration.
var demoDir = filepath.Join("..", "..", "testdata", "demo")

func TestCommittedDemoMatchesSums(t *testing.T) {
	if err := Verify(demoDir); err != nil {
		t.Fatal(err)
	}
	sums, err := ReadSums(demoDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"model/config.json", "model/model.safetensors", "model/tokenizer.json", "model/tokenizer_config.json",
		"task/pool.jsonl", "task/uk-data.jsonl", "task/uk-usage.jsonl", "task/uk-heldout.jsonl", "task/mc/uk/test.jsonl"} {
		if _, ok := sums[f]; !ok {
			t.Errorf("%s is not in %s", f, SumsFile)
		}
	}
}

func TestVerifyCatchesChanges(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// sha256 of "a\n" and of "b\n".
	const sumA, sumB = "87428fc522803d31065e7bce3cf03fe475096631e5e07bbd7a0fde60c4cf25c7", "0263829989b6fd954f72baaf2fc64bc2e2f01d692d4de72986ea808f6e99813f"
	write("x.json", "a\n")
	write("task/y.jsonl", "b\n")
	write("PROVENANCE.md", "edited by hand\n")
	write(SumsFile, sumA+"  x.json\n"+sumB+"  task/y.jsonl\n")
	if err := Verify(dir); err != nil {
		t.Fatalf("unchanged files: %v", err)
	}
	write("task/y.jsonl", "c\n")
	if err := Verify(dir); err == nil || !strings.Contains(err.Error(), "task/y.jsonl: sha256") {
		t.Errorf("a changed file: %v", err)
	}
	write("task/y.jsonl", "b\n")
	os.Remove(filepath.Join(dir, "x.json"))
	if err := Verify(dir); err == nil || !strings.Contains(err.Error(), "x.json: listed") {
		t.Errorf("a missing file: %v", err)
	}
	write(SumsFile, "nonsense\n")
	if err := Verify(dir); err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Errorf("a malformed line: %v", err)
	}
}
