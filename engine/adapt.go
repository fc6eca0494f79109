package engine

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/compassml/compass/dataset"
	"github.com/compassml/compass/internal/atomicfile"
	"github.com/compassml/compass/lora"
	"github.com/compassml/compass/model"
	"github.com/compassml/compass/model/tokenizer"
	"github.com/compassml/compass/sampling/embed"
	"github.com/compassml/compass/sampling/selection"
	"github.com/compassml/compass/tensor"
)

// AdaptStepKinds are the kinds of step, in pipeline order; --force takes
// one of them.
var AdaptStepKinds = []string{"embed", "cluster", "select", "train", "eval"}

// AdaptEnv is what Adapt runs with besides its config.
type AdaptEnv struct {
	Backend tensor.Backend // nil: the CPU
	Version string         // compass's version, recorded in the report and step.json
	// Log receives one line per step; nil discards them.
	Log io.Writer
	// Progress, when not nil, receives "step i of n" and each step's own
	// progress line (the caller passes stderr only when it is a terminal).
	Progress io.Writer
	// Force lists step kinds to redo even where their output exists.
	Force []string
	// ReportDir is where the report goes; "": <work>/report.
	ReportDir string
	// AfterStep, when not nil, is called after each step, done or reused
	// (the tests interrupt a run with it).
	AfterStep func(AdaptStep)

	onTrainStep func(step int) // tests: called before each training step
}

// AdaptStep is one step as it ended up in a run.
type AdaptStep struct {
	Kind   string   `json:"kind"`
	Name   string   `json:"name"`
	Key    string   `json:"key"`
	Dir    string   `json:"dir"`
	Reused bool     `json:"reused"`
	Cost   StepCost `json:"cost"`
}

// AdaptResult sums up a run.
type AdaptResult struct {
	Steps     []AdaptStep
	ReportDir string
	Report    *AdaptReport
}

// adaptRun is one run: the config, its plan and what it has loaded.
type adaptRun struct {
	ctx    context.Context
	cfg    *AdaptConfig
	env    AdaptEnv
	work   string
	hashes fileHashes
	sig    string // the model's signature
	steps  []*adaptStep
	byKey  map[string]*adaptStep

	// The embedding model (or encoder), loaded by the first embed step
	// that runs.
	em  *EmbedModel
	enc *EmbedEncoder

	cells []*adaptCell
}

// adaptCell is one (language, method, seed) of the report and the steps
// that produce it.
type adaptCell struct {
	lang, method string
	seed         uint64
	sel          *adaptStep // nil for none
	eval         *adaptStep
}

// Adapt runs the COMPASS pipeline the config describes: for each target
// language, method and seed, embed -> cluster -> select -> train ->
// evaluate, reusing every step whose output the work directory holds,
// then writes the report. The config is validated before any work.
func Adapt(ctx context.Context, cfg *AdaptConfig, env AdaptEnv) (*AdaptResult, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	for _, f := range env.Force {
		if !slices.Contains(AdaptStepKinds, f) {
			return nil, fmt.Errorf("adapt: --force %q: want one of %s", f, strings.Join(AdaptStepKinds, ", "))
		}
	}
	if env.Log == nil {
		env.Log = io.Discard
	}
	r, err := planAdapt(ctx, cfg, env)
	if err != nil {
		return nil, err
	}
	defer r.close()
	unlock, err := lockWorkDir("adapt", r.work)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if err := cfg.savePoolCheck(); err != nil {
		return nil, err
	}
	res := &AdaptResult{}
	for i, s := range r.steps {
		if err := ctx.Err(); err != nil {
			return res, fmt.Errorf("adapt: stopped before step %d of %d: %w", i+1, len(r.steps), err)
		}
		if env.Progress != nil {
			fmt.Fprintf(env.Progress, "\r\033[Kadapt: step %d of %d: %s %s\n", i+1, len(r.steps), s.kind, s.name)
		}
		if err := s.execute(slices.Contains(env.Force, s.kind), env.Version); err != nil {
			return res, err
		}
		verb := fmt.Sprintf("done in %.1fs", s.cost.Seconds)
		if s.reused {
			verb = "reused"
		}
		fmt.Fprintf(env.Log, "adapt: [%d/%d] %s %s: %s (%s)\n", i+1, len(r.steps), s.kind, s.name, verb, s.key)
		st := AdaptStep{Kind: s.kind, Name: s.name, Key: s.key, Dir: s.dir, Reused: s.reused, Cost: s.cost}
		res.Steps = append(res.Steps, st)
		if env.AfterStep != nil {
			env.AfterStep(st)
		}
	}
	res.ReportDir = env.ReportDir
	if res.ReportDir == "" {
		res.ReportDir = filepath.Join(r.work, "report")
	}
	rep, err := r.report(res.Steps)
	if err != nil {
		return res, err
	}
	res.Report = rep
	if err := writeAdaptReport(res.ReportDir, rep); err != nil {
		return res, err
	}
	fmt.Fprintf(env.Log, "adapt: report written to %s\n", res.ReportDir)
	return res, nil
}

func (r *adaptRun) close() {
	if r.em != nil {
		r.em.Close()
	}
	if r.enc != nil {
		r.enc.Close()
	}
}

// workDir is where every step's output lives: work_dir, or adapt-work,
// relative to the config.
func (c *AdaptConfig) workDir() string {
	if c.WorkDir == "" {
		return c.path("adapt-work")
	}
	return c.path(c.WorkDir)
}

// planAdapt lists the steps in the order they run, each with its content
// address; a step several cells need (an embedding, the base model's
// evaluation) appears once.
func planAdapt(ctx context.Context, cfg *AdaptConfig, env AdaptEnv) (*adaptRun, error) {
	r := &adaptRun{ctx: ctx, cfg: cfg, env: env, work: cfg.workDir(), hashes: fileHashes{}, byKey: map[string]*adaptStep{}}
	if cfg.poolSum != "" { // Validate hashed the pool: once is enough
		r.hashes[cfg.path(cfg.Pool.File)] = "file:" + cfg.poolSum
	}
	sig, err := embed.ModelSignature(cfg.path(cfg.Model))
	if err != nil {
		return nil, fmt.Errorf("adapt: config key model: %w", err)
	}
	// The signature names the directory; the address needs only its hash,
	// so that the same checkpoint elsewhere reuses the steps.
	r.sig = sig
	modelID := sig[strings.LastIndex(sig, "#")+1:]
	// What embeds the data: the model, or the encoder of embed.encoder.
	embedID := "model:" + modelID
	if cfg.Embed.Encoder != "" {
		esig, err := embed.ModelSignature(cfg.path(cfg.Embed.Encoder))
		if err != nil {
			return nil, fmt.Errorf("adapt: config key embed.encoder: %w", err)
		}
		embedID = "encoder:" + esig[strings.LastIndex(esig, "#")+1:]
	}
	usagePrefix, poolPrefix := cfg.Embed.prefixes()

	pool, err := r.embedStep(cfg.Pool, "pool", embedID, poolPrefix)
	if err != nil {
		return nil, err
	}
	ks, err := cfg.kRange()
	if err != nil {
		return nil, err
	}
	for _, t := range cfg.Targets {
		lang, _ := dataset.NormalizeLanguage(t.Language)
		usageData := *t.Usage
		if usageData.Language == "" {
			usageData.Language = lang
		}
		usage, err := r.embedStep(usageData, lang+" usage", embedID, usagePrefix)
		if err != nil {
			return nil, err
		}
		var have []*adaptStep
		var haveFiles []string
		for _, d := range t.Data {
			if d.Language == "" {
				d.Language = lang
			}
			e, err := r.embedStep(d, lang+" data "+filepath.Base(d.File), embedID, poolPrefix)
			if err != nil {
				return nil, err
			}
			have = append(have, e)
			haveFiles = append(haveFiles, cfg.path(d.File))
		}
		for _, seed := range cfg.Seeds {
			var clusters *adaptStep
			if slices.Contains(cfg.Methods, "compass") {
				if clusters, err = r.clusterStep(lang, seed, ks, usage, have, pool); err != nil {
					return nil, err
				}
			}
			for _, method := range cfg.Methods {
				cell := &adaptCell{lang: lang, method: method, seed: seed}
				var trained *adaptStep
				if method != "none" {
					if cell.sel, err = r.selectStep(lang, method, seed, usage, have, pool, clusters); err != nil {
						return nil, err
					}
					if trained, err = r.trainStep(lang, method, seed, cell.sel, haveFiles, modelID); err != nil {
						return nil, err
					}
				}
				if cell.eval, err = r.evalStep(lang, method, seed, trained, modelID, r.cfg.path(t.Heldout)); err != nil {
					return nil, err
				}
				r.cells = append(r.cells, cell)
			}
		}
	}
	return r, nil
}

// add keys a step and appends it, or returns the step with the same key
// that is already planned.
func (r *adaptRun) add(s *adaptStep) (*adaptStep, error) {
	key, err := stepKey(s.kind, s.settings, s.inputs)
	if err != nil {
		return nil, err
	}
	if prev, ok := r.byKey[key]; ok {
		return prev, nil
	}
	s.key = key
	s.dir = filepath.Join(r.work, s.kind, key)
	r.byKey[key] = s
	r.steps = append(r.steps, s)
	return s, nil
}

// embedStep embeds one data file with the model or the encoder (embedID
// names which), each text after prefix.
func (r *adaptRun) embedStep(d AdaptData, name, embedID, prefix string) (*adaptStep, error) {
	path := r.cfg.path(d.File)
	h, err := r.hashes.of(path)
	if err != nil {
		return nil, err
	}
	// Not the batch size: the vectors do not depend on how texts are batched.
	settings := map[string]any{"schema": d.Schema, "language": d.Language, "max_len": r.cfg.Embed.MaxLen}
	if r.cfg.Embed.Encoder != "" { // only then, so that the decoder's steps keep their addresses
		settings["pooling"], settings["prefix"] = r.cfg.Embed.Pooling, prefix
	}
	return r.add(&adaptStep{kind: "embed", name: name, settings: settings, inputs: []string{embedID, h},
		run: func(s *adaptStep, dir string) (StepCost, error) { return r.embed(path, d, dir, prefix) }})
}

// embed writes dir/embeddings.safetensors (and its rows file).
func (r *adaptRun) embed(path string, d AdaptData, dir, prefix string) (StepCost, error) {
	o := EmbedOptions{Input: path,
		Data:   dataset.Options{Schema: dataset.Schema(d.Schema), Language: d.Language},
		Output: embeddingsFile(dir), BatchTokens: r.cfg.Embed.BatchTokens, MaxLen: r.cfg.Embed.MaxLen,
		Progress: r.env.Progress}
	switch {
	case r.cfg.Embed.Encoder != "":
		if r.enc == nil {
			enc, err := LoadEmbedEncoder(r.cfg.path(r.cfg.Embed.Encoder), r.env.Backend)
			if err != nil {
				return StepCost{}, err
			}
			r.enc = enc
		}
		o.Encoder, o.Pooling, o.Prefix = r.enc, r.cfg.Embed.Pooling, prefix
	default:
		if r.em == nil {
			em, err := LoadEmbedModel(r.cfg.path(r.cfg.Model), r.env.Backend)
			if err != nil {
				return StepCost{}, err
			}
			r.em = em
		}
		o.Model = r.em
	}
	res, err := Embed(r.ctx, o)
	if err != nil {
		return StepCost{}, err
	}
	return StepCost{Tokens: res.Tokens}, nil
}

// embeddingsFile is where an embed step's directory holds its matrix.
func embeddingsFile(dir string) string { return filepath.Join(dir, "embeddings.safetensors") }

// embeddingsFiles lists the matrices of embed steps.
func embeddingsFiles(steps []*adaptStep) []string {
	var files []string
	for _, s := range steps {
		files = append(files, embeddingsFile(s.dir))
	}
	return files
}

// clusterStep chooses K for one target and seed: k-means over the
// embeddings that define the clusters for every K tried, scored by
// silhouette. The select step takes the chosen clustering as it is.
func (r *adaptRun) clusterStep(lang string, seed uint64, ks []int, usage *adaptStep, have []*adaptStep, pool *adaptStep) (*adaptStep, error) {
	o := r.cfg.selectOptions(0, seed)
	inputs := []string{usage.key, pool.key}
	parts := []*adaptStep{usage}
	if o.Cluster == selection.ClusterAll {
		parts = append(parts, have...)
		for _, h := range have {
			inputs = append(inputs, h.key)
		}
	}
	parts = append(parts, pool)
	settings := map[string]any{"ks": ks, "spherical": o.KMeans.Spherical, "n_init": o.KMeans.NInit, "max_iter": o.KMeans.MaxIter,
		"cluster": o.Cluster, "silhouette_sample": o.Silhouette.SampleSize, "seed": seed}
	return r.add(&adaptStep{kind: "cluster", name: fmt.Sprintf("%s seed %d", lang, seed), settings: settings, inputs: inputs,
		run: func(s *adaptStep, dir string) (StepCost, error) {
			km := o.KMeans
			km.Seed = seed
			_, err := Cluster(ClusterOptions{Inputs: embeddingsFiles(parts), KRange: ks, KMeans: km,
				SilhouetteSample: o.Silhouette.SampleSize, Backend: r.env.Backend, OutputDir: dir})
			return StepCost{}, err
		}})
}

// selectStep selects pool items for one target, method and seed, and
// writes what training reads: selected.jsonl, the selected pool rows.
func (r *adaptRun) selectStep(lang, method string, seed uint64, usage *adaptStep, have []*adaptStep, pool, clusters *adaptStep) (*adaptStep, error) {
	settings := map[string]any{"method": method, "target": lang, "budget": r.cfg.Budget, "seed": seed}
	inputs := []string{pool.key}
	switch method {
	case "compass":
		settings["options"] = r.cfg.selectOptions(0, seed) // K comes from the cluster step
		settings["clusters"] = "the cluster step's"        // its clustering, not another at its K
		inputs = append(inputs, usage.key, clusters.key)
		for _, h := range have {
			inputs = append(inputs, h.key)
		}
	case "all":
		settings["options"], settings["seed"], settings["budget"] = r.cfg.allOptions(), 0, 0 // all is all, whatever the seed and budget
	default:
		settings["options"] = r.cfg.baselineOptions(seed)
	}
	poolPath := r.cfg.path(r.cfg.Pool.File)
	poolHash, err := r.hashes.of(poolPath)
	if err != nil {
		return nil, err
	}
	inputs = append(inputs, poolHash) // selected.jsonl copies the pool's rows
	name := fmt.Sprintf("%s %s seed %d", lang, method, seed)
	if method == "all" {
		name = lang + " all"
	}
	return r.add(&adaptStep{kind: "select", name: name, settings: settings, inputs: inputs,
		run: func(s *adaptStep, dir string) (StepCost, error) {
			o := SelectOptions{Method: method, Target: lang, Pool: embeddingsFile(pool.dir),
				Options: r.cfg.selectOptions(0, seed), Baseline: r.cfg.baselineOptions(seed), Backend: r.env.Backend,
				Output: filepath.Join(dir, "manifest.jsonl"), ReportDir: filepath.Join(dir, "selection")}
			switch method {
			case "compass":
				o.Usage, o.Data, o.Clusters = embeddingsFile(usage.dir), embeddingsFiles(have), clusters.dir
			case "all":
				o.Baseline = r.cfg.allOptions()
			}
			sel, err := Select(o)
			if err != nil {
				return StepCost{}, err
			}
			return StepCost{}, writeSelectedRows(poolPath, r.cfg.Pool, sel.Picks, filepath.Join(dir, "selected.jsonl"))
		}})
}

// writeSelectedRows copies the picked rows of the pool, with all their
// columns, into a JSONL file that training reads like the pool itself.
func writeSelectedRows(poolPath string, d AdaptData, picks []selection.Pick, out string) error {
	// A flag per row, not a map: the "all" method picks every row of a
	// pool of millions. The rows are written as they are read, not
	// gathered in memory first.
	rows := 0
	for _, p := range picks {
		rows = max(rows, p.Row+1)
	}
	want := make([]bool, rows)
	for _, p := range picks {
		want[p.Row] = true
	}
	rd, err := dataset.Open(poolPath, dataset.Options{Schema: dataset.Schema(d.Schema), Language: d.Language})
	if err != nil {
		return err
	}
	defer rd.Close()
	return atomicfile.Write(out, func(w io.Writer) error {
		enc := json.NewEncoder(w)
		for row := 0; row < len(want) && rd.Next(); row++ {
			if !want[row] {
				continue
			}
			if err := enc.Encode(rd.Record().Fields); err != nil {
				return fmt.Errorf("adapt: %s row %d: %w", poolPath, row, err)
			}
		}
		return rd.Err()
	})
}

// trainStep trains one adapter of the model (modelID, its content hash) on
// D_t and the selected pool rows. The model is an input of its own: with
// embed.encoder the earlier steps do not depend on it.
func (r *adaptRun) trainStep(lang, method string, seed uint64, sel *adaptStep, haveFiles []string, modelID string) (*adaptStep, error) {
	o := r.cfg.Train
	o.Seed = seed
	// The files besides the data, relative to the config as its other
	// paths are (update passes absolute ones).
	o.InitAdapter, o.EWCFisher = r.cfg.path(o.InitAdapter), r.cfg.path(o.EWCFisher)
	o.ReplayData = nil
	for _, f := range r.cfg.Train.ReplayData {
		o.ReplayData = append(o.ReplayData, r.cfg.path(f))
	}
	id, err := o.identity() // what changes the computation, those files by content; data and model are inputs
	if err != nil {
		return nil, fmt.Errorf("adapt: %w", err)
	}
	id["model"], id["data"], id["eval_data"] = nil, nil, nil
	for _, k := range []string{"eval_every", "eval_batches", "save_every", "keep", "patience"} {
		id[k] = nil
	}
	settings := map[string]any{"train": id, "target": lang}
	inputs := []string{"model:" + modelID, sel.key}
	for _, f := range haveFiles {
		h, err := r.hashes.of(f)
		if err != nil {
			return nil, err
		}
		inputs = append(inputs, h)
	}
	for _, f := range o.EvalData {
		h, err := r.hashes.of(r.cfg.path(f))
		if err != nil {
			return nil, err
		}
		inputs = append(inputs, h)
	}
	return r.add(&adaptStep{kind: "train", name: fmt.Sprintf("%s %s seed %d", lang, method, seed), settings: settings, inputs: inputs,
		run: func(s *adaptStep, dir string) (StepCost, error) {
			o.Model = r.cfg.path(r.cfg.Model)
			o.Data = append(slices.Clone(haveFiles), filepath.Join(sel.dir, "selected.jsonl"))
			o.EvalData = nil
			for _, f := range r.cfg.Train.EvalData {
				o.EvalData = append(o.EvalData, r.cfg.path(f))
			}
			o.Output = dir
			if ck, _ := filepath.Glob(filepath.Join(dir, "checkpoint-*")); len(ck) > 0 {
				o.Resume = "latest" // a run stopped during this step left checkpoints
			}
			env := TrainEnv{Backend: r.env.Backend, Version: r.env.Version, Progress: r.env.Progress}
			if r.env.onTrainStep != nil {
				env.OnStep = func(step int, _ []model.Batch) { r.env.onTrainStep(step) }
			}
			res, err := Train(r.ctx, o, env)
			if err != nil {
				return StepCost{}, err
			}
			if res.Interrupted {
				return StepCost{}, fmt.Errorf("interrupted at step %d (checkpoint %s; the next run resumes it): %w", res.Steps, res.Checkpoint, context.Canceled)
			}
			return StepCost{Seconds: res.Seconds, Tokens: res.Tokens, PeakBytes: res.PeakBytes}, nil
		}})
}

// evalStep evaluates the adapter of a train step, or the base model when
// trained is nil, on the configured tasks in the target language.
func (r *adaptRun) evalStep(lang, method string, seed uint64, trained *adaptStep, modelID, heldout string) (*adaptStep, error) {
	e := r.cfg.Eval
	shots := -1
	if e.Shots != nil {
		shots = *e.Shots
	}
	settings := map[string]any{"tasks": e.Tasks, "shots": shots, "limit": e.Limit, "params": e.Params, "lang": lang}
	dataHash, err := r.hashDir(r.cfg.path(e.Data))
	if err != nil {
		return nil, err
	}
	inputs := []string{"model:" + modelID, dataHash}
	if heldout != "" {
		h, err := r.hashes.of(heldout)
		if err != nil {
			return nil, err
		}
		inputs = append(inputs, "heldout:"+h)
	}
	name := lang + " base model"
	if trained != nil {
		inputs = append(inputs, trained.key)
		name = fmt.Sprintf("%s %s seed %d", lang, method, seed)
	}
	return r.add(&adaptStep{kind: "eval", name: name, settings: settings, inputs: inputs,
		run: func(s *adaptStep, dir string) (StepCost, error) {
			start := time.Now()
			o := EvalOptions{ModelDir: r.cfg.path(r.cfg.Model), Tasks: e.Tasks, Data: r.cfg.path(e.Data), Langs: []string{lang},
				Shots: shots, Limit: e.Limit, Params: e.Params, OutputDir: dir, Backend: r.env.Backend,
				BatchTokens: e.BatchTokens, Bootstrap: 200, Seed: 1, Progress: r.env.Progress}
			if trained != nil {
				o.Adapters = []string{trained.dir}
			}
			res, err := Eval(r.ctx, o)
			if err != nil {
				return StepCost{}, err
			}
			system := "base"
			if trained != nil {
				system = trained.dir
			}
			sc := evalScores{}
			var tokens int64
			for _, tr := range res.Tasks {
				for _, it := range tr.Items {
					for _, q := range it.Requests {
						tokens += int64(q.ContextLen + len(q.ContIDs))
					}
					tokens += int64(it.PromptTokens)
					if sr := it.Results[system]; sr != nil {
						sc[tr.Task] = append(sc[tr.Task], itemScore{ID: it.ID, Acc: sr.Acc})
					}
				}
			}
			if heldout != "" {
				adapter := ""
				if trained != nil {
					adapter = trained.dir
				}
				nll, n, err := heldoutNLL(o.ModelDir, adapter, heldout, r.env.Backend)
				if err != nil {
					return StepCost{}, err
				}
				sc[HeldoutTask] = nll
				tokens += n
			}
			return StepCost{Seconds: time.Since(start).Seconds(), Tokens: tokens}, writeJSONFile(filepath.Join(dir, "scores.json"), sc)
		}})
}

// HeldoutTask names the held-out negative log-likelihood in the report.
const HeldoutTask = "heldout-nll"

// heldoutNLL scores each line of a JSONL file of {"text"} with the model
// and, when adapter is not "", its adapter: the mean negative
// log-likelihood per predicted token, by line. It returns the tokens read.
func heldoutNLL(modelDir, adapter, path string, be tensor.Backend) ([]itemScore, int64, error) {
	m, err := model.Load(modelDir, be)
	if err != nil {
		return nil, 0, err
	}
	defer m.Close()
	if adapter != "" {
		a, err := lora.Load(adapter, m.LinearModules())
		if err != nil {
			return nil, 0, err
		}
		if err := m.AttachAdapter(a); err != nil {
			return nil, 0, err
		}
	}
	tok, err := tokenizer.Load(modelDir)
	if err != nil {
		return nil, 0, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	var out bytes.Buffer
	if _, err := Score(context.Background(), m, specialEncoder{tok}, f, &out); err != nil {
		return nil, 0, fmt.Errorf("held-out %s: %w", path, err)
	}
	var scores []itemScore
	var tokens int64
	lines := dataset.NewJSONLines(&out, "")
	for lines.Next() {
		var rec ScoreRecord
		if err := lines.Decode(&rec); err != nil {
			return nil, 0, err
		}
		scores = append(scores, itemScore{ID: fmt.Sprintf("line %d", rec.Line), Acc: -rec.Sum / float64(rec.Tokens-1)})
		tokens += int64(rec.Tokens)
	}
	return scores, tokens, lines.Err()
}

// specialEncoder encodes with the tokenizer's special tokens (BOS), as
// training saw the text.
type specialEncoder struct{ tok *tokenizer.Tokenizer }

func (e specialEncoder) Encode(text string) ([]int, error) { return e.tok.Encode(text, true) }

// evalScores is an eval step's scores.json: per task, each item's score.
type evalScores map[string][]itemScore

type itemScore struct {
	ID  string  `json:"id"`
	Acc float64 `json:"acc"`
}

// hashDir hashes a file, or every file under a directory (names and
// contents), for the evaluation data's address.
func (r *adaptRun) hashDir(path string) (string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("adapt: %w", err)
	}
	if !st.IsDir() {
		return r.hashes.of(path)
	}
	var parts []string
	err = filepath.WalkDir(path, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		h, err := r.hashes.of(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(path, p)
		parts = append(parts, rel+"="+h)
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("adapt: hashing %s: %w", path, err)
	}
	return stepKey("dir", parts, nil)
}

func readJSONFile(path string, v any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("adapt: %w", err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("adapt: %s: %w", path, err)
	}
	return nil
}
