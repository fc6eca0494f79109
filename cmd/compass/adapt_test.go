package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
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

// Ctrl-C stops compass adapt inside a step (here a long training one),
// with the signal's exit status, not after the step.
func TestAdaptCommandInterrupt(t *testing.T) {
	modelDir, _, work := tinyTrainSetup(t)
	files := map[string]string{
		"pool.jsonl":  `{"text":"one of the pool","language":"en"}` + "\n" + `{"text":"two of the pool","language":"fr"}` + "\n",
		"usage.jsonl": `{"text":"jua ni nyota"}` + "\n",
		"adapt.yaml": "model: " + modelDir + "\nwork_dir: work\npool: {file: pool.jsonl}\n" +
			"targets: [{language: sw, usage: {file: usage.jsonl}}]\nbudget: 2\nk: 1\nmethods: [random]\nseeds: [7]\n" +
			"train: {seq_len: 32, micro_batch: 2, global_batch: 2, max_steps: 5000, rank: 2, eval_every: 0, save_every: 100000}\n" +
			"eval: {tasks: [global-mmlu], data: " + filepath.Join(work, "none") + ", shots: 0}\n",
	}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(work, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	os.MkdirAll(filepath.Join(work, "none"), 0o755)
	go func() {
		for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			if entries, err := os.ReadDir(filepath.Join(work, "work", "train")); err == nil && len(entries) > 0 {
				time.Sleep(200 * time.Millisecond) // into the training steps
				syscall.Kill(os.Getpid(), syscall.SIGINT)
				return
			}
		}
	}()
	_, stderr, err := runErr(t, "adapt", "--config", filepath.Join(work, "adapt.yaml"), "--device", "cpu", "--quiet")
	var es *exitStatus
	if !errors.As(err, &es) || es.status != 130 {
		t.Fatalf("interrupted adapt: %v, want exit status 130\n%s", err, stderr)
	}
	if !strings.Contains(stderr, "adapt: interrupted") || !strings.Contains(err.Error(), "interrupted at step") {
		t.Errorf("the messages do not say where it stopped: %v\n%s", err, stderr)
	}
}

// stopOnSignal: a signal cancels the context and gives the work's
// cancellation the signal's exit status; other errors pass as they are.
func TestStopOnSignal(t *testing.T) {
	var log bytes.Buffer
	ctx, finish := stopOnSignal(context.Background(), &log, stepsStopping("adapt"))
	syscall.Kill(os.Getpid(), syscall.SIGTERM)
	<-ctx.Done()
	err := finish(fmt.Errorf("adapt: embed pool: %w", ctx.Err()))
	var es *exitStatus
	if !errors.As(err, &es) || es.status != 143 || !strings.Contains(log.String(), "adapt: interrupted") {
		t.Errorf("after SIGTERM: %v (log %q), want exit status 143 and a message", err, log.String())
	}
	_, finish = stopOnSignal(context.Background(), &log, stepsStopping("adapt"))
	plain := errors.New("adapt: config key k: bad")
	if err := finish(plain); err != plain {
		t.Errorf("an error without a signal became %v", err)
	}
}
