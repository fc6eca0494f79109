package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// compass continual on a two-period stream of the tiny model: the table
// goes to stdout, the report into --report-dir; a bad strategy names it.
func TestContinualCommand(t *testing.T) {
	modelDir, data, work := tinyTrainSetup(t)
	eval := filepath.Join(work, "eval.jsonl")
	if err := os.WriteFile(eval, []byte(`{"text":"a sentence to score"}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	config := filepath.Join(work, "continual.yaml")
	text := "model: " + modelDir + "\nwork_dir: work\nperiods:\n" +
		"  - {name: first, data: [" + data + "], eval: eval.jsonl}\n" +
		"  - {name: second, data: [" + data + "], eval: eval.jsonl}\n" +
		"strategies: [naive, ecda]\nfisher_examples: 4\n" +
		"train: {seq_len: 32, micro_batch: 2, global_batch: 2, max_steps: 2, rank: 2}\n"
	if err := os.WriteFile(config, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	reportDir := filepath.Join(work, "rep")
	out, stderr, err := runErr(t, "continual", "--config", config, "--device", "cpu", "--report-dir", reportDir)
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	for _, want := range []string{"| naive |", "| ecda |", "| base model |"} {
		if !strings.Contains(out, want) {
			t.Errorf("stdout lacks %q:\n%s", want, out)
		}
	}
	if _, err := os.Stat(filepath.Join(reportDir, "continual.png")); err != nil {
		t.Error(err)
	}
	bad := strings.Replace(text, "[naive, ecda]", "[naive, magic]", 1)
	if err := os.WriteFile(config, []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := runErr(t, "continual", "--config", config); err == nil || !strings.Contains(err.Error(), `"magic"`) {
		t.Errorf("unknown strategy: %v", err)
	}
}
