package main

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// compass demo on the shipped demo model and task, cut down (the first
// records of the pool, two methods, two training steps, five items) so
// that it takes seconds: the command reads the assets' adapt.yaml,
// resolves its paths, runs adapt and prints the report. The full demo is
// `make demo`.
func TestDemoCommandOnTheShippedModel(t *testing.T) {
	demo, err := filepath.Abs("../../testdata/demo")
	if err != nil {
		t.Fatal(err)
	}
	assets := t.TempDir()
	pool := filepath.Join(assets, "pool.jsonl")
	writeHead(t, filepath.Join(demo, "task", "pool.jsonl"), pool, 120)
	config := "model: " + filepath.Join(demo, "model") + "\n" +
		"pool: {file: " + pool + "}\n" +
		"targets:\n  - language: uk\n" +
		"    usage: {file: " + filepath.Join(demo, "task", "uk-usage.jsonl") + "}\n" +
		"    data: [{file: " + filepath.Join(demo, "task", "uk-data.jsonl") + "}]\n" +
		"    heldout: " + filepath.Join(demo, "task", "uk-heldout.jsonl") + "\n" +
		"budget: 20\nk: 3\nmethods: [compass, none]\nseeds: [1]\nembed: {max_len: 16}\n" +
		"train: {seq_len: 64, micro_batch: 2, global_batch: 2, max_steps: 2, rank: 2}\n" +
		"eval: {tasks: [global-mmlu], data: " + filepath.Join(demo, "task", "mc") + ", shots: 0, limit: 5}\n" +
		"bootstrap: 100\npermutations: 100\n"
	if err := os.WriteFile(filepath.Join(assets, "adapt.yaml"), []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	work := filepath.Join(t.TempDir(), "work")
	out, stderr, err := runErr(t, "demo", "--assets", assets, "--work-dir", work, "--device", "cpu")
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	for _, want := range []string{"# compass adapt", "| compass |", "| none |", "heldout-nll", "report: " + filepath.Join(work, "report")} {
		if !strings.Contains(out, want) {
			t.Errorf("stdout lacks %q:\n%s", want, out)
		}
	}
	if _, err := os.Stat(filepath.Join(work, "report", "report.json")); err != nil {
		t.Error(err)
	}

	if _, _, err := runErr(t, "demo", "--assets", t.TempDir()); err == nil || !strings.Contains(err.Error(), "adapt.yaml") {
		t.Errorf("assets without adapt.yaml: %v", err)
	}
	if _, _, err := runErr(t, "demo", "extra"); err == nil || !strings.Contains(err.Error(), "unexpected arguments") {
		t.Errorf("an argument: %v", err)
	}
}

// compass demo --continual on the shipped demo model, cut down likewise:
// the forgetting table, then the monitor's windows and the update's
// registry.
func TestDemoContinualOnTheShippedModel(t *testing.T) {
	demo, err := filepath.Abs("../../testdata/demo")
	if err != nil {
		t.Fatal(err)
	}
	assets := t.TempDir()
	head := func(src string, n int) string {
		dst := filepath.Join(assets, filepath.Base(src))
		writeHead(t, filepath.Join(demo, src), dst, n)
		return dst
	}
	pool := head("task/pool.jsonl", 120)
	p1, p1eval := head("continual/p1-technical.jsonl", 40), head("continual/p1-technical-eval.jsonl", 40)
	p2, p2eval := head("continual/p2-religious.jsonl", 80), head("continual/p2-religious-eval.jsonl", 10)
	train := "train: {seq_len: 64, micro_batch: 2, global_batch: 2, max_steps: 2, rank: 2}\n"
	continual := "model: " + filepath.Join(demo, "model") + "\nwork_dir: work\nperiods:\n" +
		"  - {name: technical, data: [" + p1 + "], eval: " + p1eval + "}\n" +
		"  - {name: religious, data: [" + p2 + "], eval: " + p2eval + "}\n" +
		"strategies: [naive, ecda]\nfisher_examples: 4\n" + train
	adapt := "model: " + filepath.Join(demo, "model") + "\n" +
		"pool: {file: " + pool + "}\n" +
		"targets:\n  - language: uk\n" +
		"    usage: {file: " + filepath.Join(demo, "task", "uk-usage.jsonl") + "}\n" +
		"    data: [{file: " + filepath.Join(demo, "task", "uk-data.jsonl") + "}]\n" +
		"budget: 20\nk: 3\nmethods: [compass]\nseeds: [1]\nembed: {max_len: 16}\n" + train +
		"eval: {tasks: [global-mmlu], data: " + filepath.Join(demo, "task", "mc") + ", shots: 0, limit: 5}\n"
	for name, text := range map[string]string{"continual.yaml": continual, "adapt.yaml": adapt} {
		if err := os.WriteFile(filepath.Join(assets, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	work := filepath.Join(t.TempDir(), "work")
	out, stderr, err := runErr(t, "demo", "--continual", "--assets", assets, "--work-dir", work, "--device", "cpu")
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	for _, want := range []string{"# compass continual", "| ecda |", "# COMPASS-ECDA", "window 0: 40 texts", "registry: " + filepath.Join(work, "ecda", "registry")} {
		if !strings.Contains(out, want) {
			t.Errorf("stdout lacks %q:\n%s", want, out)
		}
	}
	if !strings.Contains(out, "now serves (parent v1)") && !strings.Contains(out, "no drift confirmed") {
		t.Errorf("neither an update nor its absence reported:\n%s", out)
	}

	// A broken adapt.yaml, one that parses but names a missing pool, stops
	// the demo before any training.
	missing := filepath.Join(assets, "missing-pool.jsonl")
	if err := os.WriteFile(filepath.Join(assets, "adapt.yaml"), []byte(strings.Replace(adapt, pool, missing, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	work2 := t.TempDir()
	if _, _, err := runErr(t, "demo", "--continual", "--assets", assets, "--work-dir", work2, "--device", "cpu"); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("a missing pool in adapt.yaml: %v", err)
	}
	if entries, _ := os.ReadDir(work2); len(entries) != 0 {
		t.Errorf("the demo worked before failing: %v", entries)
	}
}

// writeHead copies the first n lines of src to dst.
func writeHead(t *testing.T, src, dst string, n int) {
	t.Helper()
	f, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var b strings.Builder
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for i := 0; i < n && sc.Scan(); i++ {
		b.WriteString(sc.Text() + "\n")
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}
