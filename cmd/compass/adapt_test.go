package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// compass adapt from a YAML config: the report is written, a second run
// with --force eval reuses everything but the evaluations, and a bad
// config names its key.
func TestAdaptCommand(t *testing.T) {
	modelDir, _, work := tinyTrainSetup(t)
	var pool []string
	for i, lang := range []string{"en", "fr", "yo", "en", "fr", "yo"} {
		pool = append(pool, fmt.Sprintf(`{"id":"p%d","text":"sentence %d of the pool","language":"%s"}`, i, i, lang))
	}
	evalData, err := filepath.Abs("../../engine/testdata/eval/global-mmlu")
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"pool.jsonl":  strings.Join(pool, "\n") + "\n",
		"usage.jsonl": `{"text":"jua ni nyota"}` + "\n" + `{"text":"mwezi"}` + "\n",
		"adapt.yaml": "model: " + modelDir + "\nwork_dir: work\npool: {file: pool.jsonl}\n" +
			"targets: [{language: sw, usage: {file: usage.jsonl}}]\nbudget: 3\nk: 2\nmethods: [random, none]\nseeds: [7]\n" +
			"train: {seq_len: 32, micro_batch: 2, global_batch: 2, max_steps: 1, rank: 2, eval_every: 0}\n" +
			"eval: {tasks: [global-mmlu], data: " + evalData + ", shots: 0}\nbootstrap: 100\npermutations: 100\n",
	}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(work, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	config := filepath.Join(work, "adapt.yaml")
	out, stderr, err := runErr(t, "adapt", "--config", config, "--device", "cpu")
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	report := filepath.Join(work, "work", "report")
	if !strings.Contains(out, report) {
		t.Errorf("stdout %q does not name the report directory %s", out, report)
	}
	md, err := os.ReadFile(filepath.Join(report, "report.md"))
	if err != nil || !strings.Contains(string(md), "| random | none |") {
		t.Errorf("report.md: %v\n%s", err, md)
	}
	_, stderr, err = runErr(t, "adapt", "--config", config, "--device", "cpu", "--force", "eval")
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	for _, line := range strings.Split(stderr, "\n") {
		if !strings.HasPrefix(line, "adapt: [") {
			continue
		}
		if reused := strings.Contains(line, ": reused ("); reused == strings.Contains(line, "] eval ") {
			t.Errorf("--force eval: %s", line)
		}
	}
	bad := filepath.Join(work, "bad.yaml")
	if err := os.WriteFile(bad, []byte(strings.Replace(files["adapt.yaml"], "[random, none]", "[random, best]", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := runErr(t, "adapt", "--config", bad, "--device", "cpu"); err == nil || !strings.Contains(err.Error(), `methods: unknown method "best"`) {
		t.Errorf("bad method: err = %v", err)
	}
	// A --report-dir under a file fails before the pipeline, not after it.
	file := filepath.Join(work, "a-file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	_, stderr, err = runErr(t, "adapt", "--config", filepath.Join(work, "adapt.yaml"), "--report-dir", filepath.Join(file, "report"), "--force", "eval", "--device", "cpu")
	if err == nil || !strings.Contains(err.Error(), "adapt: --report-dir: ") || strings.Contains(stderr, "adapt: [") {
		t.Errorf("--report-dir under a file: err = %v, stderr:\n%s", err, stderr)
	}
}
