package drift

import (
	"fmt"
	"math"
	"sort"

	"gonum.org/v1/gonum/stat/distuv"

	"github.com/compassml/compass/sampling/cluster"
	"github.com/compassml/compass/sampling/internal/matrix"
	"github.com/compassml/compass/tensor"
)

// Options are the monitor's settings. The zero value of each field
// means its default (DefaultOptions).
type Options struct {
	// Threshold is the Jensen-Shannon divergence (base 2, in [0, 1]) above
	// which a window's cluster histogram counts as shifted. Default 0.05:
	// moving 30% of the probability mass of 8 equal clusters onto one gives
	// 0.085, moving 20% gives 0.043; the noise of a stationary window of 200
	// rows in 8 clusters averages about 0.006 and stayed under 0.032 over
	// 2000 windows (drift_test.go). Not a number from the paper.
	Threshold float64
	// Alpha is the level of the chi-square test of homogeneity between the
	// reference counts and the window's. A window only counts as shifted
	// when the test also rejects at Alpha, so a small window's noise (whose
	// JS grows like K/N) does not trigger. Default 0.01; negative disables
	// the test as a condition (the p-value is still reported).
	Alpha float64
	// K of the last M windows must be shifted for drift to be confirmed, so
	// one noisy window never triggers. Default 2 of 3.
	K, M int
	// Quantile of the reference rows' distance to their nearest centroid
	// beyond which a window row lies in a new region. Default 0.99.
	Quantile float64
}

// DefaultOptions returns the defaults documented on Options.
func DefaultOptions() Options {
	return Options{Threshold: 0.05, Alpha: 0.01, K: 2, M: 3, Quantile: 0.99}
}

func (o Options) withDefaults() (Options, error) {
	d := DefaultOptions()
	if o.Threshold == 0 {
		o.Threshold = d.Threshold
	}
	if o.Alpha == 0 {
		o.Alpha = d.Alpha
	}
	if o.K == 0 {
		o.K = d.K
	}
	if o.M == 0 {
		o.M = max(d.M, o.K)
	}
	if o.Quantile == 0 {
		o.Quantile = d.Quantile
	}
	switch {
	case math.IsNaN(o.Threshold) || o.Threshold < 0 || o.Threshold > 1:
		return o, fmt.Errorf("drift: drift threshold %v is outside [0, 1]", o.Threshold)
	case math.IsNaN(o.Alpha) || o.Alpha >= 1:
		return o, fmt.Errorf("drift: drift test level %v is not below 1", o.Alpha)
	case o.K < 1 || o.M < o.K:
		return o, fmt.Errorf("drift: drift rule %d of %d windows: want 1 <= k <= m", o.K, o.M)
	case math.IsNaN(o.Quantile) || o.Quantile <= 0 || o.Quantile > 1:
		return o, fmt.Errorf("drift: new-region quantile %v is outside (0, 1]", o.Quantile)
	}
	return o, nil
}

// Reference is what a window is compared with: the clusters of the
// adapter's selection, how many reference rows each holds, and the radius
// beyond which a row is far from every cluster. It is plain data, saved as
// JSON next to an adapter.
type Reference struct {
	Dim       int       `json:"dim"`
	Centroids []float32 `json:"centroids"` // [K, Dim] row-major
	Counts    []int     `json:"counts"`    // reference rows per cluster
	Spherical bool      `json:"spherical"` // cosine distance on unit rows
	Quantile  float64   `json:"quantile"`
	Radius    float64   `json:"radius"` // Quantile of the reference rows' nearest-centroid distance
	// Embedder names what made the reference rows (sampling/embed's
	// name; "" when unknown): texts must be embedded by the same to be
	// compared with it.
	Embedder string `json:"embedder,omitempty"`
}

// NewReference assigns the reference rows x (the usage distribution
// the adapter was selected for) to centroids ([K, d], e.g.
// KMeansResult.Centroids) and records their counts and the quantile of
// their distance to the nearest centroid. With spherical, rows and
// centroids are compared by cosine distance (1 - cos).
func NewReference(x, centroids *tensor.Tensor, spherical bool, quantile float64) (*Reference, error) {
	if quantile == 0 {
		quantile = DefaultOptions().Quantile
	}
	if math.IsNaN(quantile) || quantile <= 0 || quantile > 1 {
		return nil, fmt.Errorf("drift: drift reference: quantile %v is outside (0, 1]", quantile)
	}
	c, err := check("drift reference centroids", centroids)
	if err != nil {
		return nil, err
	}
	r := &Reference{Dim: c.D, Centroids: append([]float32(nil), c.V...), Spherical: spherical, Quantile: quantile}
	if spherical {
		if r.Centroids, err = unitRows("drift reference centroids", r.Centroids, c.D); err != nil {
			return nil, err
		}
	}
	labels, dist, err := r.assign("drift reference rows", x)
	if err != nil {
		return nil, err
	}
	r.Counts = make([]int, c.N)
	for _, l := range labels {
		r.Counts[l]++
	}
	sort.Float64s(dist)
	r.Radius = dist[max(0, int(math.Ceil(quantile*float64(len(dist))))-1)]
	return r, nil
}

// Check validates a reference read from disk.
func (r *Reference) Check() error {
	k := len(r.Counts)
	switch {
	case r.Dim <= 0 || k == 0:
		return fmt.Errorf("drift: drift reference: empty (dim %d, %d clusters)", r.Dim, k)
	case len(r.Centroids)%r.Dim != 0 || len(r.Centroids)/r.Dim != k:
		// Divided, not multiplied: k*Dim overflows for a Dim near 2^62
		// and matched an empty list.
		return fmt.Errorf("drift: drift reference: %d centroid values for %d clusters of dim %d", len(r.Centroids), k, r.Dim)
	case math.IsNaN(r.Radius) || r.Radius < 0:
		return fmt.Errorf("drift: drift reference: radius %v", r.Radius)
	}
	total := 0
	for j, n := range r.Counts {
		if n < 0 {
			return fmt.Errorf("drift: drift reference: cluster %d has count %d", j, n)
		}
		total += n
	}
	if total == 0 {
		return fmt.Errorf("drift: drift reference: no reference rows")
	}
	for i, v := range r.Centroids {
		if v-v != 0 {
			return fmt.Errorf("drift: drift reference: centroid value %d is %v", i, v)
		}
	}
	return nil
}

// Distribution is the reference cluster distribution, with half a row added
// to every cluster so that no share is zero (Jeffreys smoothing).
func (r *Reference) Distribution() []float64 { return smoothed(r.Counts) }

func smoothed(counts []int) []float64 {
	total := 0.0
	for _, n := range counts {
		total += float64(n) + 0.5
	}
	p := make([]float64, len(counts))
	for j, n := range counts {
		p[j] = (float64(n) + 0.5) / total
	}
	return p
}

// assign returns the nearest centroid of each row of x and its distance
// (Euclidean, or 1 - cos when spherical). The nearest centroid comes from
// k-means' assignment (one distance GEMM per block of rows, float32), the
// distance to it is then taken exactly in float64: a row equally near two
// centroids, within float32 rounding, may go to either, and its distance
// is the same either way. The float64 loop over every centroid that it
// replaces was ten times slower (BenchmarkReferenceAssign): about ten
// minutes for a million rows and a thousand clusters.
func (r *Reference) assign(what string, x *tensor.Tensor) ([]int, []float64, error) {
	m, err := check(what, x)
	if err != nil {
		return nil, nil, err
	}
	if m.D != r.Dim {
		return nil, nil, fmt.Errorf("drift: %s: dimension %d, the clusters have %d", what, m.D, r.Dim)
	}
	if r.Spherical {
		if m, err = m.Normalized(what); err != nil {
			return nil, nil, fmt.Errorf("drift: %w", err)
		}
	}
	cent, err := tensor.FromF32(r.Centroids, len(r.Centroids)/r.Dim, r.Dim)
	if err != nil {
		return nil, nil, fmt.Errorf("drift: %s: %w", what, err)
	}
	nearest, _, err := cluster.Assign(m.T, cent, false, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("drift: %s: %w", what, err)
	}
	labels := make([]int, m.N)
	dist := make([]float64, m.N)
	matrix.ParallelChunks(m.N, matrix.Workers(m.N), func(_, lo, hi int) {
		for i := lo; i < hi; i++ {
			j := int(nearest[i])
			labels[i] = j
			dist[i] = r.distance(m.Row(i), r.Centroids[j*r.Dim:(j+1)*r.Dim])
		}
	})
	return labels, dist, nil
}

// distance is the Euclidean distance of row and centroid c, or 1 - their
// dot product (rows and centroids unit) when spherical, in float64.
func (r *Reference) distance(row, c []float32) float64 {
	c = c[:len(row)]
	var s float64
	if r.Spherical {
		for t, v := range row {
			s += float64(v) * float64(c[t])
		}
		return max(1-s, 0)
	}
	for t, v := range row {
		e := float64(v) - float64(c[t])
		s += e * e
	}
	return math.Sqrt(s)
}

// check validates x, naming it what in errors.
func check(what string, x *tensor.Tensor) (*matrix.Matrix, error) {
	m, err := matrix.Check(what, x)
	if err != nil {
		return nil, fmt.Errorf("drift: %w", err)
	}
	return m, nil
}

func unitRows(what string, v []float32, d int) ([]float32, error) {
	out := make([]float32, len(v))
	for i := 0; i < len(v)/d; i++ {
		s := matrix.Norm2(v[i*d : (i+1)*d])
		if s == 0 {
			return nil, fmt.Errorf("drift: %s: row %d is all zeros and has no direction", what, i)
		}
		inv := 1 / math.Sqrt(s)
		for t := i * d; t < (i+1)*d; t++ {
			out[t] = float32(float64(v[t]) * inv)
		}
	}
	return out, nil
}

// Window is one window's comparison with the reference.
type Window struct {
	Window    int     `json:"window"` // 0-based index in the stream
	Rows      int     `json:"rows"`
	Histogram []int   `json:"histogram"` // window rows per cluster
	JS        float64 `json:"js"`        // Jensen-Shannon divergence, base 2
	ChiSquare float64 `json:"chi_square"`
	DF        int     `json:"df"`
	PValue    float64 `json:"p_value"`
	// NewRegion is how many rows lie beyond the reference radius of every
	// cluster, NewRegionShare their share of the window.
	NewRegion      int     `json:"new_region"`
	NewRegionShare float64 `json:"new_region_share"`
	Shifted        bool    `json:"shifted"`   // this window passes the threshold (and the test)
	Recent         int     `json:"recent"`    // shifted windows among the last M
	Confirmed      bool    `json:"confirmed"` // K of the last M windows shifted
}

// Compare computes a window's statistics against the reference without
// the k-of-m rule (Shifted is set from o; Recent and Confirmed are not).
func (r *Reference) Compare(x *tensor.Tensor, o Options) (*Window, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := r.Check(); err != nil {
		return nil, err
	}
	labels, dist, err := r.assign("drift window", x)
	if err != nil {
		return nil, err
	}
	w := &Window{Rows: len(labels), Histogram: make([]int, len(r.Counts))}
	for i, l := range labels {
		w.Histogram[l]++
		if dist[i] > r.Radius {
			w.NewRegion++
		}
	}
	w.NewRegionShare = float64(w.NewRegion) / float64(w.Rows)
	q := make([]float64, len(w.Histogram))
	for j, n := range w.Histogram {
		q[j] = float64(n) / float64(w.Rows)
	}
	w.JS = JSDivergence(r.Distribution(), q)
	w.ChiSquare, w.DF, w.PValue = ChiSquareHomogeneity(r.Counts, w.Histogram)
	w.Shifted = w.JS > o.Threshold && (o.Alpha < 0 || w.PValue < o.Alpha)
	return w, nil
}

// JSDivergence is the Jensen-Shannon divergence of two distributions over
// the same bins, in bits (so in [0, 1]). Both are normalised first; zero
// bins are fine.
func JSDivergence(p, q []float64) float64 {
	if len(p) != len(q) {
		return math.NaN()
	}
	sp, sq := 0.0, 0.0
	for j := range p {
		sp += p[j]
		sq += q[j]
	}
	if sp <= 0 || sq <= 0 {
		return math.NaN()
	}
	var js float64
	for j := range p {
		a, b := p[j]/sp, q[j]/sq
		m := (a + b) / 2
		if a > 0 {
			js += a * math.Log2(a/m) / 2
		}
		if b > 0 {
			js += b * math.Log2(b/m) / 2
		}
	}
	return max(js, 0)
}

// ChiSquareHomogeneity tests whether two count vectors over the same bins
// come from one distribution (Pearson's chi-square on the 2 x K table; bins
// empty in both are dropped). It returns the statistic, the degrees of
// freedom and the p-value; with fewer than two non-empty bins, or vectors
// of different lengths, there is nothing to test and the p-value is 1.
func ChiSquareHomogeneity(a, b []int) (stat float64, df int, p float64) {
	if len(a) != len(b) {
		return 0, 0, 1
	}
	na, nb := 0, 0
	for j := range a {
		na += a[j]
		nb += b[j]
	}
	if na == 0 || nb == 0 {
		return 0, 0, 1
	}
	n := float64(na + nb)
	bins := 0
	for j := range a {
		col := float64(a[j] + b[j])
		if col == 0 {
			continue
		}
		bins++
		ea, eb := col*float64(na)/n, col*float64(nb)/n
		da, db := float64(a[j])-ea, float64(b[j])-eb
		stat += da*da/ea + db*db/eb
	}
	if bins < 2 {
		return 0, 0, 1
	}
	df = bins - 1
	return stat, df, distuv.ChiSquared{K: float64(df)}.Survival(stat)
}

// Monitor applies the k-of-m rule to a stream of windows.
type Monitor struct {
	ref    *Reference
	opts   Options
	recent []bool // shifted flags of the last M windows, oldest first
	next   int    // index of the next window
}

// NewMonitor returns a monitor of windows against ref.
func NewMonitor(ref *Reference, o Options) (*Monitor, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	if ref == nil {
		return nil, fmt.Errorf("drift: drift monitor: no reference")
	}
	if err := ref.Check(); err != nil {
		return nil, err
	}
	return &Monitor{ref: ref, opts: o}, nil
}

// Options returns the monitor's options with defaults filled in.
func (m *Monitor) Options() Options { return m.opts }

// Observe compares the next window with the reference and applies the
// k-of-m rule.
func (m *Monitor) Observe(x *tensor.Tensor) (*Window, error) {
	w, err := m.ref.Compare(x, m.opts)
	if err != nil {
		return nil, fmt.Errorf("window %d: %w", m.next, err)
	}
	w.Window = m.next
	m.next++
	m.recent = append(m.recent, w.Shifted)
	if len(m.recent) > m.opts.M {
		m.recent = m.recent[1:]
	}
	for _, s := range m.recent {
		if s {
			w.Recent++
		}
	}
	w.Confirmed = w.Recent >= m.opts.K
	return w, nil
}

// Reset forgets the recent windows, e.g. once a confirmed drift has been
// acted on, so the next alarm needs K fresh shifted windows.
func (m *Monitor) Reset() { m.recent = m.recent[:0] }
