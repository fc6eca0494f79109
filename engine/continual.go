package engine

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/compassml/compass/dataset"
	"github.com/compassml/compass/internal/atomicfile"
	"github.com/compassml/compass/model"
	"github.com/compassml/compass/tensor"
)

// `compass continual`: COMPASS-ECDA's forgetting experiment. A stream of T
// periods, each with its training data and its evaluation text; every
// strategy trains one adapter per period, continuing from its own previous
// one, and after each period every adapter is scored on every period's
// evaluation text (held-out NLL per token, lower is better). The report
// gives, per strategy, the score on each earlier period after the last
// (backward transfer: how much was forgotten) and on the newest.

// The strategies of a continual run.
const (
	StrategyNaive   = "naive"   // continue the previous adapter on the new data
	StrategyReplay  = "replay"  // ... with a replay buffer of earlier data
	StrategyEWC     = "ewc"     // ... with the EWC penalty around the previous adapter
	StrategyECDA    = "ecda"    // replay and EWC together: COMPASS-ECDA's update
	StrategyRetrain = "retrain" // a new adapter from scratch on all data so far
)

// ContinualStrategies lists the strategies in report order.
var ContinualStrategies = []string{StrategyNaive, StrategyReplay, StrategyEWC, StrategyECDA, StrategyRetrain}

// ContinualPeriod is one period of the stream.
type ContinualPeriod struct {
	Name string   `json:"name"`
	Data []string `json:"data"` // training data: JSONL files of the train schemas
	Eval string   `json:"eval"` // JSONL of {"text"}: this period's evaluation text
}

// ContinualConfig is `compass continual --config FILE`. Paths are relative
// to the file.
type ContinualConfig struct {
	Model      string            `json:"model"`
	WorkDir    string            `json:"work_dir"`
	ReportDir  string            `json:"report_dir,omitempty"` // default WORK_DIR/report
	Periods    []ContinualPeriod `json:"periods"`
	Strategies []string          `json:"strategies,omitempty"` // default all
	// ReplayShare is the replay buffer's size as a share of all earlier
	// periods' records (reservoir-sampled); the paper's default 5%.
	ReplayShare    float64        `json:"replay_share,omitempty"`
	ReplayWeight   float64        `json:"replay_weight,omitempty"`   // default DefaultReplayWeight
	EWCLambda      float64        `json:"ewc_lambda,omitempty"`      // default DefaultEWCLambda
	FisherExamples int            `json:"fisher_examples,omitempty"` // default 64
	Seed           uint64         `json:"seed,omitempty"`
	Train          map[string]any `json:"train,omitempty"` // keys of `compass train --config`
}

// ReadContinualConfig reads a JSON or YAML config; an unknown key, a
// strategy compass does not know, fewer than two periods or a missing file
// is an error naming it, before any work.
func ReadContinualConfig(path string) (*ContinualConfig, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("continual: %w", err)
	}
	if ext := strings.ToLower(filepath.Ext(path)); ext == ".yaml" || ext == ".yml" {
		var v any
		if err := yaml.Unmarshal(data, &v); err != nil {
			return nil, fmt.Errorf("continual: %s: %w", path, err)
		}
		if data, err = json.Marshal(v); err != nil {
			return nil, fmt.Errorf("continual: %s: %w", path, err)
		}
	}
	var c ContinualConfig
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("continual: %s: %w", path, err)
	}
	base := filepath.Dir(path)
	rel := func(p string) string {
		if p == "" || filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(base, p)
	}
	c.Model, c.WorkDir, c.ReportDir = rel(c.Model), rel(c.WorkDir), rel(c.ReportDir)
	for i := range c.Periods {
		for j := range c.Periods[i].Data {
			c.Periods[i].Data[j] = rel(c.Periods[i].Data[j])
		}
		c.Periods[i].Eval = rel(c.Periods[i].Eval)
	}
	if err := c.validate(path); err != nil {
		return nil, err
	}
	return &c, nil
}

func (c *ContinualConfig) validate(path string) error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("continual: %s: %s", path, fmt.Sprintf(format, a...))
	}
	if c.Model == "" || c.WorkDir == "" {
		return bad("model and work_dir are required")
	}
	if _, err := os.Stat(filepath.Join(c.Model, "config.json")); err != nil {
		return bad("model: %v", err)
	}
	if len(c.Periods) < 2 {
		return bad("periods: %d given; a stream needs at least 2", len(c.Periods))
	}
	names := map[string]bool{}
	for i, p := range c.Periods {
		key := fmt.Sprintf("periods[%d]", i)
		if p.Name == "" || strings.ContainsAny(p.Name, `/\`) || names[p.Name] {
			return bad("%s.name %q: want a unique name without slashes", key, p.Name)
		}
		names[p.Name] = true
		if len(p.Data) == 0 || p.Eval == "" {
			return bad("%s (%s): data and eval are required", key, p.Name)
		}
		for _, f := range append(slices.Clone(p.Data), p.Eval) {
			if _, err := os.Stat(f); err != nil {
				return bad("%s (%s): %v", key, p.Name, err)
			}
		}
	}
	for i, s := range c.Strategies {
		if !slices.Contains(ContinualStrategies, s) {
			return bad("strategies: unknown %q (want %s)", s, strings.Join(ContinualStrategies, ", "))
		}
		if slices.Contains(c.Strategies[:i], s) {
			return bad("strategies: %s appears twice", s)
		}
	}
	// 0 (or no key) is each setting's default: a strategy without replay
	// or without EWC is a strategy of its own (naive, replay, ewc).
	if !(c.ReplayShare >= 0 && c.ReplayShare <= 1) || !(c.ReplayWeight >= 0) || !(c.EWCLambda >= 0) || c.FisherExamples < 0 {
		return bad("replay_share must be in (0, 1]; replay_weight, ewc_lambda and fisher_examples must be positive (0 or no key: the defaults %v, %v, %v, 64)",
			DefaultReplayShare, DefaultReplayWeight, DefaultEWCLambda)
	}
	if _, err := c.trainOptions(); err != nil {
		return bad("train: %v", err)
	}
	return nil
}

// trainOptions are the training settings every run shares.
func (c *ContinualConfig) trainOptions() (TrainOptions, error) {
	o := DefaultTrainOptions()
	if len(c.Train) > 0 {
		data, err := json.Marshal(c.Train)
		if err != nil {
			return o, err
		}
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&o); err != nil {
			return o, err
		}
	}
	for _, k := range []string{"model", "data", "output", "init_adapter", "replay_data", "ewc_fisher", "resume"} {
		if _, ok := c.Train[k]; ok {
			return o, fmt.Errorf("%s is set by compass continual", k)
		}
	}
	o.Model, o.Seed = c.Model, c.Seed
	if c.Seed == 0 {
		o.Seed = DefaultTrainOptions().Seed
	}
	o.FisherExamples = c.FisherExamples
	if o.FisherExamples == 0 {
		o.FisherExamples = 64
	}
	o.ReplayWeight, o.EWCLambda = c.ReplayWeight, c.EWCLambda
	o.SaveEvery, o.EvalEvery, o.Quiet = 0, 0, true
	return o, nil
}

// ContinualEnv is what a continual run gets from its caller.
type ContinualEnv struct {
	Backend tensor.Backend // nil: the CPU
	Version string
	Log     io.Writer // one line per step of the run; nil discards
}

// ContinualReport is report.json.
type ContinualReport struct {
	Periods    []string             `json:"periods"`
	Base       []float64            `json:"base"` // the base model's NLL on each period's evaluation text
	Strategies []ContinualStrategyR `json:"strategies"`
	Settings   map[string]any       `json:"settings"`
	Version    string               `json:"compass_version"`
}

// ContinualStrategyR is one strategy's results: After[i][j] is the NLL on
// period j's evaluation text of the adapter trained through period i.
type ContinualStrategyR struct {
	Strategy string      `json:"strategy"`
	After    [][]float64 `json:"after"`
	// Final is After's last row; Forgetting the mean over the earlier
	// periods j of After[T-1][j] - After[j][j] (backward transfer in NLL:
	// positive is forgetting); Newest the score on the last period.
	Final      []float64 `json:"final"`
	Forgetting float64   `json:"forgetting"`
	Newest     float64   `json:"newest"`
	MeanFinal  float64   `json:"mean_final"`
}

// Continual runs the stream for every strategy and writes the report. A
// finished step (an adapter with its scores) is reused on a re-run, so a
// killed run resumes at the step it was in.
func Continual(ctx context.Context, c *ContinualConfig, env ContinualEnv) (*ContinualReport, error) {
	if env.Log == nil {
		env.Log = io.Discard
	}
	base, err := c.trainOptions()
	if err != nil {
		return nil, fmt.Errorf("continual: train: %w", err)
	}
	unlock, err := lockWorkDir("continual", c.WorkDir)
	if err != nil {
		return nil, err
	}
	defer unlock()
	strategies := c.Strategies
	if len(strategies) == 0 {
		strategies = ContinualStrategies
	}
	share := c.ReplayShare
	if share == 0 {
		share = DefaultReplayShare
	}
	evalFiles := make([]string, len(c.Periods))
	rep := &ContinualReport{Version: env.Version, Settings: map[string]any{
		"replay_share": share, "replay_weight": cmpDefault(c.ReplayWeight, DefaultReplayWeight),
		"ewc_lambda": cmpDefault(c.EWCLambda, DefaultEWCLambda), "fisher_examples": base.FisherExamples,
		"seed": base.Seed, "train_steps": base.MaxSteps, "epochs": base.Epochs, "lr": base.LR, "rank": base.Rank}}
	for i, p := range c.Periods {
		rep.Periods = append(rep.Periods, p.Name)
		evalFiles[i] = p.Eval
	}
	scores := func(dir, adapter string) ([]float64, error) {
		return cachedScores(filepath.Join(dir, "continual-scores.json"), c.Model, adapter, evalFiles, env.Backend)
	}
	if rep.Base, err = scores(filepath.Join(c.WorkDir, "base"), ""); err != nil {
		return nil, err
	}
	fmt.Fprintf(env.Log, "continual: base model: NLL %s\n", fmtScores(rep.Base))

	// Period 1 is the same for every strategy: one adapter from scratch.
	first := filepath.Join(c.WorkDir, "period-1")
	o := base
	o.Data, o.Output = c.Periods[0].Data, first
	if err := trainOnce(ctx, o, env, "period 1 ("+c.Periods[0].Name+")"); err != nil {
		return nil, err
	}
	firstScores, err := scores(first, first)
	if err != nil {
		return nil, err
	}
	for _, s := range strategies {
		res := ContinualStrategyR{Strategy: s, After: [][]float64{firstScores}}
		prev := first
		for i := 1; i < len(c.Periods); i++ {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			p := c.Periods[i]
			out := filepath.Join(c.WorkDir, s, fmt.Sprintf("period-%d", i+1))
			o := base
			o.Data, o.Output = p.Data, out
			switch s {
			case StrategyRetrain:
				o.Data = nil
				for _, q := range c.Periods[:i+1] {
					o.Data = append(o.Data, q.Data...)
				}
			default:
				o.InitAdapter = prev
			}
			if s == StrategyReplay || s == StrategyECDA {
				buf := filepath.Join(c.WorkDir, "replay", fmt.Sprintf("before-period-%d.jsonl", i+1))
				if err := writeReplayBuffer(buf, c.Periods[:i], share, base.Seed+uint64(i)); err != nil {
					return nil, err
				}
				o.ReplayData = []string{buf}
			}
			if s == StrategyEWC || s == StrategyECDA {
				o.EWCFisher = filepath.Join(prev, FisherName)
			}
			if err := trainOnce(ctx, o, env, fmt.Sprintf("%s, period %d (%s)", s, i+1, p.Name)); err != nil {
				return nil, err
			}
			sc, err := scores(out, out)
			if err != nil {
				return nil, err
			}
			res.After = append(res.After, sc)
			prev = out
		}
		summarise(&res)
		fmt.Fprintf(env.Log, "continual: %s: final NLL %s, forgetting %+.4f\n", s, fmtScores(res.Final), res.Forgetting)
		rep.Strategies = append(rep.Strategies, res)
	}
	dir := c.ReportDir
	if dir == "" {
		dir = filepath.Join(c.WorkDir, "report")
	}
	if err := writeContinualReport(dir, rep); err != nil {
		return nil, err
	}
	fmt.Fprintf(env.Log, "continual: report in %s\n", dir)
	return rep, nil
}

func cmpDefault(v, d float64) float64 {
	if v == 0 {
		return d
	}
	return v
}

// doneMarker, in a run's output directory, says that Train finished it
// (not interrupted): its adapter and Fisher are final. It records the
// run's inputs (runKey): a finished run is reused only for the same ones.
const doneMarker = "continual-done.json"

// trainOnce trains o unless its output holds a run finished from the same
// inputs; an unfinished one, or one of other inputs (the config, the
// model, a data file or an earlier period's adapter changed since), is
// removed and trained again.
func trainOnce(ctx context.Context, o TrainOptions, env ContinualEnv, what string) error {
	key, err := runKey(o)
	if err != nil {
		return fmt.Errorf("continual: %s: %w", what, err)
	}
	var done struct {
		Key string `json:"key"`
	}
	if data, err := os.ReadFile(filepath.Join(o.Output, doneMarker)); err == nil {
		if json.Unmarshal(data, &done) == nil && done.Key == key {
			fmt.Fprintf(env.Log, "continual: %s: done before, reused\n", what)
			return nil
		}
		fmt.Fprintf(env.Log, "continual: %s: done before from other inputs (settings, model, data or the previous adapter)\n", what)
	}
	if err := os.RemoveAll(o.Output); err != nil {
		return fmt.Errorf("continual: %s: %w", what, err)
	}
	fmt.Fprintf(env.Log, "continual: %s: training\n", what)
	res, err := Train(ctx, o, TrainEnv{Backend: env.Backend, Version: env.Version})
	if err != nil {
		return fmt.Errorf("continual: %s: %w", what, err)
	}
	if res.Interrupted {
		return fmt.Errorf("continual: %s: interrupted at step %d (the next run trains it again): %w", what, res.Steps, context.Canceled)
	}
	marker := map[string]any{"key": key, "steps": res.Steps, "last_loss": res.LastLoss, "seconds": res.Seconds, "tokens": res.Tokens}
	return atomicfile.Write(filepath.Join(o.Output, doneMarker), func(w io.Writer) error {
		return json.NewEncoder(w).Encode(marker)
	})
}

// runKey names what a run computes from, by content: the options that
// change the computation (the initial adapter, replay data and Fisher
// hashed, TrainOptions.identity), the model (model.CheckpointHash) and the
// training and held-out data files.
func runKey(o TrainOptions) (string, error) {
	id, err := o.identity()
	if err != nil {
		return "", err
	}
	m, err := model.CheckpointHash(o.Model)
	if err != nil {
		return "", err
	}
	data, err := fileSums(o.Data)
	if err != nil {
		return "", err
	}
	evalData, err := fileSums(o.EvalData)
	if err != nil {
		return "", err
	}
	return hashJSON(map[string]any{"options": id, "model": m, "data": data, "eval_data": evalData})
}

// hashJSON is the SHA-256 of v's JSON encoding.
func hashJSON(v any) (string, error) {
	js, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(js)
	return hex.EncodeToString(sum[:]), nil
}

// cachedScores returns the mean held-out NLL per token of the model with
// adapter ("" for none) on each evaluation file, from path when an earlier
// run wrote it for the same inputs: the model, the adapter's files and the
// evaluation files, by content.
func cachedScores(path, modelDir, adapter string, evals []string, be tensor.Backend) ([]float64, error) {
	m, err := model.CheckpointHash(modelDir)
	if err != nil {
		return nil, fmt.Errorf("continual: score: %w", err)
	}
	var adapterSums []string
	if adapter != "" {
		if adapterSums, err = fileSums(adapterFiles(adapter)); err != nil {
			return nil, fmt.Errorf("continual: score: %w", err)
		}
	}
	evalSums, err := fileSums(evals)
	if err != nil {
		return nil, fmt.Errorf("continual: score: %w", err)
	}
	key, err := hashJSON(map[string]any{"model": m, "adapter": adapterSums, "evals": evalSums})
	if err != nil {
		return nil, err
	}
	var cached struct {
		Key    string    `json:"key"`
		Evals  []string  `json:"evals"`
		Scores []float64 `json:"scores"`
	}
	if data, err := os.ReadFile(path); err == nil && json.Unmarshal(data, &cached) == nil && cached.Key == key && len(cached.Scores) == len(evals) {
		return cached.Scores, nil
	}
	out := make([]float64, len(evals))
	for i, f := range evals {
		items, _, err := heldoutNLL(modelDir, adapter, f, be)
		if err != nil {
			return nil, fmt.Errorf("continual: score %s: %w", f, err)
		}
		if len(items) == 0 {
			return nil, fmt.Errorf("continual: %s: no text to score", f)
		}
		for _, it := range items {
			out[i] += it.Acc
		}
		out[i] /= float64(len(items))
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	cached.Key, cached.Evals, cached.Scores = key, evals, out
	err = atomicfile.Write(path, func(w io.Writer) error { return json.NewEncoder(w).Encode(cached) })
	return out, err
}

// writeReplayBuffer writes the replay buffer before a period: a reservoir
// sample (Vitter's algorithm R, seeded) of share of the records of the
// earlier periods' data, at least one, in stream order.
func writeReplayBuffer(path string, earlier []ContinualPeriod, share float64, seed uint64) error {
	var all [][]byte
	for _, p := range earlier {
		for _, f := range p.Data {
			fh, err := os.Open(f)
			if err != nil {
				return fmt.Errorf("continual: replay: %w", err)
			}
			lines := dataset.NewJSONLines(fh, f)
			for lines.Next() {
				all = append(all, slices.Clone(lines.Bytes()))
			}
			err = lines.Err()
			fh.Close()
			if err != nil {
				return fmt.Errorf("continual: replay: %w", err)
			}
		}
	}
	if len(all) == 0 {
		return fmt.Errorf("continual: replay: the earlier periods have no record")
	}
	k := max(1, int(math.Ceil(share*float64(len(all)))))
	rng := rand.New(rand.NewPCG(seed, 0x4e5))
	res := make([]int, 0, k) // indices into all
	for i := range all {
		if i < k {
			res = append(res, i)
		} else if j := rng.IntN(i + 1); j < k {
			res[j] = i
		}
	}
	slices.Sort(res)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("continual: replay: %w", err)
	}
	return atomicfile.Write(path, func(w io.Writer) error {
		for _, i := range res {
			if _, err := w.Write(append(all[i], '\n')); err != nil {
				return err
			}
		}
		return nil
	})
}

// summarise fills the final row, the forgetting and the newest score.
func summarise(r *ContinualStrategyR) {
	T := len(r.After)
	r.Final = r.After[T-1]
	r.Newest = r.Final[T-1]
	for j := range T - 1 {
		r.Forgetting += r.Final[j] - r.After[j][j]
	}
	if T > 1 {
		r.Forgetting /= float64(T - 1)
	}
	for _, v := range r.Final {
		r.MeanFinal += v
	}
	r.MeanFinal /= float64(len(r.Final))
}

func fmtScores(v []float64) string {
	parts := make([]string, len(v))
	for i, x := range v {
		parts[i] = fmt.Sprintf("%.4f", x)
	}
	return "[" + strings.Join(parts, " ") + "]"
}
