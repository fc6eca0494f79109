package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/compassml/compass/lora"
	"github.com/compassml/compass/model"
)

// resumeOptions: a short run that saves every 2 steps, with held-out
// evaluation (best adapter, patience state), dropout (its masks depend on
// the data position) and accumulation.
func resumeOptions(modelDir, data, out string) TrainOptions {
	o := DefaultTrainOptions()
	o.Model, o.Data, o.Output = modelDir, []string{data}, out
	o.SeqLen, o.MicroBatch, o.GlobalBatch, o.MaxSteps = 48, 2, 4, 10
	o.LR, o.WarmupSteps, o.Schedule, o.Rank, o.Alpha = 5e-3, 2, "cosine", 4, 8
	o.Dropout, o.EvalSplit, o.EvalEvery, o.SaveEvery, o.Keep, o.Seed = 0.1, 0.1, 3, 2, 2, 5
	return o
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// trainLines returns metrics.jsonl's lines without the timing fields,
// which differ between runs.
func trainLines(t *testing.T, out string) []string {
	t.Helper()
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(string(readFile(t, filepath.Join(out, metricsName)))), "\n") {
		for _, field := range []string{"step_s", "tokens_per_s"} {
			if i := strings.Index(l, `"`+field+`":`); i >= 0 {
				j := strings.IndexAny(l[i:], ",}")
				l = l[:i] + l[i+j:]
			}
		}
		lines = append(lines, l)
	}
	return lines
}

// An interrupted run resumed from its checkpoint continues exactly: every
// loss after the resume, the eval losses and the final adapter are
// bit-identical to those of an uninterrupted run (CPU backend).
func TestTrainResumeIsExact(t *testing.T) {
	work := t.TempDir()
	modelDir := writeTinyByteModel(t, tinyByteLlama, 4)
	data := writeTextData(t, work, 2)

	whole := filepath.Join(work, "whole")
	if _, err := Train(context.Background(), resumeOptions(modelDir, data, whole), TrainEnv{}); err != nil {
		t.Fatal(err)
	}
	// Saved at steps 2, 4, 6, 8 and 10; --keep 2 leaves the last two.
	if have, _ := checkpoints(whole); len(have) != 2 || filepath.Base(have[0]) != "checkpoint-00000008" || filepath.Base(have[1]) != "checkpoint-00000010" {
		t.Errorf("checkpoints kept: %v, want 8 and 10", have)
	}

	for _, stopAt := range []int{1, 4, 7} {
		t.Run(fmt.Sprint("stop after step ", stopAt), func(t *testing.T) {
			out := filepath.Join(work, fmt.Sprint("part", stopAt))
			ctx, cancel := context.WithCancel(context.Background())
			env := TrainEnv{OnStep: func(step int, _ []model.Batch) {
				if step == stopAt {
					cancel() // as SIGINT does: the step finishes, then the run saves and returns
				}
			}}
			res, err := Train(ctx, resumeOptions(modelDir, data, out), env)
			cancel()
			if err != nil {
				t.Fatal(err)
			}
			if !res.Interrupted || res.Steps != stopAt {
				t.Fatalf("interrupted %v at step %d, want at step %d", res.Interrupted, res.Steps, stopAt)
			}
			if _, err := os.Stat(filepath.Join(out, lora.WeightsName)); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("the interrupted run wrote a final adapter (%v)", err)
			}
			o := resumeOptions(modelDir, data, out)
			o.Resume = "latest"
			if res, err = Train(context.Background(), o, TrainEnv{}); err != nil {
				t.Fatal(err)
			}
			if res.Steps != 10 || res.StepsThis != 10-stopAt {
				t.Fatalf("resumed run ended at step %d after %d steps", res.Steps, res.StepsThis)
			}
			want, got := trainLines(t, whole), trainLines(t, out)
			if strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Errorf("metrics differ from the uninterrupted run's:\n got  %s\n want %s", strings.Join(got, "\n      "), strings.Join(want, "\n      "))
			}
			for _, f := range []string{lora.WeightsName, "best/" + lora.WeightsName} {
				if !bytes.Equal(readFile(t, filepath.Join(out, f)), readFile(t, filepath.Join(whole, f))) {
					t.Errorf("%s differs from the uninterrupted run's", f)
				}
			}
		})
	}
}

// A run cancelled before its first step (here, before it reads the data)
// writes nothing: no checkpoint, no adapter, no metrics.
func TestTrainInterruptedBeforeTheFirstStep(t *testing.T) {
	work := t.TempDir()
	modelDir := writeTinyByteModel(t, tinyByteLlama, 4)
	data := writeTextData(t, work, 2)
	out := filepath.Join(work, "run")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	res, err := Train(ctx, resumeOptions(modelDir, data, out), TrainEnv{})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Interrupted || res.Steps != 0 || res.Checkpoint != "" {
		t.Fatalf("interrupted %v at step %d, checkpoint %q", res.Interrupted, res.Steps, res.Checkpoint)
	}
	if entries, err := os.ReadDir(out); !errors.Is(err, fs.ErrNotExist) && len(entries) != 0 {
		t.Errorf("the output holds %d entries (%v), want none", len(entries), err)
	}
}

// Resuming checks that the checkpoint belongs to the run.
func TestTrainResumeRefusesAnotherRun(t *testing.T) {
	work := t.TempDir()
	modelDir := writeTinyByteModel(t, tinyByteLlama, 4)
	data := writeTextData(t, work, 2)
	out := filepath.Join(work, "run")
	o := resumeOptions(modelDir, data, out)
	o.MaxSteps = 2
	if _, err := Train(context.Background(), o, TrainEnv{}); err != nil {
		t.Fatal(err)
	}
	if _, err := Train(context.Background(), o, TrainEnv{}); err == nil || !strings.Contains(err.Error(), "--resume") {
		t.Errorf("a second run into the same --output: %v, want an error pointing to --resume", err)
	}
	// Another model: the same shapes with another rope_theta; other
	// weights of the same shapes, config and tokenizer (a fine-tune saved
	// over the base: only the weights' bytes differ).
	other := writeTinyByteModel(t, strings.Replace(tinyByteLlama, `"rope_theta":10000`, `"rope_theta":20000`, 1), 4)
	reweighted := writeTinyByteModel(t, tinyByteLlama, 5)
	cases := []struct {
		name string
		edit func(o *TrainOptions)
		want string
	}{
		{"rank", func(o *TrainOptions) { o.Rank = 8 }, "rank"},
		{"seq-len", func(o *TrainOptions) { o.SeqLen = 40 }, "seq_len"},
		{"model", func(o *TrainOptions) { o.Model = other }, "model differs"},
		{"weights", func(o *TrainOptions) { o.Model = reweighted }, "model differs"},
		{"data", func(o *TrainOptions) {
			p := filepath.Join(work, "other.jsonl")
			os.WriteFile(p, append(readFile(t, data), []byte("{\"text\": \"one more line\"}\n")...), 0o644)
			o.Data = []string{p}
		}, "training data differs"},
		{"missing", func(o *TrainOptions) { o.Resume = filepath.Join(work, "nothing") }, "not a compass checkpoint"},
	}
	for _, c := range cases {
		o := resumeOptions(modelDir, data, out)
		o.MaxSteps, o.Resume = 4, "latest"
		c.edit(&o)
		if _, err := Train(context.Background(), o, TrainEnv{}); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error saying %q", c.name, err, c.want)
		}
	}
	// The same checkpoint in another directory is the same model.
	o = resumeOptions(writeTinyByteModel(t, tinyByteLlama, 4), data, out)
	o.MaxSteps, o.Resume = 2, "latest"
	if _, err := Train(context.Background(), o, TrainEnv{}); err != nil {
		t.Errorf("resuming with a copy of the model elsewhere: %v", err)
	}
}

// The replay data belongs to a run by content: rewritten in place it is
// another run's, copied elsewhere the same.
func TestTrainResumeReplayByContent(t *testing.T) {
	work := t.TempDir()
	modelDir := writeTinyByteModel(t, tinyByteLlama, 4)
	data := writeTextData(t, work, 2)
	replay := filepath.Join(work, "replay.jsonl")
	if err := os.WriteFile(replay, []byte("{\"text\": \"an older round's line\"}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(work, "run")
	o := resumeOptions(modelDir, data, out)
	o.MaxSteps, o.ReplayData = 2, []string{replay}
	if _, err := Train(context.Background(), o, TrainEnv{}); err != nil {
		t.Fatal(err)
	}
	moved := filepath.Join(work, "moved.jsonl")
	if err := os.WriteFile(moved, readFile(t, replay), 0o644); err != nil {
		t.Fatal(err)
	}
	o.Resume, o.ReplayData = "latest", []string{moved}
	if _, err := Train(context.Background(), o, TrainEnv{}); err != nil {
		t.Errorf("resuming with the same replay data elsewhere: %v", err)
	}
	if err := os.WriteFile(moved, []byte("{\"text\": \"another round's line\"}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Train(context.Background(), o, TrainEnv{}); err == nil || !strings.Contains(err.Error(), "replay_data") {
		t.Errorf("resuming with the replay data rewritten: %v, want an error naming replay_data", err)
	}
}

// The crash test's child process: trains until the parent kills it, or
// kills itself with SIGKILL in the middle of writing the checkpoint of the
// step COMPASS_CRASH_STEP at phase COMPASS_CRASH_PHASE.
func TestTrainCrashChild(t *testing.T) {
	out := os.Getenv("COMPASS_CRASH_OUT")
	if out == "" {
		t.Skip("run by TestTrainSurvivesKill as its child process")
	}
	step, _ := strconv.Atoi(os.Getenv("COMPASS_CRASH_STEP"))
	phase := os.Getenv("COMPASS_CRASH_PHASE")
	saving := 0
	checkpointHook = func(p string) {
		if p == "adapter written" {
			saving++
		}
		if saving == step && p == phase {
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
		}
	}
	o := resumeOptions(os.Getenv("COMPASS_CRASH_MODEL"), os.Getenv("COMPASS_CRASH_DATA"), out)
	o.Resume = os.Getenv("COMPASS_CRASH_RESUME")
	if _, err := Train(context.Background(), o, TrainEnv{}); err != nil {
		t.Fatal(err)
	}
}

// kill -9 at any moment, in the middle of a checkpoint's files included,
// leaves the previous checkpoint loadable, and resuming from it still
// gives the uninterrupted run's adapter bit for bit.
func TestTrainSurvivesKill(t *testing.T) {
	if testing.Short() {
		t.Skip("starts several training processes")
	}
	work := t.TempDir()
	modelDir := writeTinyByteModel(t, tinyByteLlama, 4)
	data := writeTextData(t, work, 2)
	whole := filepath.Join(work, "whole")
	if _, err := Train(context.Background(), resumeOptions(modelDir, data, whole), TrainEnv{}); err != nil {
		t.Fatal(err)
	}
	child := func(out, resume string, step int, phase string) *exec.Cmd {
		cmd := exec.Command(os.Args[0], "-test.run", "^TestTrainCrashChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), "COMPASS_CRASH_OUT="+out, "COMPASS_CRASH_MODEL="+modelDir, "COMPASS_CRASH_DATA="+data,
			"COMPASS_CRASH_RESUME="+resume, fmt.Sprint("COMPASS_CRASH_STEP=", step), "COMPASS_CRASH_PHASE="+phase)
		return cmd
	}
	kills := []struct {
		save  int // the how-many-th checkpoint write of the run
		phase string
	}{
		{1, "adapter written"}, {2, "optimizer written"}, {2, "before rename"}, {3, "renamed"}, {4, "adapter written"},
		{0, "timer"}, // killed from outside at some moment of the run
	}
	for _, k := range kills {
		t.Run(fmt.Sprintf("%s at save %d", k.phase, k.save), func(t *testing.T) {
			out := filepath.Join(work, strings.ReplaceAll(fmt.Sprint(k.phase, k.save), " ", "-"))
			cmd := child(out, "", k.save, k.phase)
			if k.phase == "timer" {
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				// Wait for the second checkpoint, then kill at once: the third
				// may be anywhere in its writing.
				for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
					if have, _ := checkpoints(out); len(have) >= 2 {
						break
					}
				}
				cmd.Process.Kill()
				cmd.Wait()
			} else if err := cmd.Run(); err == nil {
				t.Fatal("the child was not killed")
			}
			have, err := checkpoints(out)
			if err != nil {
				t.Fatal(err)
			}
			resume := "latest"
			if len(have) == 0 {
				resume = "" // killed before the first checkpoint: a new run
				os.RemoveAll(out)
			}
			if out, err := child(out, resume, -1, "").CombinedOutput(); err != nil {
				t.Fatalf("resuming after the kill (%d checkpoints left): %v\n%s", len(have), err, out)
			}
			if !bytes.Equal(readFile(t, filepath.Join(out, lora.WeightsName)), readFile(t, filepath.Join(whole, lora.WeightsName))) {
				t.Error("the adapter after kill and resume differs from the uninterrupted run's")
			}
			leftovers, _ := filepath.Glob(filepath.Join(out, ".tmp-*"))
			t.Logf("%d checkpoints left by the kill; %d temporary directories remain", len(have), len(leftovers))
		})
	}
}
