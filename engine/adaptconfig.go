package engine

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/compassml/compass/dataset"
	"github.com/compassml/compass/model"
	"github.com/compassml/compass/model/encoder"
	"github.com/compassml/compass/sampling/cluster"
	"github.com/compassml/compass/sampling/embed"
	"github.com/compassml/compass/sampling/selection"
	"go.yaml.in/yaml/v3"
)

// AdaptMethods are the selection methods `compass adapt` compares; "none"
// is the base model without an adapter.
var AdaptMethods = []string{"compass", "langsim", "random", "all", "none"}

// AdaptConfig is the --config file of `compass adapt`. Relative paths are
// relative to the file's directory.
type AdaptConfig struct {
	Model   string             `json:"model"`    // checkpoint directory
	WorkDir string             `json:"work_dir"` // where every step's output lives (default: "adapt-work" beside the config)
	Pool    AdaptData          `json:"pool"`     // D_aux: one file whose records name their language
	Targets []AdaptTarget      `json:"targets"`  // the target languages
	Budget  int                `json:"budget"`   // pool items each method selects ("all" takes the whole pool)
	K       int                `json:"k"`        // clusters; 0: chosen by silhouette over k_range
	KRange  string             `json:"k_range"`  // LO:HI[:STEP] (default 80:120:10, the paper's)
	Compass AdaptSelectOptions `json:"compass"`  // the options of `compass select`
	Methods []string           `json:"methods"`  // compass, langsim, random, all, none
	Seeds   []uint64           `json:"seeds"`    // each seeds clustering, selection and training
	Embed   AdaptEmbed         `json:"embed"`
	Train   TrainOptions       `json:"train"` // model, data and output are set by adapt
	Eval    AdaptEval          `json:"eval"`

	// Report statistics.
	Bootstrap    int `json:"bootstrap"`    // resamples of the paired-difference interval (default 10000)
	Permutations int `json:"permutations"` // random sign flips of the permutation test (default 10000)

	dir string // the config file's directory
	// What Validate found of the pool: its SHA-256 and, when it had to
	// read the records, where Adapt keeps their count for later runs.
	poolSum, poolCache string
	poolRecords        int
}

// AdaptData is one data file and how to read it.
type AdaptData struct {
	File     string `json:"file"`
	Schema   string `json:"schema,omitempty"`   // dataset schema; "" or auto: from the columns
	Language string `json:"language,omitempty"` // for records whose data names none
}

// AdaptTarget is one target language t: its usage set E_t and the data
// D_t it already has (none, one or more files).
type AdaptTarget struct {
	Language string      `json:"language"` // ISO 639 code or name
	Usage    *AdaptData  `json:"usage"`    // E_t
	Data     []AdaptData `json:"data"`     // D_t
	// Heldout is held-out target-usage text, JSONL of {"text"}: each
	// system's negative log-likelihood per token on it is reported as the
	// task "heldout-nll" (lower is better).
	Heldout string `json:"heldout,omitempty"`
}

// AdaptSelectOptions are the COMPASS and baseline options (the flags of
// `compass select`); zero values take DefaultSelectOptions'.
type AdaptSelectOptions struct {
	Spherical     *bool   `json:"spherical,omitempty"`
	NInit         int     `json:"n_init,omitempty"`
	MaxIter       int     `json:"max_iter,omitempty"`
	Cluster       string  `json:"cluster,omitempty"`
	Gap           string  `json:"gap,omitempty"`
	Epsilon       float64 `json:"epsilon,omitempty"`
	Smoothing     float64 `json:"smoothing,omitempty"`
	Temperature   float64 `json:"temperature,omitempty"`
	Within        string  `json:"within,omitempty"`
	LanguageCap   int     `json:"language_cap,omitempty"`
	LanguageShare float64 `json:"language_share,omitempty"`
	IncludeTarget bool    `json:"include_target,omitempty"`
	TopK          int     `json:"top_k,omitempty"`
	Silhouette    int     `json:"silhouette_sample,omitempty"`
}

// AdaptEmbed are the embedding settings.
type AdaptEmbed struct {
	BatchTokens int `json:"batch_tokens,omitempty"`
	MaxLen      int `json:"max_len,omitempty"`
	// Encoder is a sentence encoder's checkpoint directory (XLM-R or
	// BERT: multilingual-e5) that embeds every data file; "": the model's
	// own mean-pooled hidden states.
	Encoder string `json:"encoder,omitempty"`
	// Pooling is the encoder's: "mean" (default) or "cls".
	Pooling string `json:"pooling,omitempty"`
	// UsagePrefix is put before each usage text (E_t), PoolPrefix before
	// each text of the pool and of D_t; with an encoder they default to
	// e5's "query: " and "passage: " (set "" for encoders without them).
	UsagePrefix *string `json:"usage_prefix,omitempty"`
	PoolPrefix  *string `json:"pool_prefix,omitempty"`
}

// prefixes returns the usage and pool prefixes: none without an encoder,
// else as set, e5's by default.
func (e AdaptEmbed) prefixes() (usage, pool string) {
	if e.Encoder == "" {
		return "", ""
	}
	usage, pool = embed.E5Query, embed.E5Passage
	if e.UsagePrefix != nil {
		usage = *e.UsagePrefix
	}
	if e.PoolPrefix != nil {
		pool = *e.PoolPrefix
	}
	return usage, pool
}

// AdaptEval are the evaluation settings (those of EvalOptions that a
// config names).
type AdaptEval struct {
	Tasks       []string          `json:"tasks"`
	Data        string            `json:"data"`
	Shots       *int              `json:"shots,omitempty"` // default: each task's
	Limit       int               `json:"limit,omitempty"`
	Params      map[string]string `json:"params,omitempty"`
	BatchTokens int               `json:"batch_tokens,omitempty"`
}

// ReadAdaptConfig reads a JSON or YAML config. An unknown key is an error
// naming it; the training block starts from DefaultTrainOptions.
func ReadAdaptConfig(path string) (*AdaptConfig, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("adapt: config: %w", err)
	}
	ext := strings.ToLower(filepath.Ext(path))
	if ext == ".yaml" || ext == ".yml" {
		var v any
		if err := yaml.Unmarshal(data, &v); err != nil {
			return nil, fmt.Errorf("adapt: config %s: %w", path, err)
		}
		if data, err = json.Marshal(v); err != nil {
			return nil, fmt.Errorf("adapt: config %s: %w", path, err)
		}
	}
	c := &AdaptConfig{Train: DefaultTrainOptions()}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(c); err != nil {
		return nil, fmt.Errorf("adapt: config %s: %w", path, err)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("adapt: config: %w", err)
	}
	c.dir = filepath.Dir(abs)
	return c, nil
}

// path resolves p against the config's directory.
func (c *AdaptConfig) path(p string) string {
	if p == "" || filepath.IsAbs(p) || c.dir == "" {
		return p
	}
	return filepath.Join(c.dir, p)
}

// kRange returns the K values to try.
func (c *AdaptConfig) kRange() ([]int, error) {
	if c.K > 0 {
		return []int{c.K}, nil
	}
	s := c.KRange
	if s == "" {
		s = "80:120:10"
	}
	ks, err := cluster.ParseKRange(s)
	if e, ok := err.(*cluster.KRangeError); ok {
		return nil, fmt.Errorf("adapt: config key k_range %s: %s", e.Range, e.Reason)
	}
	return ks, err
}

// selectOptions returns COMPASS's options for a target and seed.
func (c *AdaptConfig) selectOptions(k int, seed uint64) selection.Options {
	o := selection.DefaultOptions(c.Budget)
	s := c.Compass
	o.K = k
	if s.Spherical != nil {
		o.KMeans.Spherical = *s.Spherical
	}
	if s.NInit > 0 {
		o.KMeans.NInit = s.NInit
	}
	if s.MaxIter > 0 {
		o.KMeans.MaxIter = s.MaxIter
	}
	if s.Silhouette != 0 {
		o.Silhouette.SampleSize = s.Silhouette
	}
	if s.Cluster != "" {
		o.Cluster = selection.ClusterSet(s.Cluster)
	}
	if s.Gap != "" {
		o.Gap = selection.GapKind(s.Gap)
	}
	if s.Epsilon > 0 {
		o.Epsilon = s.Epsilon
	}
	if s.Smoothing > 0 {
		o.Smoothing = s.Smoothing
	}
	if s.Temperature > 0 {
		o.Temperature = s.Temperature
	}
	if s.Within != "" {
		o.Within = selection.WithinKind(s.Within)
	}
	o.LanguageCap, o.LanguageShare, o.IncludeTarget = s.LanguageCap, s.LanguageShare, s.IncludeTarget
	o.Seed = seed
	return o
}

// baselineOptions returns the baselines' options for a seed.
func (c *AdaptConfig) baselineOptions(seed uint64) selection.BaselineOptions {
	s := c.Compass
	return selection.BaselineOptions{Budget: c.Budget, LanguageCap: s.LanguageCap, LanguageShare: s.LanguageShare,
		IncludeTarget: s.IncludeTarget, TopK: s.TopK, Seed: seed}
}

// allOptions are the options of the all-data baseline: of
// baselineOptions, only what decides which pool items are eligible (the
// budget, caps and top-k do not apply to it, and keying its step on them
// would select everything again when they change).
func (c *AdaptConfig) allOptions() selection.BaselineOptions {
	return selection.BaselineOptions{IncludeTarget: c.Compass.IncludeTarget}
}

// Validate checks everything that needs no model: the keys' values, that
// every file exists, that the pool names a language for every record and
// holds at least the budget, and that every target has a usage set. The
// errors name the key or the file. It reads the whole pool once.
func (c *AdaptConfig) Validate() error {
	bad := func(key, format string, a ...any) error {
		return fmt.Errorf("adapt: config key %s: %s", key, fmt.Sprintf(format, a...))
	}
	exists := func(key, p string) error {
		if p == "" {
			return bad(key, "a path is required")
		}
		if _, err := os.Stat(c.path(p)); err != nil {
			return bad(key, "%s does not exist", c.path(p))
		}
		return nil
	}
	if err := exists("model", c.Model); err != nil {
		return err
	}
	if err := exists("pool.file", c.Pool.File); err != nil {
		return err
	}
	if c.Embed.Encoder != "" {
		if err := exists("embed.encoder", c.Embed.Encoder); err != nil {
			return err
		}
	}
	if c.Embed.Pooling != "" {
		if c.Embed.Encoder == "" {
			return bad("embed.pooling", "goes with embed.encoder (the model's own states are mean-pooled)")
		}
		if _, err := encoder.ParsePooling(c.Embed.Pooling); err != nil {
			return bad("embed.pooling", "%v", err)
		}
	}
	if len(c.Targets) == 0 {
		return bad("targets", "name at least one target language")
	}
	// The selection looks every target up in the language table: an
	// unknown code would fail there, after the embeddings and clusters.
	langs, err := selection.DefaultLanguages()
	if err != nil {
		return err
	}
	seen := map[string]bool{}
	for i, t := range c.Targets {
		key := fmt.Sprintf("targets[%d]", i)
		if t.Language == "" {
			return bad(key+".language", "a language code is required")
		}
		if _, err := langs.Lookup(t.Language); err != nil {
			return bad(key+".language", "%v", err)
		}
		code, _ := dataset.NormalizeLanguage(t.Language)
		if seen[code] {
			return bad(key+".language", "%s appears twice", t.Language)
		}
		seen[code] = true
		if t.Usage == nil || t.Usage.File == "" {
			return bad(key+".usage", "target %s has no usage set E_t (a file)", t.Language)
		}
		if err := exists(key+".usage.file", t.Usage.File); err != nil {
			return err
		}
		if t.Heldout != "" {
			if err := exists(key+".heldout", t.Heldout); err != nil {
				return err
			}
		}
		for j, d := range t.Data {
			if err := exists(fmt.Sprintf("%s.data[%d].file", key, j), d.File); err != nil {
				return err
			}
		}
	}
	if len(c.Methods) == 0 {
		return bad("methods", "name at least one of %s", strings.Join(AdaptMethods, ", "))
	}
	for _, m := range c.Methods {
		if !slices.Contains(AdaptMethods, m) {
			return bad("methods", "unknown method %q (want %s)", m, strings.Join(AdaptMethods, ", "))
		}
	}
	for i, m := range c.Methods {
		if slices.Contains(c.Methods[:i], m) {
			return bad("methods", "%s appears twice", m)
		}
	}
	if len(c.Seeds) == 0 {
		return bad("seeds", "give at least one seed")
	}
	for i, s := range c.Seeds {
		if slices.Contains(c.Seeds[:i], s) {
			return bad("seeds", "seed %d appears twice", s)
		}
	}
	if c.Budget < 1 && slices.ContainsFunc(c.Methods, func(m string) bool { return m != "all" && m != "none" }) {
		return bad("budget", "%d: at least 1", c.Budget)
	}
	if c.K < 0 {
		return bad("k", "%d: must not be negative", c.K)
	}
	if _, err := c.kRange(); err != nil {
		return err
	}
	s := c.Compass
	switch {
	case s.Cluster != "" && s.Cluster != string(selection.ClusterAll) && s.Cluster != string(selection.ClusterUsagePool):
		return bad("compass.cluster", "%q: want all or usage+pool", s.Cluster)
	case s.Gap != "" && !slices.Contains([]string{"diff", "ratio", "smoothed"}, s.Gap):
		return bad("compass.gap", "%q: want diff, ratio or smoothed", s.Gap)
	case s.Within != "" && !slices.Contains([]string{"nearest", "centroid", "random"}, s.Within):
		return bad("compass.within", "%q: want nearest, centroid or random", s.Within)
	case s.NInit < 0 || s.MaxIter < 0 || s.LanguageCap < 0 || s.LanguageShare < 0 || s.TopK < 0 || s.Temperature < 0:
		return bad("compass", "counts, shares and the temperature must not be negative")
	case c.Bootstrap < 0 || c.Permutations < 0:
		return bad("bootstrap", "resample counts must not be negative")
	}
	if len(c.Eval.Tasks) == 0 {
		return bad("eval.tasks", "name at least one task (%s)", strings.Join(EvalTaskNames(), ", "))
	}
	for _, name := range c.Eval.Tasks {
		if _, err := LookupEvalTask(name); err != nil {
			return bad("eval.tasks", "%v", err)
		}
	}
	if err := exists("eval.data", c.Eval.Data); err != nil {
		return err
	}
	// The training block, with the fields adapt fills in.
	t := c.Train
	if t.Model != "" || len(t.Data) > 0 || t.Output != "" || t.Resume != "" {
		return bad("train", "model, data, output and resume are set by adapt; leave them out")
	}
	t.Model, t.Data, t.Output = "model", []string{"data"}, "output"
	if err := t.Validate(); err != nil {
		return fmt.Errorf("adapt: config key train: %w", err)
	}

	// The training's length against the model's, before any step (train
	// would refuse it after the embeddings, clusters and selections).
	if mc, err := model.LoadConfig(filepath.Join(c.path(c.Model), "config.json")); err == nil && mc.MaxPositionEmbeddings > 0 && c.Train.SeqLen > mc.MaxPositionEmbeddings {
		return bad("train.seq_len", "%d is beyond the model's %d positions (max_position_embeddings)", c.Train.SeqLen, mc.MaxPositionEmbeddings)
	}

	// The pool last: reading it is the slow part.
	n, err := c.checkPool()
	if err != nil {
		return err
	}
	if c.Budget > n && slices.ContainsFunc(c.Methods, func(m string) bool { return m != "all" && m != "none" }) {
		return bad("budget", "%d is larger than the pool %s (%d records)", c.Budget, c.path(c.Pool.File), n)
	}
	return nil
}

// checkPool reads the pool and returns its size; a record without a
// language is an error naming the file. Adapt keeps the count in the work
// directory under the pool's content hash (and its name and reading
// options, savePoolCheck), so that a later run over the same pool (adapt
// again, every update of a continual run) hashes the file instead of
// parsing it: 0.5 s against 10 s for a 647 MB pool of a million records.
func (c *AdaptConfig) checkPool() (int, error) {
	path := c.path(c.Pool.File)
	sum, err := FileSHA256(path)
	if err != nil {
		return 0, fmt.Errorf("adapt: config key pool.file: %w", err)
	}
	key, err := stepKey("pool-check", map[string]string{"name": filepath.Base(path), "schema": c.Pool.Schema, "language": c.Pool.Language}, []string{"file:" + sum})
	if err != nil {
		return 0, err
	}
	cache := filepath.Join(c.workDir(), "pool-check", key+".json")
	c.poolSum, c.poolCache = sum, ""
	var known struct {
		Records int `json:"records"`
	}
	if readJSONFile(cache, &known) == nil && known.Records > 0 {
		return known.Records, nil
	}
	n, err := c.countPool(path)
	if err != nil {
		return 0, err
	}
	c.poolCache, c.poolRecords = cache, n
	return n, nil
}

// savePoolCheck writes the count checkPool read, once the work directory
// is Adapt's: Validate itself leaves no trace there.
func (c *AdaptConfig) savePoolCheck() error {
	if c.poolCache == "" {
		return nil
	}
	if err := writeJSONFile(c.poolCache, map[string]any{"pool": c.path(c.Pool.File), "sha256": c.poolSum, "records": c.poolRecords}); err != nil {
		return fmt.Errorf("adapt: %w", err)
	}
	c.poolCache = ""
	return nil
}

// countPool reads every record of the pool at path and counts them.
func (c *AdaptConfig) countPool(path string) (int, error) {
	r, err := dataset.Open(path, dataset.Options{Schema: dataset.Schema(c.Pool.Schema), Language: c.Pool.Language})
	if err != nil {
		return 0, fmt.Errorf("adapt: config key pool.file: %w", err)
	}
	defer r.Close()
	n := 0
	for r.Next() {
		rec := r.Record()
		if rec.Language == "" {
			return 0, fmt.Errorf("adapt: pool %s: record %s has no language: the pool needs a language column", path, rec.Source)
		}
		n++
	}
	if err := r.Err(); err != nil {
		return 0, fmt.Errorf("adapt: pool %s: %w", path, err)
	}
	if n == 0 {
		return 0, fmt.Errorf("adapt: pool %s: no records", path)
	}
	return n, nil
}
