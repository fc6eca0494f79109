package selection

import (
	"cmp"
	"fmt"
	"io"
	"math"
	"slices"

	"github.com/compassml/compass/sampling/cluster"
	"github.com/compassml/compass/sampling/internal/matrix"
	"github.com/compassml/compass/tensor"
)

// Item identifies one row of the auxiliary pool.
type Item struct {
	ID       string `json:"id"`
	Language string `json:"language"` // ISO 639-1/639-3 code or name
}

// Input is what a selection for one target language t works on. All
// embeddings have the same dimension and come from the same encoder.
type Input struct {
	Target string         // t, a language the table knows
	Usage  *tensor.Tensor // E_t [nE, d]: how t is used (e.g. the benchmark's dev questions in t)
	Have   *tensor.Tensor // D_t [nD, d]: the data t already has; nil when it has none
	Pool   *tensor.Tensor // D_aux [nP, d]: the auxiliary multilingual pool
	Items  []Item         // one per pool row

	// Stacked, when set, is an F32 [nE+nP+nD, d] matrix whose rows are
	// Usage's, Pool's and then Have's: those three are views of it, as
	// embed.LoadStacked gives them. Select then clusters the rows where
	// they are, normalising them in place for spherical k-means, instead
	// of in a copy of its own: the caller gives them up. For a large pool
	// that halves the memory a selection needs.
	Stacked *tensor.Tensor
}

// ClusterSet says which embeddings define the clusters.
type ClusterSet string

const (
	// ClusterAll clusters E_t, D_t and D_aux together.
	ClusterAll ClusterSet = "all"
	// ClusterUsagePool clusters E_t and D_aux; D_t is then assigned to the
	// nearest centroid, so that a large D_t does not shape the clusters.
	ClusterUsagePool ClusterSet = "usage+pool"
)

// GapKind is how a cluster's under-service is measured.
type GapKind string

const (
	// GapDiff is the paper's g_k = max(0, p_E(k) - p_D(k)).
	GapDiff GapKind = "diff"
	// GapRatio is g_k = p_E(k) / (p_D(k) + Epsilon): relative rather than
	// absolute shortage, so that small but entirely missing topics weigh
	// as much as large, partly covered ones.
	GapRatio GapKind = "ratio"
	// GapSmoothed is max(0, p'_E(k) - p'_D(k)) with additive smoothing,
	// p'(k) = (n(k) + Smoothing) / (n + K Smoothing): with few usage
	// examples, one example more or less in a cluster matters less.
	GapSmoothed GapKind = "smoothed"
)

// WithinKind is how candidates are ranked inside a cluster.
type WithinKind string

const (
	// WithinNearest ranks a candidate by its similarity to the nearest
	// target usage item of the same cluster (cosine in spherical mode,
	// minus the squared euclidean distance otherwise); in a cluster with no
	// usage item, by similarity to the centroid.
	WithinNearest WithinKind = "nearest"
	// WithinCentroid ranks by similarity to the cluster's centroid.
	WithinCentroid WithinKind = "centroid"
	// WithinRandom takes candidates in a random order (by the seed).
	WithinRandom WithinKind = "random"
)

// Options configure Select. DefaultOptions documents the
// defaults and where each comes from.
type Options struct {
	Budget int // B, how many pool items to select

	K                 int // clusters; 0 chooses K by silhouette among KMin, KMin+KStep, ..., KMax
	KMin, KMax, KStep int
	KMeans            cluster.KMeansOptions     // Spherical, NInit, MaxIter, Tol, SeedSample, MiniBatch, Backend (K and Seed are set by Select)
	Silhouette        cluster.SilhouetteOptions // SampleSize, Backend (Cosine follows KMeans.Spherical; Seed is set by Select)
	Cluster           ClusterSet
	// Clustering, when set, is a clustering of the stacked rows (the
	// usage, the pool, then the target data where Cluster is all) to use
	// as it is instead of running k-means: the one whose silhouette chose
	// K, as a clustering step wrote it. K, the k-means options and the
	// report's silhouette (left to the caller, who has it) are then unused.
	Clustering *cluster.KMeansResult

	Gap         GapKind
	Epsilon     float64 // GapRatio's epsilon
	Smoothing   float64 // GapSmoothed's pseudo-count
	Temperature float64 // budget share of cluster k is proportional to g_k^(1/Temperature)

	Within WithinKind

	// A source language may give at most LanguageCap items (0: no cap) and
	// at most ceil(LanguageShare * Budget) items (0: no cap).
	LanguageCap   int
	LanguageShare float64
	// IncludeTarget lets pool items in the target language itself be
	// selected; by default they are left out, since they are D_t's kind of
	// data rather than auxiliary data.
	IncludeTarget bool
	// Languages resolves language codes; nil means DefaultLanguages.
	Languages *LanguageTable

	Seed     uint64
	Progress io.Writer // progress lines; nil for none
}

// DefaultOptions returns the defaults for a budget. From the paper:
// K chosen by silhouette in 80..120, the gap max(0, p_E - p_D), the budget
// in proportion to the gap (Temperature 1), candidates closest to the
// target usage items. Ours, where the paper leaves the choice open: K
// tried in steps of 10, spherical (cosine) k-means since the embeddings are
// L2-normalised, scikit-learn's k-means settings (one k-means++ seeding,
// 300 iterations, tolerance 1e-4), the silhouette on a sample of 10,000
// rows, clustering E_t, D_t and D_aux together, "nearest" meaning the
// single nearest usage item of the cluster, no language cap, target-language
// pool items left out, Epsilon 1e-3, Smoothing 1.
func DefaultOptions(budget int) Options {
	km := cluster.DefaultKMeansOptions(0)
	km.Spherical = true
	return Options{
		Budget: budget,
		KMin:   80, KMax: 120, KStep: 10,
		KMeans:      km,
		Cluster:     ClusterAll,
		Gap:         GapDiff,
		Epsilon:     1e-3,
		Smoothing:   1,
		Temperature: 1,
		Within:      WithinNearest,
	}
}

// Pick is one selected pool item: a line of the manifest.
type Pick struct {
	Row      int     `json:"row"` // row of the pool
	ID       string  `json:"id"`
	Language string  `json:"language"`
	Cluster  int     `json:"cluster"` // -1 for methods without clusters
	Score    float64 `json:"score"`   // the within-cluster ranking score (higher is closer); 0 where there is none
	Reason   string  `json:"reason"`
}

// Selection is the outcome of a method: its picks in selection order and
// the report that explains them.
type Selection struct {
	Picks  []Pick
	Report *Report
}

// checked is validated selection input.
type checked struct {
	usage, have, pool *matrix.Matrix
	target            Language
	langs             *LanguageTable
	eligible          []bool   // pool rows that may be selected
	canon             []string // pool row languages, canonical ISO 639-3 where the table knows them
}

// checkInput validates in for every method: the target language is known,
// the pool is not empty, every matrix is finite and of one dimension, and
// there is one item per pool row. Pool embeddings may be absent only when
// needPool is false (the baselines look at items alone).
func checkInput(in Input, langs *LanguageTable, includeTarget, needPool bool) (*checked, error) {
	if langs == nil {
		var err error
		if langs, err = DefaultLanguages(); err != nil {
			return nil, err
		}
	}
	target, err := langs.Lookup(in.Target)
	if err != nil {
		return nil, fmt.Errorf("selection: target: %w", err)
	}
	c := &checked{target: target, langs: langs}
	if len(in.Items) == 0 || in.Pool != nil && in.Pool.Rank() == 2 && in.Pool.Dim(0) == 0 {
		return nil, fmt.Errorf("selection: the auxiliary pool is empty")
	}
	if in.Pool != nil || needPool {
		if c.pool, err = check("pool", in.Pool); err != nil {
			return nil, err
		}
		if len(in.Items) != c.pool.N {
			return nil, fmt.Errorf("selection: %d pool items for %d pool embedding rows", len(in.Items), c.pool.N)
		}
	}
	if in.Usage != nil {
		if c.usage, err = check("target usage", in.Usage); err != nil {
			return nil, err
		}
		if c.pool != nil && c.usage.D != c.pool.D {
			return nil, fmt.Errorf("selection: target usage embeddings have dimension %d, the pool %d", c.usage.D, c.pool.D)
		}
	}
	if in.Have != nil && !(in.Have.Rank() == 2 && in.Have.Dim(0) == 0) {
		if c.have, err = check("target data", in.Have); err != nil {
			return nil, err
		}
		if c.pool != nil && c.have.D != c.pool.D {
			return nil, fmt.Errorf("selection: target data embeddings have dimension %d, the pool %d", c.have.D, c.pool.D)
		}
	}
	c.eligible = make([]bool, len(in.Items))
	c.canon = make([]string, len(in.Items))
	n := 0
	for i, it := range in.Items {
		if it.ID == "" || it.Language == "" {
			return nil, fmt.Errorf("selection: pool row %d: empty id or language", i)
		}
		c.canon[i] = it.Language
		if l, err := langs.Lookup(it.Language); err == nil {
			c.canon[i] = l.ISO3
		}
		if includeTarget || c.canon[i] != target.ISO3 {
			c.eligible[i] = true
			n++
		}
	}
	if n == 0 {
		return nil, fmt.Errorf("selection: the auxiliary pool is empty: all %d items are in the target language %s", len(in.Items), target.Code())
	}
	return c, nil
}

// check validates x, naming it what in errors.
func check(what string, x *tensor.Tensor) (*matrix.Matrix, error) {
	m, err := matrix.Check(what, x)
	if err != nil {
		return nil, fmt.Errorf("selection: %w", err)
	}
	return m, nil
}

// checkClustering checks a given clustering against the stacked rows: a
// label per row, each in [0, K), and K centroids of the rows' dimension.
// Sizes are counted from the labels.
func checkClustering(c *cluster.KMeansResult, all *matrix.Matrix) (*cluster.KMeansResult, error) {
	if c.Centroids == nil || c.Centroids.Rank() != 2 || c.Centroids.DType() != tensor.F32 || !c.Centroids.OnHost() {
		return nil, fmt.Errorf("selection: the clustering given has no host F32 [K, d] centroids (%v)", c.Centroids)
	}
	k, d := c.Centroids.Dim(0), c.Centroids.Dim(1)
	if k < 1 || d != all.D {
		return nil, fmt.Errorf("selection: the clustering given has centroids %v; the rows have dimension %d", c.Centroids, all.D)
	}
	if len(c.Labels) != all.N {
		return nil, fmt.Errorf("selection: the clustering given labels %d rows; the usage, pool and data stacked are %d", len(c.Labels), all.N)
	}
	res := *c
	res.Sizes = make([]int, k)
	for i, l := range c.Labels {
		if l < 0 || int(l) >= k {
			return nil, fmt.Errorf("selection: the clustering given puts row %d in cluster %d of %d", i, l, k)
		}
		res.Sizes[l]++
	}
	return &res, nil
}

// stackedRows returns the first parts (2: usage and pool, or 3: and the
// target data) of Input.Stacked's rows, after checking that its rows are
// c's usage, pool and target data, in that order and where they are. The
// check compares addresses inside x's own array only.
func stackedRows(x *tensor.Tensor, c *checked, parts int) (*matrix.Matrix, error) {
	d := c.pool.D
	n := c.usage.N + c.pool.N
	if c.have != nil {
		n += c.have.N
	}
	if x.DType() != tensor.F32 || !x.OnHost() || x.Rank() != 2 || x.Dim(0) != n || x.Dim(1) != d {
		return nil, fmt.Errorf("selection: the stacked rows are %v; the usage, pool and target data are %d rows of dimension %d, host F32", x, n, d)
	}
	whole := &matrix.Matrix{T: x, V: x.F32(), N: n, D: d}
	at := func(row int, m *matrix.Matrix) bool { return m == nil || m.N == 0 || &whole.V[row*d] == &m.V[0] }
	if !at(0, c.usage) || !at(c.usage.N, c.pool) || !at(c.usage.N+c.pool.N, c.have) {
		return nil, fmt.Errorf("selection: the usage, pool and target data are not the stacked rows, in that order")
	}
	rows := c.usage.N + c.pool.N
	if parts == 3 {
		rows = n
	}
	return whole.Rows(0, rows), nil
}

// languageLimit is the most items one source language may give.
func languageLimit(budget, cap int, share float64) int {
	limit := math.MaxInt
	if cap > 0 {
		limit = cap
	}
	if share > 0 {
		limit = min(limit, int(math.Ceil(share*float64(budget))))
	}
	return limit
}

// Select runs COMPASS for one target language: cluster the embeddings,
// measure how much more of the target usage E_t than of the data D_t falls
// in each cluster, spend the budget on the clusters where E_t is
// under-served in proportion to that gap, and in each such cluster take the
// pool items closest to the cluster's usage items.
//
// Allocation: cluster k gets a share of the budget proportional to
// (g_k / max g)^(1/Temperature), rounded by largest remainder (ties to the
// lower cluster). A cluster with fewer eligible candidates than its share
// takes them all and its remainder is split again among the others, until
// the budget is spent. If every cluster with a positive gap runs out, the
// rest of the budget goes to clusters in proportion to p_E (where the target
// is used at all), then evenly; those picks say "fill" in their reason.
// Language caps are applied while picking; the shortfall they cause is
// allocated again the same way. Picks are listed cluster by cluster, the
// largest gap first.
func Select(in Input, o Options) (*Selection, error) {
	if o.Budget < 1 {
		return nil, fmt.Errorf("selection: select: budget %d; need at least 1", o.Budget)
	}
	if in.Usage == nil {
		return nil, fmt.Errorf("selection: select: no target usage embeddings (E_t)")
	}
	if o.Temperature <= 0 || math.IsNaN(o.Temperature) {
		return nil, fmt.Errorf("selection: select: temperature %v; must be positive", o.Temperature)
	}
	if !(o.Epsilon >= 0) || !(o.Smoothing >= 0) || o.LanguageCap < 0 { // NaN fails too
		return nil, fmt.Errorf("selection: select: negative or NaN epsilon, smoothing or language cap (%v, %v, %d)", o.Epsilon, o.Smoothing, o.LanguageCap)
	}
	if !(o.LanguageShare >= 0 && o.LanguageShare <= 1) {
		return nil, fmt.Errorf("selection: select: language share %v: want [0, 1] (0: no cap)", o.LanguageShare)
	}
	switch o.Gap {
	case GapDiff, GapRatio, GapSmoothed:
	default:
		return nil, fmt.Errorf("selection: select: unknown gap %q (diff, ratio, smoothed)", o.Gap)
	}
	switch o.Within {
	case WithinNearest, WithinCentroid, WithinRandom:
	default:
		return nil, fmt.Errorf("selection: select: unknown within-cluster choice %q (nearest, centroid, random)", o.Within)
	}
	switch o.Cluster {
	case ClusterAll, ClusterUsagePool:
	default:
		return nil, fmt.Errorf("selection: select: unknown cluster set %q (all, usage+pool)", o.Cluster)
	}
	c, err := checkInput(in, o.Languages, o.IncludeTarget, true)
	if err != nil {
		return nil, err
	}
	progress := o.Progress
	if progress == nil {
		progress = io.Discard
	}

	// Cluster E_t ∪ D_aux, and D_t unless it is assigned afterwards.
	parts := []*matrix.Matrix{c.usage, c.pool}
	if o.Cluster == ClusterAll && c.have != nil {
		parts = append(parts, c.have)
	}
	var all *matrix.Matrix
	if in.Stacked != nil {
		if all, err = stackedRows(in.Stacked, c, len(parts)); err != nil {
			return nil, err
		}
		in.Stacked = nil
	} else {
		all = matrix.Concat(parts)
	}
	if o.KMeans.Spherical {
		// all is this function's copy, or the caller's Stacked rows given
		// up: normalised in place, the k-means and silhouettes below need
		// no copy of their own (a third copy of every vector, 1.2 GB for
		// 400k x 768).
		if err := all.NormalizeInPlace("kmeans"); err != nil {
			return nil, fmt.Errorf("cluster: %w", err)
		}
	}
	// From here on every row is read from all: c's matrices become views
	// of it, so that the spherical ranking finds all's unit rows instead of
	// normalising copies of the pool and the usage (400k x 768: 3.7 GB
	// peak, now 3.0 GB, the concatenation's), and in lets go of the
	// caller's matrices, which a caller holding no other reference to
	// them can then lose to the collector.
	nu, np := c.usage.N, c.pool.N
	c.usage, c.pool = all.Rows(0, nu), all.Rows(nu, nu+np)
	in.Usage, in.Pool = nil, nil
	if len(parts) == 3 {
		c.have = all.Rows(nu+np, all.N)
		in.Have = nil
	}
	km := o.KMeans
	km.Seed = o.Seed
	km.Progress = o.Progress
	so := o.Silhouette
	so.Cosine = km.Spherical
	so.Seed = o.Seed
	rep := &Report{Method: "compass", Target: c.target.Code(), Budget: o.Budget, Pool: c.pool.N, Options: optionsSummary(o)}
	for _, e := range c.eligible {
		if e {
			rep.Eligible++
		}
	}
	var res *cluster.KMeansResult
	if o.Clustering != nil {
		if res, err = checkClustering(o.Clustering, all); err != nil {
			return nil, err
		}
		fmt.Fprintf(progress, "select: %d embeddings in the %d clusters given\n", all.N, len(res.Sizes))
	} else if o.K > 0 {
		km.K = o.K
		fmt.Fprintf(progress, "select: clustering %d embeddings into %d clusters\n", all.N, o.K)
		if res, err = cluster.KMeans(all.T, km); err != nil {
			return nil, err
		}
		if rep.Silhouette, err = cluster.Silhouette(all.T, res.Labels, so); err != nil {
			rep.Notes = append(rep.Notes, "silhouette not computed: "+err.Error())
		}
	} else {
		ks, err := cluster.KRange(o.KMin, o.KMax, o.KStep)
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(progress, "select: clustering %d embeddings, K chosen by silhouette among %v\n", all.N, ks)
		if res, rep.KScores, err = cluster.ChooseK(all.T, ks, km, so); err != nil {
			return nil, err
		}
		for _, s := range rep.KScores {
			if s.K == len(res.Sizes) {
				rep.Silhouette = s.Silhouette
			}
		}
	}
	k := len(res.Sizes)
	rep.K, rep.Inertia = k, res.Inertia
	usageLabels := res.Labels[:c.usage.N]
	poolLabels := res.Labels[c.usage.N : c.usage.N+c.pool.N]
	var haveLabels []int32
	if c.have != nil {
		if o.Cluster == ClusterAll {
			haveLabels = res.Labels[c.usage.N+c.pool.N:]
		} else if haveLabels, _, err = cluster.Assign(c.have.T, res.Centroids, km.Spherical, km.Backend); err != nil {
			return nil, err
		}
	}

	// Shares and gaps.
	nE, nD := make([]int, k), make([]int, k)
	for _, l := range usageLabels {
		nE[l]++
	}
	for _, l := range haveLabels {
		nD[l]++
	}
	members := make([][]int, k) // eligible pool rows by cluster
	for i, l := range poolLabels {
		if c.eligible[i] {
			members[l] = append(members[l], i)
		}
	}
	pE, pD := shares(nE, 0), shares(nD, 0)
	sE, sD := shares(nE, o.Smoothing), shares(nD, o.Smoothing)
	gap := make([]float64, k)
	for j := range gap {
		switch o.Gap {
		case GapDiff:
			gap[j] = max(0, pE[j]-pD[j])
		case GapRatio:
			gap[j] = pE[j] / (pD[j] + o.Epsilon)
		case GapSmoothed:
			gap[j] = max(0, sE[j]-sD[j])
		}
	}
	weights := tempered(gap, o.Temperature)

	// Rank the candidates of every cluster.
	ranked, scores, err := rankWithin(c, members, usageLabels, res.Centroids.F32(), o, km.Spherical)
	if err != nil {
		return nil, err
	}

	// Spend the budget: by gap, then by usage share, then evenly.
	order := make([]int, k) // clusters, largest gap first
	for j := range order {
		order[j] = j
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(gap[b], gap[a]) })
	limit := languageLimit(o.Budget, o.LanguageCap, o.LanguageShare)
	p := newPicker(c, ranked, limit)
	planned := allocate(o.Budget, weights, p.capacity())
	even := make([]float64, k)
	for j := range even {
		even[j] = 1
	}
	stages := []struct {
		name    string
		weights []float64
	}{{"gap", weights}, {"fill", pE}, {"fill", even}}
	var picks []Pick
	for _, st := range stages {
		for len(picks) < o.Budget {
			alloc := allocate(o.Budget-len(picks), st.weights, p.capacity())
			got := 0
			for _, j := range order {
				for _, row := range p.take(j, alloc[j]) {
					picks = append(picks, Pick{Row: row, ID: in.Items[row].ID, Language: in.Items[row].Language,
						Cluster: j, Score: scores[row], Reason: reason(st.name, o, j, pE[j], pD[j], gap[j])})
					got++
				}
			}
			if got == 0 {
				break
			}
		}
	}
	if len(picks) < o.Budget {
		rep.Notes = append(rep.Notes, fmt.Sprintf("budget not reached: %d of %d selected (%d eligible pool items, language limit %s)",
			len(picks), o.Budget, rep.Eligible, limitString(limit)))
	}

	// The report.
	rep.Clusters = make([]ClusterReport, k)
	totalW := matrix.Sum64(weights)
	for j := range rep.Clusters {
		share := 0.0
		if totalW > 0 {
			share = weights[j] / totalW
		}
		rep.Clusters[j] = ClusterReport{Cluster: j, Usage: nE[j], Have: nD[j], Pool: len(members[j]),
			PUsage: pE[j], PHave: pD[j], Gap: gap[j], Share: share, Planned: planned[j], ByLanguage: map[string]int{}}
	}
	for _, pk := range picks {
		cr := &rep.Clusters[pk.Cluster]
		cr.Picked++
		cr.ByLanguage[pk.Language]++
	}
	rep.finish(picks)
	return &Selection{Picks: picks, Report: rep}, nil
}

func limitString(limit int) string {
	if limit == math.MaxInt {
		return "none"
	}
	return fmt.Sprint(limit)
}

// reason explains a pick in the manifest.
func reason(stage string, o Options, j int, pE, pD, gap float64) string {
	how := map[WithinKind]string{WithinNearest: "nearest to the cluster's target usage items",
		WithinCentroid: "nearest to the centroid", WithinRandom: "random within the cluster"}[o.Within]
	if stage == "gap" {
		return fmt.Sprintf("under-served cluster %d: p_E %.4f, p_D %.4f, %s gap %.4f; %s", j, pE, pD, o.Gap, gap, how)
	}
	return fmt.Sprintf("fill: budget left after the under-served clusters ran out of candidates; cluster %d, p_E %.4f; %s", j, pE, how)
}

// shares returns (n_k + alpha) / (sum n + K alpha); all zeros when there is
// nothing to share.
func shares(n []int, alpha float64) []float64 {
	total := alpha * float64(len(n))
	for _, v := range n {
		total += float64(v)
	}
	p := make([]float64, len(n))
	if total == 0 {
		return p
	}
	for j, v := range n {
		p[j] = (float64(v) + alpha) / total
	}
	return p
}

// tempered returns (g / max g)^(1/temperature), zero where g is zero.
// Dividing by the maximum first keeps small temperatures from underflowing
// every weight to zero.
func tempered(g []float64, temperature float64) []float64 {
	top := slices.Max(g)
	w := make([]float64, len(g))
	if top <= 0 {
		return w
	}
	for j, v := range g {
		if v > 0 {
			w[j] = math.Pow(v/top, 1/temperature)
		}
	}
	return w
}

// allocate splits budget over clusters in proportion to w, giving cluster k
// at most capacity[k]: a cluster whose share exceeds its capacity gets its
// capacity, and what it could not take is split again among the others,
// until the budget is spent or no cluster with positive weight has room.
// Shares are rounded by largest remainder, ties to the lower index.
func allocate(budget int, w []float64, capacity []int) []int {
	alloc := make([]int, len(w))
	for budget > 0 {
		var open []int
		var total float64
		for j, v := range w {
			if v > 0 && alloc[j] < capacity[j] {
				open = append(open, j)
				total += v
			}
		}
		if len(open) == 0 {
			break
		}
		saturated := false
		for _, j := range open {
			if room := capacity[j] - alloc[j]; float64(room) <= float64(budget)*w[j]/total {
				alloc[j] += room
				budget -= room
				saturated = true
			}
		}
		if saturated {
			continue
		}
		// Every share fits: floors, then the remainder by largest fraction.
		type frac struct {
			j int
			f float64
		}
		fr := make([]frac, 0, len(open))
		given := 0
		for _, j := range open {
			q := float64(budget) * w[j] / total
			alloc[j] += int(q)
			given += int(q)
			fr = append(fr, frac{j, q - math.Floor(q)})
		}
		slices.SortStableFunc(fr, func(a, b frac) int { return cmp.Compare(b.f, a.f) })
		for i := 0; i < budget-given; i++ {
			alloc[fr[i%len(fr)].j]++
		}
		budget = 0
	}
	return alloc
}

// picker takes ranked candidates out of clusters under a per-language limit.
type picker struct {
	c      *checked
	ranked [][]int // candidates of each cluster, best first
	next   []int   // how far each cluster's list has been consumed
	used   []bool  // pool rows already taken
	byLang map[string]int
	limit  int
}

func newPicker(c *checked, ranked [][]int, limit int) *picker {
	return &picker{c: c, ranked: ranked, next: make([]int, len(ranked)), used: make([]bool, len(c.canon)),
		byLang: map[string]int{}, limit: limit}
}

// capacity is how many candidates each cluster could still give under the
// language limits as they stand.
func (p *picker) capacity() []int {
	cp := make([]int, len(p.ranked))
	for j, list := range p.ranked {
		for _, row := range list[p.next[j]:] {
			if !p.used[row] && p.byLang[p.c.canon[row]] < p.limit {
				cp[j]++
			}
		}
	}
	return cp
}

// take returns up to n of cluster j's best remaining candidates whose
// language is under its limit.
func (p *picker) take(j, n int) []int {
	var rows []int
	list := p.ranked[j]
	for i := p.next[j]; i < len(list) && len(rows) < n; i++ {
		row := list[i]
		if p.used[row] || p.byLang[p.c.canon[row]] >= p.limit {
			continue
		}
		p.used[row] = true
		p.byLang[p.c.canon[row]]++
		rows = append(rows, row)
	}
	// Skip the consumed prefix so that later calls start after it.
	for p.next[j] < len(list) && p.used[list[p.next[j]]] {
		p.next[j]++
	}
	return rows
}

// rankWithin orders every cluster's candidates best first and returns their
// scores (by pool row): the similarity to the nearest usage item of the
// cluster, or to the centroid, or 0 in a random order.
func rankWithin(c *checked, members [][]int, usageLabels []int32, cent []float32, o Options, spherical bool) ([][]int, []float64, error) {
	d := c.pool.D
	scores := make([]float64, c.pool.N)
	ranked := make([][]int, len(members))
	usageBy := make([][]int, len(members))
	for i, l := range usageLabels {
		usageBy[l] = append(usageBy[l], i)
	}
	rng := matrix.NewRand(o.Seed, 2)
	// Similarities on unit vectors in spherical mode (cosine).
	pool, usage := c.pool, c.usage
	if spherical {
		var err error
		if pool, err = pool.Normalized("pool"); err != nil {
			return nil, nil, fmt.Errorf("selection: %w", err)
		}
		if usage, err = usage.Normalized("target usage"); err != nil {
			return nil, nil, fmt.Errorf("selection: %w", err)
		}
	}
	b := o.KMeans.Backend
	if b == nil {
		b = tensor.NewCPU()
	}
	for j, rows := range members {
		list := slices.Clone(rows)
		switch {
		case len(list) == 0:
		case o.Within == WithinRandom:
			rng.Shuffle(len(list), func(a, b int) { list[a], list[b] = list[b], list[a] })
		default:
			refs := cent[j*d : (j+1)*d]
			nref := 1
			if o.Within == WithinNearest && len(usageBy[j]) > 0 {
				refs = usage.Gather(usageBy[j]).V
				nref = len(usageBy[j])
			}
			if err := similarity(b, pool.Gather(list), refs, nref, spherical, func(r int, s float64) { scores[list[r]] = s }); err != nil {
				return nil, nil, err
			}
			slices.SortStableFunc(list, func(a, b int) int { return cmp.Compare(scores[b], scores[a]) })
		}
		ranked[j] = list
	}
	return ranked, scores, nil
}

// similarity passes each row r of cand its best similarity to the nref rows
// of refs ([nref*d]): the largest dot product on unit vectors, or minus the
// smallest squared distance, from one GEMM per block of candidates.
func similarity(b tensor.Backend, cand *matrix.Matrix, refs []float32, nref int, spherical bool, fn func(r int, s float64)) error {
	rt, err := tensor.FromF32(refs, nref, cand.D)
	if err != nil {
		return err
	}
	rnorm := make([]float64, nref)
	for i := range rnorm {
		rnorm[i] = matrix.Norm2(refs[i*cand.D : (i+1)*cand.D])
	}
	block := max(1, min(cand.N, matrix.BlockBytes/4/nref))
	for lo := 0; lo < cand.N; lo += block {
		hi := min(lo+block, cand.N)
		xb, err := cand.T.Slice(lo, hi)
		if err != nil {
			return err
		}
		out := tensor.New(tensor.F32, hi-lo, nref)
		if err := matrix.MatMulHost(b, out, xb, rt, 1); err != nil {
			return fmt.Errorf("selection: similarities: %w", err)
		}
		dots := out.F32()
		for r := 0; r < hi-lo; r++ {
			xn := matrix.Norm2(cand.Row(lo + r))
			best := math.Inf(-1)
			for i, p := range dots[r*nref : (r+1)*nref] {
				s := float64(p)
				if !spherical {
					s = -max(0, xn+rnorm[i]-2*s)
				}
				best = max(best, s)
			}
			fn(lo+r, best)
		}
	}
	return nil
}
