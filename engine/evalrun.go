package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/compassml/compass/dataset"
	"github.com/compassml/compass/internal/atomicfile"
	"github.com/compassml/compass/lora"
	"github.com/compassml/compass/model"
	"github.com/compassml/compass/model/tokenizer"
	"github.com/compassml/compass/tensor"
)

// EvalOptions say what `compass eval` runs.
type EvalOptions struct {
	ModelDir string
	Adapters []string // PEFT adapter directories, each compared with the base model
	Tasks    []string
	Data     string   // benchmark files (see EvalSource.Data); the same for every task
	Langs    []string // languages, as ISO 639 codes or names
	Shots    int      // examples before each question; negative: each task's default
	Limit    int      // at most this many items per task and language; 0: all
	Params   map[string]string
	// OutputDir receives results.json, report.md and one PNG per task;
	// "": nothing is written.
	OutputDir string
	Backend   tensor.Backend // nil: the CPU
	// BatchTokens bounds rows × length of one forward pass (default 4096).
	BatchTokens int
	// LogitsBytes bounds the logits of one sequence computed whole to
	// score an item's one-token choices with one pass (default 512 MiB).
	LogitsBytes int64
	// MaxNewTokens caps generative tasks' new tokens; 0: the task's own.
	MaxNewTokens int
	GenBatch     int    // prompts generated together (default 8)
	Bootstrap    int    // bootstrap resamples of paired differences (default 10000)
	Seed         uint64 // bootstrap and task randomness
	Progress     io.Writer
}

// EvalSystemResult is one system's answer to one item.
type EvalSystemResult struct {
	LogLiks  []float64 `json:"loglikelihoods,omitempty"`
	Pred     int       `json:"prediction"`
	PredNorm int       `json:"prediction_norm"`
	Acc      float64   `json:"acc"`
	AccNorm  float64   `json:"acc_norm"`
	// Generative.
	Text         string `json:"text,omitempty"`
	Extracted    string `json:"extracted,omitempty"`
	FinishReason string `json:"finish_reason,omitempty"`
}

// EvalItemResult is one item of results.json.
type EvalItemResult struct {
	EvalItem
	Requests     []*llRequest                 `json:"requests,omitempty"`
	PromptTokens int                          `json:"prompt_tokens,omitempty"`
	Results      map[string]*EvalSystemResult `json:"results"`
}

// EvalTaskResult is one task's results.
type EvalTaskResult struct {
	Task       string             `json:"task"`
	Generative bool               `json:"generative"`
	Shots      int                `json:"shots"`
	Skipped    map[string]int     `json:"skipped,omitempty"` // by "lang: reason"
	Truncated  int                `json:"truncated"`         // requests cut on the left to the model's length
	Metrics    []EvalMetric       `json:"metrics"`
	Paired     []PairedComparison `json:"paired,omitempty"`
	Items      []*EvalItemResult  `json:"items"`
}

// EvalMetric is one accuracy: of a system, over a group of items.
type EvalMetric struct {
	System  string  `json:"system"`
	Group   string  `json:"group"` // "all", "lang:sw", "lang:sw/category:STEM", "subject:anatomy"
	N       int     `json:"n"`
	Acc     float64 `json:"acc"`
	Stderr  float64 `json:"acc_stderr"`
	AccNorm float64 `json:"acc_norm"`
	NormErr float64 `json:"acc_norm_stderr"`
}

// EvalResults is results.json.
type EvalResults struct {
	Model   string            `json:"model"`
	Systems []string          `json:"systems"` // "base", then the adapters' directories
	Langs   []string          `json:"langs"`
	Tasks   []*EvalTaskResult `json:"tasks"`
	Seconds float64           `json:"seconds"`
}

// Eval runs the tasks on the base model and each adapter and, with an
// output directory, writes results.json, report.md and a chart per task.
// When only that writing fails, it returns the results with the error. A
// cancelled ctx stops the scoring between batches of items, writing
// nothing.
func Eval(ctx context.Context, o EvalOptions) (*EvalResults, error) {
	start := time.Now()
	if len(o.Tasks) == 0 {
		return nil, errors.New("eval: no task")
	}
	if len(o.Langs) == 0 {
		return nil, errors.New("eval: no language (--lang sw,yo,...)")
	}
	switch {
	case o.Shots < -1:
		return nil, fmt.Errorf("eval: --shots %d: want 0 or more (or -1, the task's)", o.Shots)
	case o.Limit < 0:
		return nil, fmt.Errorf("eval: --limit %d: must not be negative (0: no limit)", o.Limit)
	case o.MaxNewTokens < 0:
		return nil, fmt.Errorf("eval: --max-new-tokens %d: must not be negative (0: the task's)", o.MaxNewTokens)
	}
	if o.BatchTokens <= 0 {
		o.BatchTokens = 4096
	}
	if o.LogitsBytes <= 0 {
		o.LogitsBytes = 512 << 20
	}
	if o.GenBatch <= 0 {
		o.GenBatch = 8
	}
	if o.Bootstrap <= 0 {
		o.Bootstrap = 10000
	}
	langs := make([]string, len(o.Langs))
	for i, l := range o.Langs {
		langs[i], _ = dataset.NormalizeLanguage(l)
	}
	tasks := make([]EvalTask, len(o.Tasks))
	for i, name := range o.Tasks {
		t, err := LookupEvalTask(name)
		if err != nil {
			return nil, err
		}
		for _, l := range langs {
			if err := t.checkLanguage(l); err != nil {
				return nil, err
			}
		}
		tasks[i] = t
	}
	// A setting no task reads would be dropped without a word: the user
	// meant it for something.
	for _, k := range slices.Sorted(maps.Keys(o.Params)) { // the first bad key, the same every run
		taken := false
		for _, t := range tasks {
			taken = taken || slices.Contains(t.Params, k)
		}
		if !taken {
			return nil, fmt.Errorf("eval: --task-param %s: none of the tasks (%s) takes it; %s", k, strings.Join(o.Tasks, ", "), evalParamsHelp())
		}
	}
	// The output directory is made now: one that cannot be would
	// otherwise fail after the scoring.
	if o.OutputDir != "" {
		if err := os.MkdirAll(o.OutputDir, 0o755); err != nil {
			return nil, fmt.Errorf("eval: --output-dir: %w", err)
		}
	}
	tok, err := tokenizer.Load(o.ModelDir)
	if err != nil {
		return nil, fmt.Errorf("eval: %w", err)
	}
	enc, err := NewPairEncoder(tok)
	if err != nil {
		return nil, err
	}
	m, err := model.Load(o.ModelDir, o.Backend)
	if err != nil {
		return nil, err
	}
	defer m.Close()
	// Every adapter is loaded before the base model is scored: a bad one
	// found after it would cost the base model's time.
	adapters := make([]*lora.Adapter, len(o.Adapters))
	for i, dir := range o.Adapters {
		if adapters[i], err = lora.Load(dir, m.LinearModules()); err != nil {
			return nil, fmt.Errorf("eval: adapter %s: %w", dir, err)
		}
	}
	maxLen := m.Config.MaxPositionEmbeddings
	if maxLen <= 0 {
		maxLen = 2048 // the harness's default when the config names none
	}
	scorer := &llScorer{m: m, maxLen: maxLen, batchTokens: max(o.BatchTokens, maxLen), logitsBytes: o.LogitsBytes}

	res := &EvalResults{Model: o.ModelDir, Systems: []string{"base"}, Langs: langs}
	res.Systems = append(res.Systems, o.Adapters...)
	// Build every item first: a bad file fails before any model time.
	for _, t := range tasks {
		shots := o.Shots
		if shots < 0 {
			shots = t.DefaultShots
		}
		tr := &EvalTaskResult{Task: t.Name, Generative: t.Generative, Shots: shots, Skipped: map[string]int{}}
		for _, l := range langs {
			items, skips, err := t.Build(EvalSource{Data: o.Data, Lang: l, Shots: shots, Limit: o.Limit, Seed: o.Seed,
				Tokenizer: tok, MaxLength: maxLen, Params: o.Params})
			if err != nil {
				return nil, fmt.Errorf("eval: %s %s: %w", t.Name, l, err)
			}
			for reason, n := range skips {
				tr.Skipped[l+": "+reason] += n
			}
			for _, it := range items {
				ir := &EvalItemResult{EvalItem: it, Results: map[string]*EvalSystemResult{}}
				if err := ir.prepare(enc, scorer, t.Generative); err != nil {
					if errors.Is(err, errTooLong) {
						tr.Skipped[l+": prompt longer than the model's context"]++
						continue
					}
					return nil, fmt.Errorf("eval: %s %s item %s: %w", t.Name, l, it.ID, err)
				}
				tr.Items = append(tr.Items, ir)
			}
		}
		res.Tasks = append(res.Tasks, tr)
	}

	var ends []int
	for _, tr := range res.Tasks {
		if tr.Generative {
			if ends, err = EndTokens(o.ModelDir, tok); err != nil {
				return nil, fmt.Errorf("eval: %w", err)
			}
			break
		}
	}
	prog := newEvalProgress(o.Progress, res)
	for si, sys := range res.Systems {
		if si == 0 {
			if err := m.AttachLoRA(map[string]model.LoRAWeights{}); err != nil { // none: the base model
				return nil, err
			}
		} else {
			if err := m.AttachAdapter(adapters[si-1]); err != nil {
				return nil, fmt.Errorf("eval: adapter %s: %w", sys, err)
			}
		}
		for _, tr := range res.Tasks {
			if tr.Generative {
				err = runGenerative(ctx, m, tok, tr, sys, ends, o, prog)
			} else {
				err = runMultipleChoice(ctx, scorer, tr, sys, prog)
			}
			if err != nil {
				return nil, fmt.Errorf("eval: %s with %s: %w", tr.Task, sys, err)
			}
		}
	}
	prog.done()
	for _, tr := range res.Tasks {
		tr.summarize(res.Systems, o.Bootstrap, o.Seed)
	}
	res.Seconds = time.Since(start).Seconds()
	if o.OutputDir != "" {
		if err := writeEvalOutputs(o.OutputDir, res); err != nil {
			return res, err // the results, for the caller to print: the scoring is not lost
		}
	}
	return res, nil
}

var errTooLong = errors.New("prompt longer than the model's context")

// prepare tokenizes an item's requests (the same for every system).
func (ir *EvalItemResult) prepare(enc *PairEncoder, s *llScorer, generative bool) error {
	if generative {
		ids, err := enc.Encode(ir.Prompt)
		if err != nil {
			return err
		}
		ir.PromptTokens = len(ids)
		if len(ids) >= s.maxLen {
			return errTooLong
		}
		return nil
	}
	if len(ir.Choices) == 0 || ir.Gold < 0 || ir.Gold >= len(ir.Choices) {
		return fmt.Errorf("gold %d outside its %d choices", ir.Gold, len(ir.Choices))
	}
	for _, c := range ir.Choices {
		ctx, cont, err := enc.EncodePair(ir.Context, ir.Delimiter+c)
		if err != nil {
			return err
		}
		r, err := s.newRequest(ir.Context, ir.Delimiter+c, ctx, cont)
		if err != nil {
			return err
		}
		ir.Requests = append(ir.Requests, r)
	}
	return nil
}

func runMultipleChoice(ctx context.Context, s *llScorer, tr *EvalTaskResult, sys string, prog *evalProgress) error {
	const chunk = 16 // items per score call: a progress step
	for start := 0; start < len(tr.Items); start += chunk {
		if err := ctx.Err(); err != nil {
			return err
		}
		items := tr.Items[start:min(start+chunk, len(tr.Items))]
		var reqs []*llRequest
		for _, it := range items {
			reqs = append(reqs, it.Requests...)
		}
		if err := s.score(reqs); err != nil {
			return err
		}
		for _, it := range items {
			r := &EvalSystemResult{}
			norm := make([]float64, len(it.Choices))
			for i, q := range it.Requests {
				r.LogLiks = append(r.LogLiks, q.LogLik)
				norm[i] = q.LogLik / float64(choiceChars(it.Choices[i]))
			}
			r.Pred, r.PredNorm = argmaxF64(r.LogLiks), argmaxF64(norm)
			r.Acc, r.AccNorm = b2f(r.Pred == it.Gold), b2f(r.PredNorm == it.Gold)
			it.Results[sys] = r
		}
		prog.add(tr.Task, sys, len(items))
	}
	return nil
}

// runGenerative continues each prompt greedily, as the harness's
// generate_until: the prompt cut on the left to leave room for the new
// tokens, stopped at the task's stop strings and the model's end tokens.
func runGenerative(ctx context.Context, m *model.Model, tok *tokenizer.Tokenizer, tr *EvalTaskResult, sys string, ends []int, o EvalOptions, prog *evalProgress) error {
	maxLen := m.Config.MaxPositionEmbeddings
	for start := 0; start < len(tr.Items); start += o.GenBatch {
		if err := ctx.Err(); err != nil {
			return err
		}
		items := tr.Items[start:min(start+o.GenBatch, len(tr.Items))]
		// Requests with the same settings share a Generate call.
		byKey := map[string][]int{}
		var keys []string
		for i, it := range items {
			k := fmt.Sprintf("%d\x00%s", it.MaxTokens, strings.Join(it.Stop, "\x00"))
			if _, ok := byKey[k]; !ok {
				keys = append(keys, k)
			}
			byKey[k] = append(byKey[k], i)
		}
		for _, k := range keys {
			idx := byKey[k]
			first := items[idx[0]]
			newTokens := first.MaxTokens
			if o.MaxNewTokens > 0 {
				newTokens = min(newTokens, o.MaxNewTokens)
			}
			if maxLen > 0 {
				newTokens = min(newTokens, maxLen-1)
			}
			prompts := make([][]int, len(idx))
			for j, i := range idx {
				ids, err := tok.Encode(items[i].Prompt, true)
				if err != nil {
					return err
				}
				if keep := maxLen - newTokens; maxLen > 0 && len(ids) > keep {
					ids = ids[len(ids)-keep:]
				}
				prompts[j] = ids
			}
			out, err := Generate(m, tok, prompts, GenerateOptions{MaxTokens: newTokens, StopIDs: ends, Stop: first.Stop}, nil)
			if err != nil {
				return err
			}
			for j, i := range idx {
				it := items[i]
				r := &EvalSystemResult{Text: out[j].Text, FinishReason: out[j].FinishReason, Pred: -1, PredNorm: -1}
				var ok bool
				if it.Judge != nil {
					r.Extracted, ok = it.Judge(out[j].Text)
				}
				r.Acc = b2f(ok)
				r.AccNorm = r.Acc
				it.Results[sys] = r
			}
		}
		prog.add(tr.Task, sys, len(items))
	}
	return nil
}

func argmaxF64(x []float64) int {
	best := 0
	for i, v := range x {
		if v > x[best] {
			best = i // the first of equal maxima, as numpy's argmax
		}
	}
	return best
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// harnessGroup is the item's harness subtask: Global-MMLU's subject (full)
// or subject category (Lite), MMLU-ProX's category.
func (tr *EvalTaskResult) harnessGroup(it *EvalItemResult) string {
	if tr.Task == "global-mmlu" {
		return it.Subject
	}
	return it.Category
}

// summarize computes the metrics and the paired comparisons.
func (tr *EvalTaskResult) summarize(systems []string, resamples int, seed uint64) {
	for _, it := range tr.Items {
		if it.Requests != nil {
			for _, r := range it.Requests {
				if r.Truncated {
					tr.Truncated++
					break
				}
			}
		}
	}
	type key struct{ sys, group string }
	acc := map[key][]float64{}
	norm := map[key][]float64{}
	var groups []string
	seen := map[string]bool{}
	addGroup := func(g string) {
		if !seen[g] {
			seen[g] = true
			groups = append(groups, g)
		}
	}
	addGroup("all")
	for _, it := range tr.Items {
		gs := []string{"all", "lang:" + it.Lang}
		if it.Category != "" {
			gs = append(gs, "lang:"+it.Lang+"/category:"+it.Category, "category:"+it.Category)
		}
		if it.Subject != "" && it.Subject != it.Category {
			gs = append(gs, "subject:"+it.Subject)
		}
		if hg := tr.harnessGroup(it); hg != "" {
			gs = append(gs, "lang:"+it.Lang+"/harness:"+hg)
		}
		for _, g := range gs {
			addGroup(g)
			for _, s := range systems {
				r := it.Results[s]
				if r == nil {
					continue
				}
				acc[key{s, g}] = append(acc[key{s, g}], r.Acc)
				norm[key{s, g}] = append(norm[key{s, g}], r.AccNorm)
			}
		}
	}
	sort.SliceStable(groups[1:], func(i, j int) bool { return groups[1+i] < groups[1+j] })
	for _, s := range systems {
		for _, g := range groups {
			if strings.Contains(g, "/harness:") {
				continue
			}
			m := EvalMetric{System: s, Group: g, N: len(acc[key{s, g}])}
			m.Acc, m.Stderr = MeanStderr(acc[key{s, g}])
			m.AccNorm, m.NormErr = MeanStderr(norm[key{s, g}])
			if lang, ok := strings.CutPrefix(g, "lang:"); ok && !strings.Contains(lang, "/") {
				// A language is a harness group of subtasks: its stderr
				// pools theirs (weight_by_size).
				var ses, nses []float64
				var sizes []int
				for _, h := range groups {
					if strings.HasPrefix(h, g+"/harness:") {
						_, se := MeanStderr(acc[key{s, h}])
						_, nse := MeanStderr(norm[key{s, h}])
						ses, nses = append(ses, se), append(nses, nse)
						sizes = append(sizes, len(acc[key{s, h}]))
					}
				}
				if len(sizes) > 1 {
					m.Stderr, m.NormErr = PooledStderr(ses, sizes), PooledStderr(nses, sizes)
				}
			}
			tr.Metrics = append(tr.Metrics, m)
		}
	}
	for i := range systems {
		for j := i + 1; j < len(systems); j++ {
			var a, b []float64
			for _, it := range tr.Items {
				ra, rb := it.Results[systems[i]], it.Results[systems[j]]
				if ra != nil && rb != nil {
					a, b = append(a, ra.Acc), append(b, rb.Acc)
				}
			}
			c := ComparePaired(a, b, resamples, seed)
			c.A, c.B = systems[i], systems[j]
			tr.Paired = append(tr.Paired, c)
		}
	}
}

// metric returns a system's metric of a group.
func (tr *EvalTaskResult) metric(sys, group string) (EvalMetric, bool) {
	for _, m := range tr.Metrics {
		if m.System == sys && m.Group == group {
			return m, true
		}
	}
	return EvalMetric{}, false
}

// evalProgress draws one status line: items done of the total.
type evalProgress struct {
	w           io.Writer
	done_, all  int
	start, last time.Time
}

func newEvalProgress(w io.Writer, res *EvalResults) *evalProgress {
	p := &evalProgress{w: w, start: time.Now()}
	for _, tr := range res.Tasks {
		p.all += len(tr.Items) * len(res.Systems)
	}
	return p
}

func (p *evalProgress) add(task, sys string, n int) {
	p.done_ += n
	if p.w == nil || (time.Since(p.last) < 200*time.Millisecond && p.done_ < p.all) {
		return
	}
	p.last = time.Now()
	const width = 30
	fill := width * p.done_ / max(p.all, 1)
	fmt.Fprintf(p.w, "\r[%s%s] %d/%d items  %s  %s  %.0fs ", strings.Repeat("=", fill), strings.Repeat(" ", width-fill),
		p.done_, p.all, task, filepath.Base(sys), time.Since(p.start).Seconds())
}

func (p *evalProgress) done() {
	if p.w != nil && p.all > 0 {
		fmt.Fprintln(p.w)
	}
}

// writeEvalOutputs writes results.json, report.md and the charts.
func writeEvalOutputs(dir string, res *EvalResults) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("eval: %w", err)
	}
	// An earlier run's report and results go first, and this run's come
	// after its charts: stopped midway, the directory never pairs one
	// run's results with another's report.
	if err := removeOutputs(dir, "report.md", "results.json"); err != nil {
		return fmt.Errorf("eval: %w", err)
	}
	charts := map[string]string{}
	for _, tr := range res.Tasks {
		name := tr.Task + ".png"
		if err := writeEvalChart(filepath.Join(dir, name), tr, res); err != nil {
			return err
		}
		charts[tr.Task] = name
	}
	data, err := json.MarshalIndent(res, "", " ")
	if err != nil {
		return fmt.Errorf("eval: results.json: %w", err)
	}
	if err := atomicfile.WriteBytes(filepath.Join(dir, "results.json"), data); err != nil {
		return err
	}
	evalHook("results.json")
	return atomicfile.WriteBytes(filepath.Join(dir, "report.md"), []byte(EvalReport(res, charts)))
}

// evalHook is called after writeEvalOutputs writes results.json; a test
// stops it there, as a kill would.
var evalHook = func(file string) {}
