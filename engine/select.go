package engine

import (
	"encoding/json"
	"fmt"
	"os"
	"runtime/debug"

	"github.com/compassml/compass/dataset"
	"github.com/compassml/compass/sampling/embed"
	"github.com/compassml/compass/sampling/selection"
	"github.com/compassml/compass/tensor"
)

// SelectOptions say what `compass select` runs: COMPASS or a baseline for
// one target language, from embedding files.
type SelectOptions struct {
	Method string // compass, random, langsim or all
	Target string // the target language: ISO 639-1/639-3 code or name

	// Usage (E_t) and Pool (D_aux) are embedding files, both needed by
	// compass; the baselines read only the pool's items. Data (D_t) are the
	// embeddings of what the target already has, stacked; none when it has
	// none.
	Usage string
	Data  []string
	Pool  string
	// PoolMeta is JSONL, one {"id", "language"} per pool row; "": the rows
	// file beside Pool.
	PoolMeta string
	// Clusters, when not "", is a Cluster output directory: compass then
	// clusters with its K (Options.K and the K range are ignored), and the
	// report lists the silhouette of every K it tried.
	Clusters string
	// Languages is a language table file (TSV); "": the built-in one.
	Languages string

	// Options are compass's, Baseline the baselines' (the Budget of the one
	// Method uses counts). Their Languages are set from Languages.
	Options  selection.Options
	Baseline selection.BaselineOptions
	Backend  tensor.Backend // compass's GEMMs; nil: the CPU

	Output    string // the manifest, JSONL
	ReportDir string // report.md, report.json and a chart; "": no report
}

// Select runs one selection method and writes its manifest and report.
func Select(o SelectOptions) (*selection.Selection, error) {
	if o.Output == "" {
		return nil, fmt.Errorf("select: no output manifest")
	}
	var langs *selection.LanguageTable
	if o.Languages != "" {
		f, err := os.Open(o.Languages)
		if err != nil {
			return nil, fmt.Errorf("select: %w", err)
		}
		langs, err = selection.ReadLanguages(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("select: %s: %w", o.Languages, err)
		}
	}
	load := func(what, path string) (*embed.Embeddings, error) {
		if path == "" {
			return nil, nil
		}
		e, err := embed.Load(path, embed.LoadOptions{})
		if err != nil {
			return nil, fmt.Errorf("select: %s: %w", what, err)
		}
		return e, nil
	}
	in := selection.Input{Target: o.Target}
	pool, err := load("pool", o.Pool)
	if err != nil {
		return nil, err
	}
	if pool != nil {
		in.Pool = pool.Vectors
	}
	switch {
	case o.PoolMeta != "":
		if in.Items, err = ReadPoolMeta(o.PoolMeta); err != nil {
			return nil, err
		}
	case pool != nil && pool.Rows != nil:
		for _, r := range pool.Rows {
			in.Items = append(in.Items, selection.Item{ID: r.ID, Language: r.Language})
		}
	default:
		return nil, fmt.Errorf("select: no pool items: give the pool's metadata (JSONL with id and language per pool row)")
	}

	var sel *selection.Selection
	switch o.Method {
	case "compass":
		if o.Usage == "" || in.Pool == nil {
			return nil, fmt.Errorf("select: compass needs the target usage and the pool embeddings")
		}
		usage, err := load("target usage", o.Usage)
		if err != nil {
			return nil, err
		}
		in.Usage = usage.Vectors
		var dataEmbedder string
		if len(o.Data) > 0 {
			if in.Have, _, dataEmbedder, err = loadEmbeddingRows(o.Data); err != nil {
				return nil, fmt.Errorf("select: target data: %w", err)
			}
		}
		if err := embed.SameEmbedder("the pool "+o.Pool, pool.Embedder, "the target usage "+o.Usage, usage.Embedder,
			"the target data", dataEmbedder); err != nil {
			return nil, fmt.Errorf("select: %w", err)
		}
		so := o.Options
		so.Languages = langs
		so.KMeans.Backend, so.Silhouette.Backend = o.Backend, o.Backend
		var chosen *ClusterSummary
		if o.Clusters != "" {
			if chosen, err = ReadClusterSummary(o.Clusters); err != nil {
				return nil, fmt.Errorf("select: %w", err)
			}
			so.K = chosen.K
		}
		restore := lowGCPercent()
		sel, err = selection.Select(in, so)
		restore()
		if err != nil {
			return nil, err
		}
		if chosen != nil {
			sel.Report.KScores = chosen.KScores
		}
	case "random", "langsim", "all":
		bo := o.Baseline
		bo.Languages = langs
		run := map[string]func(selection.Input, selection.BaselineOptions) (*selection.Selection, error){
			"random": selection.Random, "langsim": selection.LangSim, "all": selection.AllData}[o.Method]
		if sel, err = run(in, bo); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("select: unknown method %q (compass, random, langsim, all)", o.Method)
	}

	if err := selection.WriteManifest(o.Output, sel.Picks); err != nil {
		return nil, fmt.Errorf("select: %w", err)
	}
	if o.ReportDir != "" {
		if err := selection.WriteReport(o.ReportDir, sel.Report); err != nil {
			return nil, fmt.Errorf("select: report: %w", err)
		}
	}
	return sel, nil
}

// ReadPoolMeta reads one {"id", "language"} object per line; line i
// describes pool row i. Blank lines are not allowed: they would shift rows.
func ReadPoolMeta(path string) ([]selection.Item, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("select: %w", err)
	}
	defer f.Close()
	lines := dataset.NewJSONLines(f, path)
	lines.KeepBlank = true
	var items []selection.Item
	for lines.Next() {
		var rec struct {
			ID       json.RawMessage `json:"id"`
			Language string          `json:"language"`
		}
		if err := lines.Decode(&rec); err != nil {
			return nil, fmt.Errorf("select: %w", err)
		}
		// IDs may be strings or numbers (the Aya Dataset numbers its rows).
		it := selection.Item{ID: string(rec.ID), Language: rec.Language}
		var s string
		if json.Unmarshal(rec.ID, &s) == nil {
			it.ID = s
		}
		if it.ID == "" || it.ID == "null" || it.Language == "" {
			return nil, fmt.Errorf("select: %w", lines.Errorf(`want {"id": ..., "language": ...}`))
		}
		items = append(items, it)
	}
	if err := lines.Err(); err != nil {
		return nil, fmt.Errorf("select: %w", err)
	}
	return items, nil
}

// lowGCPercent has the collector run at 25% heap growth, not Go's default
// 100%, until the returned function restores it: for COMPASS's selection,
// whose live heap is gigabytes of vectors and whose garbage is temporary
// copies of them, the heap then peaks at 1.25 rather than 2 times what is
// live (400k x 768 with D_t: 3.7 GB instead of 5.0 GB, no slower). Vectors
// hold no pointers, so the extra collections are cheap; a training loop's
// small heap, collected that often, ran at half speed, hence the scope. A
// GOGC the user set is left alone.
func lowGCPercent() (restore func()) {
	if os.Getenv("GOGC") != "" {
		return func() {}
	}
	old := debug.SetGCPercent(25)
	return func() { debug.SetGCPercent(old) }
}
