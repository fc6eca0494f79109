package engine

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/compassml/compass/tensor"
)

// memoryBackend is the CPU backend posing as a device that reports its
// memory (as cgo.Backend does) and runs out of it: the failAt-th Empty
// (counting from 1; none when failAt is 0) fails with
// tensor.ErrOutOfMemory.
type memoryBackend struct {
	tensor.Backend
	avail           int64
	failAt, empties int
}

func (b *memoryBackend) AvailableBytes() (int64, error) { return b.avail, nil }

func (b *memoryBackend) Empty(dt tensor.DType, shape ...int) (*tensor.Tensor, error) {
	if b.empties++; b.empties == b.failAt {
		return nil, fmt.Errorf("fake device: %s %v: %w", dt, shape, tensor.ErrOutOfMemory)
	}
	return b.Backend.Empty(dt, shape...)
}

// On a backend that reports its memory, train says what a step may need
// against what is left, warns when it may not fit, and an out-of-memory
// error in a step or an evaluation says both and what needs less.
func TestTrainDeviceMemory(t *testing.T) {
	work := t.TempDir()
	modelDir := writeTinyByteModel(t, tinyByteLlama, 9)
	data := writeTextData(t, work, 2)
	o := resumeOptions(modelDir, data, filepath.Join(work, "out"))
	o.MaxSteps, o.EvalEvery, o.SaveEvery = 2, 0, 0

	// Room enough: one line, no warning, and the run trains.
	var log strings.Builder
	be := &memoryBackend{Backend: tensor.NewCPU(), avail: 64 << 30}
	if _, err := Train(context.Background(), o, TrainEnv{Backend: be, Log: &log}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(log.String(), "train: device memory: 64.0 GiB available after the model and adapter; a step of 2 x 48 tokens needs up to") ||
		strings.Contains(log.String(), "warning") {
		t.Errorf("with 64 GiB available, the log says:\n%s", log.String())
	}

	// No room: a warning that names --recompute; then a step that runs
	// out of memory fails with the numbers and the hint.
	log.Reset()
	o.Output = filepath.Join(work, "out2")
	be = &memoryBackend{Backend: tensor.NewCPU(), avail: 1 << 10, failAt: 1}
	_, err := Train(context.Background(), o, TrainEnv{Backend: be, Log: &log})
	if !strings.Contains(log.String(), "train: warning: the step may run out of device memory: --recompute needs up to") {
		t.Errorf("with 1 KiB available, no warning naming --recompute:\n%s", log.String())
	}
	if !errors.Is(err, tensor.ErrOutOfMemory) {
		t.Fatalf("got %v, want an out-of-memory error", err)
	}
	for _, want := range []string{"train: step 1", "out of device memory", "a step of 2 x 48 tokens needs up to",
		"0.0 MiB were available", "--recompute needs up to", "no checkpoint was written yet"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error lacks %q: %v", want, err)
		}
	}

	// An evaluation that runs out of memory says the same. A run of one
	// step makes some Empty calls; with an evaluation after its step, the
	// next one is the evaluation's.
	o.MaxSteps, o.EvalEvery = 1, 0
	o.Output = filepath.Join(work, "out4")
	be = &memoryBackend{Backend: tensor.NewCPU(), avail: 64 << 30}
	if _, err := Train(context.Background(), o, TrainEnv{Backend: be, Log: &log}); err != nil {
		t.Fatal(err)
	}
	o.EvalEvery = 1
	o.Output = filepath.Join(work, "out5")
	be = &memoryBackend{Backend: tensor.NewCPU(), avail: 64 << 30, failAt: be.empties + 1}
	_, err = Train(context.Background(), o, TrainEnv{Backend: be, Log: &log})
	if !errors.Is(err, tensor.ErrOutOfMemory) {
		t.Fatalf("got %v, want an out-of-memory error from the evaluation", err)
	}
	for _, want := range []string{"train: eval at step 1", "out of device memory", "a step of 2 x 48 tokens needs up to",
		"--recompute needs up to", "no checkpoint was written yet"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error lacks %q: %v", want, err)
		}
	}

	// On the CPU, nothing is said.
	log.Reset()
	o.Output = filepath.Join(work, "out3")
	if _, err := Train(context.Background(), o, TrainEnv{Log: &log}); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(log.String(), "device memory") {
		t.Errorf("on the CPU the log says:\n%s", log.String())
	}
}
