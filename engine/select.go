package engine

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"

	"github.com/compassml/compass/dataset"
	"github.com/compassml/compass/sampling/cluster"
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
	// selects on its clustering as it is where it clustered these very
	// files (Usage, Pool and, with Options.Cluster all, Data, in any
	// order), else clusters again with its K (Options.K and the K range
	// are ignored either way); the report lists the silhouette of every K
	// it tried.
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
	// COMPASS stacks the target usage, the pool and the target data: they
	// are loaded into one matrix in that order, which selection then
	// clusters where it is (Input.Stacked), so that the pool's vectors
	// are in memory once.
	var pool *embed.Embeddings
	var stacked []*embed.Embeddings // usage, pool, then the data files
	var err error
	if o.Method == "compass" && o.Usage != "" && o.Pool != "" {
		if in.Stacked, stacked, err = embed.LoadStacked(append([]string{o.Usage, o.Pool}, o.Data...), embed.LoadOptions{}); err != nil {
			return nil, fmt.Errorf("select: %w", err)
		}
		pool = stacked[1]
	} else if pool, err = load("pool", o.Pool); err != nil {
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
		usage, data := stacked[0], stacked[2:]
		in.Usage = usage.Vectors
		pairs := []string{"the pool " + o.Pool, pool.Embedder, "the target usage " + o.Usage, usage.Embedder}
		var dataCounts []int
		haveRows := 0
		for i, e := range data {
			pairs = append(pairs, "the target data "+o.Data[i], e.Embedder)
			dataCounts = append(dataCounts, e.Vectors.Dim(0))
			haveRows += e.Vectors.Dim(0)
		}
		if err := embed.SameEmbedder(pairs...); err != nil {
			return nil, fmt.Errorf("select: %w", err)
		}
		if haveRows > 0 {
			nu, np := usage.Vectors.Dim(0), pool.Vectors.Dim(0)
			if in.Have, err = in.Stacked.Slice(nu+np, nu+np+haveRows); err != nil {
				return nil, fmt.Errorf("select: %w", err)
			}
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
			// The clustering itself where it is of these very rows:
			// clustering them again would give another one, not the one
			// whose silhouette chose K.
			files, counts := []string{o.Usage, o.Pool}, []int{in.Usage.Dim(0), in.Pool.Dim(0)}
			if so.Cluster == selection.ClusterAll {
				files, counts = append(files, o.Data...), append(counts, dataCounts...)
			}
			if so.Clustering, err = clusteringFor(o.Clusters, chosen, files, counts, so.KMeans.Spherical); err != nil {
				return nil, fmt.Errorf("select: %w", err)
			}
			if so.Clustering == nil && so.Progress != nil {
				fmt.Fprintf(so.Progress, "select: %s clustered other files (or with other settings): clustering again with its K = %d\n", o.Clusters, chosen.K)
			}
		}
		selectInputHook(in)
		restore := lowGCPercent()
		sel, err = selection.Select(in, so)
		restore()
		if err != nil {
			return nil, err
		}
		if chosen != nil {
			sel.Report.KScores = chosen.KScores
			if so.Clustering != nil && chosen.Silhouette != nil {
				sel.Report.Silhouette = *chosen.Silhouette
			}
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

// selectInputHook sees what COMPASS selects from, just before it does; a
// test checks there that the rows come stacked.
var selectInputHook = func(selection.Input) {}

// clusteringFor returns the clustering of the Cluster output dir (its
// summary sum) with its rows put in the order of files, which hold counts
// rows each, when it clustered exactly those files, in any order, with the
// same spherical setting; nil when it clustered others.
func clusteringFor(dir string, sum *ClusterSummary, files []string, counts []int, spherical bool) (*cluster.KMeansResult, error) {
	if len(sum.Inputs) != len(files) || sum.Spherical != spherical {
		return nil, nil
	}
	at := map[string]int{} // file -> its place among the clustered inputs
	for i, f := range sum.Inputs {
		at[filepath.Clean(f)] = i
	}
	place := make([]int, len(files))   // where each file is among the clustered inputs
	countOf := make([]int, len(files)) // rows of each clustered input
	total := 0
	for i, f := range files {
		j, ok := at[filepath.Clean(f)]
		if !ok {
			return nil, nil
		}
		delete(at, filepath.Clean(f)) // each once
		place[i], countOf[j] = j, counts[i]
		total += counts[i]
	}
	if total != sum.Rows {
		return nil, fmt.Errorf("%s clustered %d rows of %s; they hold %d now", dir, sum.Rows, strings.Join(sum.Inputs, ", "), total)
	}
	labels, err := readAssignments(filepath.Join(dir, "assignments.jsonl"), sum.Rows)
	if err != nil {
		return nil, err
	}
	cent, err := embed.ReadNPY(filepath.Join(dir, "centroids.npy"))
	if err != nil {
		return nil, err
	}
	start := make([]int, len(countOf)) // each clustered input's first row
	for j := 1; j < len(countOf); j++ {
		start[j] = start[j-1] + countOf[j-1]
	}
	ordered := make([]int32, 0, total)
	for _, j := range place {
		ordered = append(ordered, labels[start[j]:start[j]+countOf[j]]...)
	}
	return &cluster.KMeansResult{Centroids: cent, Labels: ordered, Inertia: sum.Inertia, Iterations: sum.Iterations, Converged: sum.Converged}, nil
}

// readAssignments reads the cluster of each of the rows lines of a
// Cluster assignments.jsonl, which must be in row order.
func readAssignments(path string, rows int) ([]int32, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	labels := make([]int32, 0, rows)
	lines := dataset.NewJSONLines(f, path)
	for lines.Next() {
		var a struct {
			Row     *int   `json:"row"`
			Cluster *int32 `json:"cluster"`
		}
		if err := lines.Decode(&a); err != nil {
			return nil, err
		}
		if a.Row == nil || a.Cluster == nil || *a.Row != len(labels) {
			return nil, lines.Errorf("want {\"row\": %d, \"cluster\": ...}", len(labels))
		}
		labels = append(labels, *a.Cluster)
	}
	if err := lines.Err(); err != nil {
		return nil, err
	}
	if len(labels) != rows {
		return nil, fmt.Errorf("%s: %d rows, its summary says %d", path, len(labels), rows)
	}
	return labels, nil
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
