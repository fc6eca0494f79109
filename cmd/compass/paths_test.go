package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Each command that writes a file or directory atomically refuses an
// output that is one of its inputs, however it is spelled, or that cannot
// be made, before any work, and leaves the input as it was.
func TestOutputsRefuseToOverwriteInputs(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "data.jsonl")
	const content = `{"text": "one"}` + "\n"
	if err := os.WriteFile(f, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	other := dir + string(filepath.Separator) + "." + string(filepath.Separator) + "data.jsonl" // the same file, spelled otherwise
	modelDir, data, work := tinyTrainSetup(t)
	adapter := filepath.Join(work, "init")
	if err := os.MkdirAll(adapter, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"score", "--model", "m", "--input", f, "--output", other}, "--output " + other + " is also --input"},
		{[]string{"generate", "--model", "m", "--input", f, "--output", f}, "--output " + f + " is also --input"},
		{[]string{"embed", "--model", "m", "--input", f, "--output", f}, "--output " + f + " is also --input"},
		{[]string{"select", "--method", "random", "--target", "sw", "--pool-meta", f, "--budget", "1", "--output", f}, "is also --pool-meta"},
		{[]string{"train", "--model", modelDir, "--data", data, "--init-adapter", adapter, "--output", adapter, "--device", "cpu"}, "is also --init-adapter"},
	} {
		_, err := run(t, c.args...)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "refusing to write over an input") {
			t.Errorf("%s: %v, want an error saying %q", strings.Join(c.args, " "), err, c.want)
		}
	}
	if b, err := os.ReadFile(f); err != nil || string(b) != content {
		t.Errorf("the input after the refusals: %q, %v", b, err)
	}
	if entries, err := os.ReadDir(adapter); err != nil || len(entries) != 0 {
		t.Errorf("the init adapter's directory after the refusal: %d entries, %v", len(entries), err)
	}

	// An output that is not an input, or not there yet, is no reason to stop.
	if err := checkOutput("output", filepath.Join(dir, "new.jsonl"), "input", f); err != nil {
		t.Errorf("a new output: %v", err)
	}
	if err := checkOutput("output", "-", "input", "-"); err != nil {
		t.Errorf("standard input and output: %v", err)
	}

	// An output in folders not made yet is written there; one under a
	// file is refused before any work.
	meta := filepath.Join(dir, "meta.jsonl")
	if err := os.WriteFile(meta, []byte(`{"id": "a", "language": "fr"}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	nested := filepath.Join(dir, "not", "yet", "selected.jsonl")
	if _, err := run(t, "select", "--method", "random", "--target", "sw", "--pool-meta", meta, "--budget", "1", "--output", nested); err != nil {
		t.Fatalf("select into folders not made yet: %v", err)
	}
	if _, err := os.Stat(nested); err != nil {
		t.Errorf("the manifest in folders not made yet: %v", err)
	}
	for _, args := range [][]string{
		{"score", "--model", "m", "--input", f, "--output", filepath.Join(f, "x.jsonl")},
		{"embed", "--model", "m", "--input", f, "--output", filepath.Join(f, "sub", "x.safetensors")},
		{"select", "--method", "random", "--target", "sw", "--pool-meta", f, "--budget", "1", "--output", filepath.Join(f, "x.jsonl")},
	} {
		_, err := run(t, args...)
		if want := f + " is not a directory"; err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want an error saying %q", strings.Join(args, " "), err, want)
		}
	}
}

// Counts that cannot be are errors before any work.
func TestCountsRefusedFirst(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"generate", "--model", "m", "--prompt", "x", "--batch-size", "0"}, "--batch-size 0"},
		{[]string{"bench", "--only", "matmul", "--threads", "0"}, "--threads 0"},
	} {
		if _, err := run(t, c.args...); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error naming %q", strings.Join(c.args, " "), err, c.want)
		}
	}
}
