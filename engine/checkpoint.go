package engine

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"

	"github.com/compassml/compass/internal/atomicfile"
	"github.com/compassml/compass/tensor"
	"github.com/compassml/compass/tensor/safetensors"
)

// A checkpoint is a directory OUTPUT/checkpoint-NNNNNNNN (the step) holding
//
//	adapter_config.json, adapter_model.safetensors   the adapter, PEFT's format
//	optimizer.safetensors                             AdamW's moments, F32
//	trainer_state.json                                step, data position, seeds, best eval, the run's identity
//
// It is written into a hidden temporary directory whose files are synced,
// then renamed into place and the parent synced: a checkpoint directory
// that exists is complete, and a crash at any moment leaves the previous
// one as it was.
const (
	checkpointPrefix = "checkpoint-"
	stateName        = "trainer_state.json"
	optimizerName    = "optimizer.safetensors"
)

// trainerState is where a run stands; with the adapter and the optimizer's
// moments it is everything a resumed run needs to continue exactly.
type trainerState struct {
	Step       int   `json:"step"`        // optimizer steps done
	MicroBatch int   `json:"micro_batch"` // micro-batches consumed, over all epochs: the data position
	Tokens     int64 `json:"tokens"`      // input tokens processed
	// The random state: the data order of epoch e is a PCG stream seeded by
	// (seed, e), the dropout masks of micro-batch i by (seed, i); so the seed
	// and the data position are the whole random state.
	Seed               uint64       `json:"seed"`
	BestEvalLoss       float64      `json:"best_eval_loss"` // +Inf (written null) before the first eval
	BestStep           int          `json:"best_step"`
	EvalsWithoutBetter int          `json:"evals_without_better"`
	Checkpoint         string       `json:"-"` // the last checkpoint written or resumed from
	Identity           *runIdentity `json:"identity,omitempty"`
}

// runIdentity is what a checkpoint must share with the options it resumes
// under.
type runIdentity struct {
	Options  map[string]any `json:"options"`
	Model    string         `json:"model_signature"`
	Data     []FileStats    `json:"data"`
	EvalData []FileStats    `json:"eval_data,omitempty"`
}

// MarshalJSON writes an infinite best loss as null.
func (s trainerState) MarshalJSON() ([]byte, error) {
	type plain trainerState
	p := struct {
		plain
		BestEvalLoss *float64 `json:"best_eval_loss"`
	}{plain: plain(s)}
	if s.BestStep > 0 {
		p.BestEvalLoss = &s.BestEvalLoss
	}
	return json.Marshal(p)
}

// checkpoints lists the complete checkpoint directories of out, oldest
// first.
func checkpoints(out string) ([]string, error) {
	entries, err := os.ReadDir(out)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var dirs []string
	for _, e := range entries {
		if e.IsDir() && strings.HasPrefix(e.Name(), checkpointPrefix) {
			if _, err := os.Stat(filepath.Join(out, e.Name(), stateName)); err == nil {
				dirs = append(dirs, filepath.Join(out, e.Name()))
			}
		}
	}
	sort.Strings(dirs) // zero-padded step numbers sort in order
	return dirs, nil
}

// findResume returns the checkpoint directory to resume from, or "" for a
// new run, which needs an output directory without checkpoints.
func (r *trainRun) findResume() (string, error) {
	o := &r.opts
	have, err := checkpoints(o.Output)
	if err != nil {
		return "", fmt.Errorf("train: --output: %w", err)
	}
	switch o.Resume {
	case "":
		if len(have) > 0 {
			return "", fmt.Errorf("train: --output %s already holds a run (%s): continue it with --resume, or choose another directory",
				o.Output, filepath.Base(have[len(have)-1]))
		}
		return "", nil
	case "latest":
		if len(have) == 0 {
			return "", fmt.Errorf("train: --resume: %w in %s", errResumeMissing, o.Output)
		}
		return have[len(have)-1], nil
	}
	if _, err := os.Stat(filepath.Join(o.Resume, stateName)); err != nil {
		return "", fmt.Errorf("train: --resume %s: not a compass checkpoint (no %s)", o.Resume, stateName)
	}
	return o.Resume, nil
}

// restore loads the state and optimizer of checkpoint dir (its adapter is
// already attached) after checking that it belongs to this run.
func (r *trainRun) restore(dir string) error {
	data, err := os.ReadFile(filepath.Join(dir, stateName))
	if err != nil {
		return fmt.Errorf("train: --resume: %w", err)
	}
	var st trainerState
	if err := json.Unmarshal(data, &st); err != nil {
		return fmt.Errorf("train: --resume %s: %w", filepath.Join(dir, stateName), err)
	}
	if st.BestStep == 0 {
		st.BestEvalLoss = r.state.BestEvalLoss
	}
	if st.Identity == nil {
		return fmt.Errorf("train: --resume %s: the checkpoint does not say which run it belongs to", dir)
	}
	if diff := r.identity.differences(st.Identity); len(diff) > 0 {
		return fmt.Errorf("train: --resume %s: the checkpoint is from another run: %s", dir, strings.Join(diff, "; "))
	}
	f, err := safetensors.Open(filepath.Join(dir, optimizerName))
	if err != nil {
		return fmt.Errorf("train: --resume: %w", err)
	}
	defer f.Close()
	moments := map[string]*tensor.Tensor{}
	for _, name := range f.Names() {
		t, err := f.Tensor(name)
		if err != nil {
			return fmt.Errorf("train: --resume: %w", err)
		}
		moments[name] = t
	}
	if err := r.tr.SetOptimizerState(moments, st.Step); err != nil {
		return fmt.Errorf("train: --resume %s: %w", dir, err)
	}
	if st.MicroBatch != st.Step*r.accum {
		return fmt.Errorf("train: --resume %s: data position %d is not %d steps of %d micro-batches", dir, st.MicroBatch, st.Step, r.accum)
	}
	st.Checkpoint = dir
	r.state = st
	fmt.Fprintf(r.env.Log, "train: resuming %s at step %d of %d\n", dir, st.Step, r.total)
	return nil
}

// differences names what differs between the identity of this run and
// that of a checkpoint.
func (a *runIdentity) differences(b *runIdentity) []string {
	var d []string
	if a.Model != b.Model {
		d = append(d, fmt.Sprintf("the model differs (signature %s, the checkpoint's %s)", a.Model, b.Model))
	}
	hashes := func(fs []FileStats) []string {
		var h []string
		for _, f := range fs {
			h = append(h, f.SHA256)
		}
		return h
	}
	if !slices.Equal(hashes(a.Data), hashes(b.Data)) {
		d = append(d, "the training data differs (by content)")
	}
	if !slices.Equal(hashes(a.EvalData), hashes(b.EvalData)) {
		d = append(d, "the held-out data differs (by content)")
	}
	keys := make([]string, 0, len(a.Options))
	for k := range a.Options {
		keys = append(keys, k)
	}
	for k := range b.Options {
		if _, ok := a.Options[k]; !ok {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		if !reflect.DeepEqual(a.Options[k], b.Options[k]) {
			d = append(d, fmt.Sprintf("%s is %v, the checkpoint's %v", k, a.Options[k], b.Options[k]))
		}
	}
	return d
}

// save writes a checkpoint of the current step and removes the oldest ones
// beyond opts.Keep.
func (r *trainRun) save() error {
	o := &r.opts
	final := filepath.Join(o.Output, fmt.Sprintf("%s%08d", checkpointPrefix, r.state.Step))
	if r.state.Checkpoint == final {
		return nil // resumed here and nothing happened since
	}
	tmp, err := os.MkdirTemp(o.Output, ".tmp-"+checkpointPrefix)
	if err != nil {
		return fmt.Errorf("train: checkpoint: %w", err)
	}
	defer os.RemoveAll(tmp) // nothing left once renamed
	if err := r.writeCheckpoint(tmp); err != nil {
		return fmt.Errorf("train: checkpoint at step %d: %w", r.state.Step, err)
	}
	if err := os.RemoveAll(final); err != nil { // a checkpoint of the same step from an earlier session
		return fmt.Errorf("train: checkpoint: %w", err)
	}
	checkpointHook("before rename")
	if err := os.Rename(tmp, final); err != nil {
		return fmt.Errorf("train: checkpoint: %w", err)
	}
	checkpointHook("renamed")
	if err := syncDir(o.Output); err != nil {
		return fmt.Errorf("train: checkpoint: %w", err)
	}
	r.state.Checkpoint = final
	fmt.Fprintf(r.env.Log, "train: saved %s\n", final)
	if o.Keep > 0 {
		have, err := checkpoints(o.Output)
		if err != nil {
			return fmt.Errorf("train: checkpoint: %w", err)
		}
		for len(have) > o.Keep {
			if err := os.RemoveAll(have[0]); err != nil {
				return fmt.Errorf("train: removing an old checkpoint: %w", err)
			}
			have = have[1:]
		}
	}
	return nil
}

// writeCheckpoint writes the checkpoint's files into dir and syncs them
// and dir.
func (r *trainRun) writeCheckpoint(dir string) error {
	a, err := r.currentAdapter()
	if err != nil {
		return err
	}
	if err := a.Save(dir); err != nil {
		return err
	}
	checkpointHook("adapter written")
	moments, err := r.tr.OptimizerState()
	if err != nil {
		return err
	}
	names := make([]string, 0, len(moments))
	for n := range moments {
		names = append(names, n)
	}
	sort.Strings(names)
	entries := make([]safetensors.Entry, 0, len(names))
	for _, n := range names {
		entries = append(entries, safetensors.EntryFromTensor(n, moments[n]))
	}
	if err := safetensors.Write(filepath.Join(dir, optimizerName), entries, map[string]string{"format": "compass-adamw"}); err != nil {
		return err
	}
	checkpointHook("optimizer written")
	st := r.state
	st.Identity = &r.identity
	if err := writeJSONFile(filepath.Join(dir, stateName), st); err != nil {
		return err
	}
	return syncDir(dir)
}

// checkpointHook is called at each phase of writing a checkpoint; the
// crash tests kill the process there.
var checkpointHook = func(phase string) {}

// writeJSONFile writes v as indented JSON, atomically.
func writeJSONFile(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return atomicfile.WriteBytes(path, append(data, '\n'))
}

// lockWorkDir makes the work directory dir of a pipeline (adapt, update,
// continual) and locks it (lockDir): two runs in one would each remove and
// rename the other's steps in progress. The error names the command.
func lockWorkDir(what, dir string) (unlock func(), err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("%s: work dir: %w", what, err)
	}
	unlock, err = lockDir(dir)
	if errors.Is(err, errDirLocked) {
		return nil, fmt.Errorf("%s: work dir %s: another compass run%s is working in it; wait for it to end, or give another work dir", what, dir, dirLockHolder(dir))
	}
	if err != nil {
		return nil, fmt.Errorf("%s: work dir: %w", what, err)
	}
	return unlock, nil
}

// removeOutputs removes the named files of dir, in order, and the
// temporary files atomicfile was writing them through when a process was
// killed: a command that writes several files, each atomically, clears an
// earlier run's first, so that a run stopped midway leaves some of its own
// files, never a mix of two runs'.
func removeOutputs(dir string, names ...string) error {
	for _, name := range names {
		tmps, _ := filepath.Glob(filepath.Join(dir, "."+name+".tmp*")) // the pattern is valid
		for _, p := range append([]string{filepath.Join(dir, name)}, tmps...) {
			if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
		}
	}
	return nil
}

// syncDir makes renames in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !strings.Contains(err.Error(), "invalid argument") {
		return err
	}
	return nil
}
