package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/compassml/compass/internal/tinymodel"
	"github.com/compassml/compass/lora"
	"github.com/compassml/compass/model"
	"github.com/compassml/compass/tensor"
)

// runErr runs the CLI and returns stdout, stderr and the error.
func runErr(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	app := newApp()
	app.Writer, app.ErrWriter = &out, &errb
	err := app.Run(context.Background(), append([]string{"compass"}, args...))
	return out.String(), errb.String(), err
}

func tinyTrainSetup(t *testing.T) (modelDir, data, work string) {
	t.Helper()
	work = t.TempDir()
	modelDir = filepath.Join(work, "model")
	if _, err := model.WriteRandomCheckpoint(modelDir, []byte(tinymodel.Config), tensor.F32, 2); err != nil {
		t.Fatal(err)
	}
	if err := tinymodel.WriteTokenizer(modelDir); err != nil {
		t.Fatal(err)
	}
	data = filepath.Join(work, "train.jsonl")
	if err := tinymodel.WriteTextData(data, 2); err != nil {
		t.Fatal(err)
	}
	return modelDir, data, work
}

// compass train from a config file with a flag over it, then compass score
// with the adapter it wrote: the adapter lowers the perplexity of the
// training text, and training_config.json records the effective options.
func TestTrainCommand(t *testing.T) {
	modelDir, data, work := tinyTrainSetup(t)
	out := filepath.Join(work, "run")
	cfg := filepath.Join(work, "train.yaml")
	os.WriteFile(cfg, []byte("seq_len: 64\nmicro_batch: 2\nglobal_batch: 4\nrank: 8\nlr: 0.01\nschedule: linear\neval_every: 5\nsave_every: 5\n"), 0o644)
	_, stderr, err := runErr(t, "train", "--config", cfg, "--model", modelDir, "--data", data, "--eval-split", "0.1",
		"--output", out, "--max-steps", "12", "--rank", "4", "--device", "cpu", "--quiet")
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	for _, want := range []string{"trained 12 steps", "best eval loss", "examples"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	var tc struct {
		Options struct {
			Rank   int     `json:"rank"`
			SeqLen int     `json:"seq_len"`
			LR     float64 `json:"lr"`
		} `json:"options"`
		Data []struct {
			SHA256 string `json:"sha256"`
		} `json:"data"`
		Signature string `json:"model_signature"`
	}
	raw, err := os.ReadFile(filepath.Join(out, "training_config.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &tc); err != nil {
		t.Fatal(err)
	}
	if tc.Options.Rank != 4 || tc.Options.SeqLen != 64 || tc.Options.LR != 0.01 || len(tc.Data) != 1 || len(tc.Data[0].SHA256) != 64 || tc.Signature == "" {
		t.Errorf("training_config.json: %s", raw)
	}
	for _, f := range []string{"checkpoint-00000005", "checkpoint-00000010", "checkpoint-00000012", "best", "loss.png", "metrics.jsonl"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Errorf("output lacks %s", f)
		}
	}
	in := filepath.Join(work, "score.jsonl")
	os.WriteFile(in, []byte("{\"text\": \"All human beings are born free and equal in dignity and rights. 0\"}\n"), 0o644)
	ppl := func(args ...string) float64 {
		text, err := run(t, append([]string{"score", "--model", modelDir, "--input", in, "--device", "cpu"}, args...)...)
		if err != nil {
			t.Fatal(err)
		}
		var rec struct{ Perplexity float64 }
		json.Unmarshal([]byte(text), &rec)
		return rec.Perplexity
	}
	base, tuned := ppl(), ppl("--adapter", out)
	if !(tuned < base) {
		t.Errorf("perplexity with the trained adapter %.2f, without %.2f", tuned, base)
	}
}

// SIGINT finishes the step, saves a checkpoint but no final adapter, and
// ends with status 130, saying how to resume; --resume latest then
// finishes the run.
func TestTrainCommandInterrupt(t *testing.T) {
	modelDir, data, work := tinyTrainSetup(t)
	out := filepath.Join(work, "run")
	args := []string{"train", "--model", modelDir, "--data", data, "--output", out, "--seq-len", "64", "--micro-batch", "2",
		"--global-batch", "2", "--max-steps", "400", "--save-every", "1000", "--eval-every", "0", "--device", "cpu", "--quiet"}
	go func() {
		for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			if b, err := os.ReadFile(filepath.Join(out, "metrics.jsonl")); err == nil && bytes.Count(b, []byte("\n")) >= 3 {
				syscall.Kill(os.Getpid(), syscall.SIGINT)
				return
			}
		}
	}()
	_, stderr, err := runErr(t, args...)
	var es *exitStatus
	if !errors.As(err, &es) || es.status != 130 {
		t.Fatalf("interrupted run: %v, want exit status 130\n%s", err, stderr)
	}
	if !strings.Contains(err.Error(), "interrupted at step") || !strings.Contains(err.Error(), "--resume latest") {
		t.Fatalf("the error does not say how to resume: %v", err)
	}
	if strings.Contains(stderr, "trained 400 steps") {
		t.Fatal("the run was not interrupted")
	}
	if _, err := os.Stat(filepath.Join(out, lora.WeightsName)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the interrupted run left %s in its output (%v): it reads as a finished adapter", lora.WeightsName, err)
	}
	_, stderr, err = runErr(t, append(args, "--resume", "latest")...)
	if err != nil || !strings.Contains(stderr, "trained 400 steps") {
		t.Fatalf("resume: %v\n%s", err, stderr)
	}
	if _, err := os.Stat(filepath.Join(out, lora.WeightsName)); err != nil {
		t.Errorf("the finished run: %v", err)
	}
}

// A flag value that is neither of a flag's words is an error, not the
// default's opposite.
func TestTrainCommandPackingValue(t *testing.T) {
	_, err := run(t, "train", "--model", "m", "--data", "d.jsonl", "--output", t.TempDir(), "--packing", "maybe")
	if err == nil || !strings.Contains(err.Error(), `--packing: "maybe": want on or off`) {
		t.Errorf("--packing maybe: %v", err)
	}
}
