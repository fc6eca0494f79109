package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// compass update on an adapter registered by hand: the new version is v2,
// its parent v1, with its replay buffer and Fisher; a config without the
// usage file names it.
func TestUpdateCommand(t *testing.T) {
	modelDir, data, work := tinyTrainSetup(t)
	if _, stderr, err := runErr(t, "train", "--model", modelDir, "--data", data, "--output", filepath.Join(work, "v1"),
		"--seq-len", "32", "--micro-batch", "2", "--global-batch", "2", "--max-steps", "1", "--rank", "2", "--device", "cpu", "--quiet"); err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	reg := filepath.Join(work, "reg")
	if _, stderr, err := runErr(t, "registry", "add", "--registry", reg, "--adapter", "sw", filepath.Join(work, "v1")); err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	evalData, err := filepath.Abs("../../engine/testdata/eval/global-mmlu")
	if err != nil {
		t.Fatal(err)
	}
	var pool []string
	for i, lang := range []string{"en", "fr", "yo", "en", "fr", "yo"} {
		pool = append(pool, `{"id":"p`+string(rune('0'+i))+`","text":"sentence `+string(rune('0'+i))+` of the pool","language":"`+lang+`"}`)
	}
	files := map[string]string{
		"pool.jsonl":   strings.Join(pool, "\n") + "\n",
		"window.jsonl": `{"text":"jua ni nyota"}` + "\n" + `{"text":"mwezi"}` + "\n",
		"adapt.yaml": "model: " + modelDir + "\nwork_dir: work\npool: {file: pool.jsonl}\n" +
			"targets: [{language: sw, usage: {file: window.jsonl}}]\nbudget: 3\nk: 2\nmethods: [compass]\nseeds: [7]\n" +
			"train: {seq_len: 32, micro_batch: 2, global_batch: 2, max_steps: 1, rank: 2, eval_every: 0}\n" +
			"eval: {tasks: [global-mmlu], data: " + evalData + ", shots: 0}\nbootstrap: 100\npermutations: 100\n",
	}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(work, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out, stderr, err := runErr(t, "update", "--config", filepath.Join(work, "adapt.yaml"), "--registry", reg, "--adapter", "sw",
		"--usage", filepath.Join(work, "window.jsonl"), "--fisher-examples", "2", "--device", "cpu")
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	if !strings.Contains(out, "sw v2 (parent v1, trigger manual): 3 records selected") {
		t.Errorf("stdout: %s", out)
	}
	for _, f := range []string{"replay.jsonl", "fisher.safetensors", "adapter_model.safetensors"} {
		if _, err := os.Stat(filepath.Join(reg, "sw", "versions", "v2", f)); err != nil {
			t.Errorf("v2 lacks %s", f)
		}
	}
	if _, _, err := runErr(t, "update", "--config", filepath.Join(work, "adapt.yaml"), "--registry", reg, "--adapter", "sw",
		"--usage", filepath.Join(work, "nope.jsonl")); err == nil || !strings.Contains(err.Error(), "nope.jsonl") {
		t.Errorf("a missing usage file: %v", err)
	}
	// Bad values fail before the pipeline runs: no v3, and no step of
	// the pipeline in the work directory beyond v2's.
	steps, _ := filepath.Glob(filepath.Join(work, "work", "*", "*"))
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--drift-record", filepath.Join(work, "no-record.json")}, "drift record: open " + filepath.Join(work, "no-record.json")},
		{[]string{"--replay-share", "0"}, "--replay-share 0: want a share in (0, 1]"},
		{[]string{"--fisher-examples", "0"}, "--fisher-examples 0: want 1 or more"},
	} {
		args := append([]string{"update", "--config", filepath.Join(work, "adapt.yaml"), "--registry", reg, "--adapter", "sw",
			"--usage", filepath.Join(work, "window.jsonl"), "--device", "cpu"}, c.args...)
		if _, _, err := runErr(t, args...); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want %q", c.args, err, c.want)
		}
	}
	if after, _ := filepath.Glob(filepath.Join(work, "work", "*", "*")); len(after) != len(steps) {
		t.Errorf("the failed updates ran pipeline steps: %d step directories, %d before", len(after), len(steps))
	}
	if _, err := os.Stat(filepath.Join(reg, "sw", "versions", "v3")); !os.IsNotExist(err) {
		t.Errorf("a failed update registered v3 (%v)", err)
	}
}
