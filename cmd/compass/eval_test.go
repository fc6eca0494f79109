package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// compass eval on the Global-MMLU-shaped fixture writes the report with
// the base model and the adapter side by side; a long-context task's list
// parameters survive the flag's comma splitting.
func TestEvalCommand(t *testing.T) {
	modelDir, data, work := tinyTrainSetup(t)
	adapter := filepath.Join(work, "run")
	if _, stderr, err := runErr(t, "train", "--model", modelDir, "--data", data, "--output", adapter, "--seq-len", "64",
		"--micro-batch", "2", "--global-batch", "2", "--max-steps", "3", "--device", "cpu", "--quiet"); err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	out := filepath.Join(work, "eval")
	_, stderr, err := runErr(t, "eval", "--model", modelDir, "--adapter", adapter, "--task", "global-mmlu",
		"--data", "../../engine/testdata/eval/global-mmlu", "--lang", "sw", "--shots", "0", "--output-dir", out, "--device", "cpu", "--quiet")
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	report, err := os.ReadFile(filepath.Join(out, "report.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"## global-mmlu", "| sw |", "base → run", "McNemar"} {
		if !strings.Contains(string(report), want) {
			t.Errorf("report.md lacks %q:\n%s", want, report)
		}
	}
	for _, f := range []string{"results.json", "global-mmlu.png"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Errorf("no %s", f)
		}
	}
}

func TestEvalCommandBadFlags(t *testing.T) {
	_, _, err := runErr(t, "eval", "--model", "m", "--task", "global-mmlu", "--lang", "sw", "--data", "d", "--batch-tokens", "0")
	if err == nil || !strings.Contains(err.Error(), "eval: --batch-tokens 0: want 1 or more") {
		t.Errorf("--batch-tokens 0: %v", err)
	}
}

func TestParseTaskParams(t *testing.T) {
	got, err := parseTaskParams([]string{"length=8192", "32768", "depth=0", "50", "100", "variant=none"})
	if err != nil || got["length"] != "8192,32768" || got["depth"] != "0,50,100" || got["variant"] != "none" {
		t.Errorf("%v %v", got, err)
	}
	for _, bad := range [][]string{{"8192"}, {"=3"}} {
		if _, err := parseTaskParams(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}
