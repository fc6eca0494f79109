package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/compassml/compass/dataset"
	"github.com/compassml/compass/internal/atomicfile"
	"github.com/compassml/compass/lora"
)

// COMPASS-ECDA's update: when the usage of an adapter in the registry has
// drifted, select auxiliary data for the drifted usage with the COMPASS gap
// analysis, continue the current adapter on it with replay of earlier data
// and the EWC penalty, and register the result as a new version.

// ReplayBufferName is the replay buffer a registry version carries beside
// its adapter (and FisherName its Fisher).
const ReplayBufferName = "replay.jsonl"

// UpdateRequest says which adapter to update and with what usage.
type UpdateRequest struct {
	Registry, Adapter string
	// Usage is the drifted usage: JSONL texts, such as the window the
	// monitor saved with its drift record.
	Usage string
	// DriftRecord, when not "", is the monitor's record that triggered the
	// update (the new version's trigger); "" is a manual update.
	DriftRecord string
	// ReplayShare is the replay buffer's share of all data the adapter's
	// versions were trained on (default DefaultReplayShare);
	// FisherExamples the examples the new version's Fisher is estimated on
	// (default 64).
	ReplayShare    float64
	FisherExamples int
	Note           string
}

// UpdateResult is what an update did.
type UpdateResult struct {
	Version  *AdapterVersion
	Adapt    *AdaptResult // the pipeline run (selection, training, evaluation)
	Selected int          // pool records selected for the drifted usage
	Replay   int          // records in the new replay buffer
	History  int          // records the buffer samples from
}

// Update runs one update of req.Adapter with the pipeline settings of cfg
// (compass adapt's config: the model, the pool, the target language and its
// own data, the budget, K, the selection, training and evaluation settings;
// its first target is the adapter's language, its usage replaced by
// req.Usage, its methods by compass alone, its seeds by the first).
func Update(ctx context.Context, cfg *AdaptConfig, req UpdateRequest, env AdaptEnv) (*UpdateResult, error) {
	if env.Log == nil {
		env.Log = io.Discard
	}
	if len(cfg.Targets) == 0 {
		return nil, fmt.Errorf("update: the config names no target language")
	}
	if _, err := os.Stat(req.Usage); err != nil {
		return nil, fmt.Errorf("update: usage: %w", err)
	}
	// The trigger is read now: a bad record found after the pipeline
	// would cost its minutes (hours on a real model) for nothing.
	trigger := Trigger{Kind: TriggerManual}
	if req.DriftRecord != "" {
		var err error
		if trigger, err = DriftTrigger(req.DriftRecord); err != nil {
			return nil, fmt.Errorf("update: %w", err)
		}
	}
	if req.FisherExamples < 0 {
		return nil, fmt.Errorf("update: %d Fisher examples: want 1 or more (0: 64)", req.FisherExamples)
	}
	reg, err := OpenRegistry(req.Registry)
	if err != nil {
		return nil, err
	}
	cur, err := reg.Show(req.Adapter, "")
	if err != nil {
		return nil, fmt.Errorf("update: %w", err)
	}
	curDir, err := reg.Path(req.Adapter, cur.Version)
	if err != nil {
		return nil, fmt.Errorf("update: %w", err)
	}
	// Absolute: the pipeline reads its train section's paths from the
	// config's folder, and a relative --registry is the working
	// directory's.
	if curDir, err = filepath.Abs(curDir); err != nil {
		return nil, fmt.Errorf("update: %w", err)
	}
	// The update continues from this version's adapter, replay buffer and
	// Fisher: they must be the files the manifest registered.
	if err := reg.Verify(req.Adapter, cur.Version); err != nil {
		return nil, fmt.Errorf("update: %w", err)
	}
	share := req.ReplayShare
	if share == 0 {
		share = DefaultReplayShare
	}
	if !(share > 0 && share <= 1) { // NaN too
		return nil, fmt.Errorf("update: replay share %v: want (0, 1]", share)
	}

	// The pipeline for the drifted usage alone: compass's selection and
	// one adapter, continued from the current version.
	c := *cfg
	usage, err := filepath.Abs(req.Usage)
	if err != nil {
		return nil, err
	}
	t := cfg.Targets[0]
	t.Usage = &AdaptData{File: usage}
	c.Targets, c.Methods = []AdaptTarget{t}, []string{"compass"}
	if len(cfg.Seeds) > 0 {
		c.Seeds = cfg.Seeds[:1]
	}
	c.Train.InitAdapter = curDir
	c.Train.ReplayData, c.Train.EWCFisher = nil, ""
	if cur.ReplayBuffer != "" {
		c.Train.ReplayData = []string{filepath.Join(curDir, cur.ReplayBuffer)}
	}
	if cur.Fisher != "" {
		c.Train.EWCFisher = filepath.Join(curDir, cur.Fisher)
	}
	c.Train.FisherExamples = req.FisherExamples
	if c.Train.FisherExamples == 0 {
		c.Train.FisherExamples = 64
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("update: %w", err)
	}
	if env.ReportDir == "" {
		// Not the work directory's report, which is compass adapt's: each
		// update's evaluation goes beside the others, named for the
		// version it continues.
		env.ReportDir = filepath.Join(c.workDir(), "update-reports", req.Adapter+"-after-"+cur.Version)
	}
	fmt.Fprintf(env.Log, "update: %s %s: selecting for the drifted usage %s, continuing with replay %v, EWC %v\n",
		req.Adapter, cur.Version, req.Usage, cur.ReplayBuffer != "", cur.Fisher != "")
	res, err := Adapt(ctx, &c, env)
	if err != nil {
		return nil, fmt.Errorf("update: %w", err)
	}
	var trainDir, selectDir string
	for _, s := range res.Steps {
		switch s.Kind {
		case "train":
			trainDir = s.Dir
		case "select":
			selectDir = s.Dir
		}
	}
	if trainDir == "" || selectDir == "" {
		return nil, fmt.Errorf("update: the pipeline ran no selection or training step")
	}
	selected := filepath.Join(selectDir, "selected.jsonl")

	// The new version's directory: the adapter, its Fisher, and the replay
	// buffer for the next update. It is made under the work directory's
	// lock (Adapt has released its own), which also keeps another run
	// from rewriting the trained adapter while it is copied; a stage left
	// by an update that was killed is removed under the same lock, since
	// every live one is made under it.
	unlock, err := lockWorkDir("update", c.workDir())
	if err != nil {
		return nil, err
	}
	defer unlock()
	stages := filepath.Dir(trainDir)
	if left, err := filepath.Glob(filepath.Join(stages, ".update-*")); err == nil { // the pattern is valid
		for _, p := range left {
			if err := os.RemoveAll(p); err != nil {
				return nil, fmt.Errorf("update: an earlier update's stage: %w", err)
			}
		}
	}
	stage, err := os.MkdirTemp(stages, ".update-")
	if err != nil {
		return nil, fmt.Errorf("update: %w", err)
	}
	defer os.RemoveAll(stage)
	for _, f := range []string{lora.ConfigName, lora.WeightsName, FisherName} {
		if err := copyFile(filepath.Join(trainDir, f), filepath.Join(stage, f)); err != nil {
			return nil, fmt.Errorf("update: %w", err)
		}
	}
	var old string
	if cur.ReplayBuffer != "" {
		old = filepath.Join(curDir, cur.ReplayBuffer)
	}
	out := &UpdateResult{Adapt: res}
	out.Replay, out.History, out.Selected, err = extendReplayBuffer(filepath.Join(stage, ReplayBufferName), old, cur.ReplayHistory, selected, share, c.Seeds[0])
	if err != nil {
		return nil, err
	}
	meta := VersionMeta{CompassVersion: env.Version, Note: req.Note, ReplayBuffer: ReplayBufferName, Fisher: FisherName,
		ReplayHistory: out.History, Eval: map[string]float64{}, Trigger: trigger, BuiltOn: cur.Version}
	if meta.DataSelectionHash, err = FileSHA256(filepath.Join(selectDir, "manifest.jsonl")); err != nil {
		return nil, fmt.Errorf("update: %w", err)
	}
	if rep := res.Report; rep != nil && len(rep.Languages) > 0 {
		for _, task := range rep.Languages[0].Tasks {
			for _, s := range task.Scores {
				if s.Method == "compass" {
					meta.Eval[task.Task] = s.Mean
				}
			}
		}
	}
	if out.Version, err = reg.Add(req.Adapter, stage, meta, true); err != nil {
		return nil, fmt.Errorf("update: %w", err)
	}
	fmt.Fprintf(env.Log, "update: %s %s registered (parent %s): %d records selected, replay buffer %d of %d, at %s\n",
		req.Adapter, out.Version.Version, cur.Version, out.Selected, out.Replay, out.History, time.Now().UTC().Format(time.RFC3339))
	return out, nil
}

// extendReplayBuffer writes path: the replay buffer after adding the newly
// selected records to the history, k = ceil(share x history) records of
// it in which every record of the history is equally likely. The old
// buffer holds such a sample of the oldHistory earlier records, so the new
// one takes the old records' share of k from it, k x oldHistory / history
// rounded at random to a neighbouring whole number so that its expected
// value is exact, and the rest from the new records, each part drawn at
// random: a record is then kept with probability k / history, old or new.
// A lower share than before shrinks the buffer. A higher one can take no
// more old records than the old buffer holds: it keeps them all, and the
// old history stays at its old share rather than being made up from new
// records. It returns the buffer's size, the new history and the number
// of new records.
func extendReplayBuffer(path, old string, oldHistory int, selected string, share float64, seed uint64) (size, history, added int, err error) {
	read := func(f string) ([][]byte, error) {
		if f == "" {
			return nil, nil
		}
		fh, err := os.Open(f)
		if err != nil {
			return nil, err
		}
		defer fh.Close()
		var out [][]byte
		lines := dataset.NewJSONLines(fh, f)
		for lines.Next() {
			out = append(out, slices.Clone(lines.Bytes()))
		}
		return out, lines.Err()
	}
	prev, err := read(old)
	if err != nil {
		return 0, 0, 0, fmt.Errorf("update: replay buffer: %w", err)
	}
	if oldHistory < len(prev) {
		oldHistory = len(prev) // a buffer without its history: it is all it knows
	}
	fresh, err := read(selected)
	if err != nil {
		return 0, 0, 0, fmt.Errorf("update: selected records: %w", err)
	}
	history = oldHistory + len(fresh)
	k := min(history, max(1, int(math.Ceil(share*float64(history)))))
	rng := rand.New(rand.NewPCG(seed, uint64(history)))
	want := float64(k) * float64(oldHistory) / float64(history)
	fromOld := int(want)
	if rng.Float64() < want-float64(fromOld) {
		fromOld++
	}
	fromOld = min(fromOld, len(prev))
	buf := append(pick(prev, fromOld, rng), pick(fresh, min(k-fromOld, len(fresh)), rng)...)
	err = atomicfile.Write(path, func(w io.Writer) error {
		for _, rec := range buf {
			if _, err := w.Write(append(rec, '\n')); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, 0, 0, fmt.Errorf("update: replay buffer: %w", err)
	}
	return len(buf), history, len(fresh), nil
}

// pick returns n of recs at random, in their order in recs.
func pick(recs [][]byte, n int, rng *rand.Rand) [][]byte {
	keep := make([]bool, len(recs))
	for _, i := range rng.Perm(len(recs))[:n] {
		keep[i] = true
	}
	out := make([][]byte, 0, n)
	for i, rec := range recs {
		if keep[i] {
			out = append(out, rec)
		}
	}
	return out
}

// copyFile copies src to dst (a new file), synced.
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	return atomicfile.Write(dst, func(w io.Writer) error {
		_, err := io.Copy(w, in)
		return err
	})
}

// DriftRecordTexts returns the file of the window's texts that compass
// monitor saved with a drift record.
func DriftRecordTexts(record string) (string, error) {
	data, err := os.ReadFile(record)
	if err != nil {
		return "", fmt.Errorf("update: drift record: %w", err)
	}
	var rec DriftRecord
	if err := json.Unmarshal(data, &rec); err != nil {
		return "", fmt.Errorf("update: drift record %s: %w", record, err)
	}
	if rec.Texts == "" {
		return "", fmt.Errorf("update: drift record %s has no saved window texts (written by an older compass monitor): give --usage", record)
	}
	return rec.Texts, nil
}
