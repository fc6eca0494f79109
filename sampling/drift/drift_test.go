package drift

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/compassml/compass/tensor"
)

// mixture draws rows from K Gaussian clusters in d dimensions: cluster j is
// centred at 4*e_j with unit variance, chosen with probability w[j]. A
// far row (probability far) is centred at 12*(e_0+e_1), away from every
// cluster.
type mixture struct {
	d   int
	rng *rand.Rand
}

func (g mixture) centroids(k int) *tensor.Tensor {
	t := tensor.New(tensor.F32, k, g.d)
	v := t.F32()
	for j := 0; j < k; j++ {
		v[j*g.d+j] = 4
	}
	return t
}

func (g mixture) rows(n int, w []float64, far float64) *tensor.Tensor {
	t := tensor.New(tensor.F32, n, g.d)
	v := t.F32()
	for i := 0; i < n; i++ {
		row := v[i*g.d : (i+1)*g.d]
		for c := range row {
			row[c] = float32(g.rng.NormFloat64())
		}
		if g.rng.Float64() < far {
			row[0] += 12
			row[1] += 12
			continue
		}
		u, j := g.rng.Float64(), 0
		for j < len(w)-1 && u >= w[j] {
			u -= w[j]
			j++
		}
		row[j] += 4
	}
	return t
}

func uniform(k int) []float64 {
	w := make([]float64, k)
	for j := range w {
		w[j] = 1 / float64(k)
	}
	return w
}

// shifted moves mass s from every other cluster, proportionally, to cluster 0.
func shifted(k int, s float64) []float64 {
	w := uniform(k)
	w[0] += s
	for j := 1; j < k; j++ {
		w[j] -= s / float64(k-1)
	}
	return w
}

const (
	driftK      = 8
	driftDim    = 8
	driftWindow = 200
	driftShift  = 0.3
)

func driftReference(t *testing.T, g mixture) *Reference {
	t.Helper()
	ref, err := NewReference(g.rows(4000, uniform(driftK), 0), g.centroids(driftK), false, 0)
	if err != nil {
		t.Fatal(err)
	}
	return ref
}

// On a stationary stream the default options almost never alarm: over 2000
// windows of 200 rows in 8 clusters, measured 0 shifted windows and 0
// confirmations (seed 1). The bounds asserted are 1% of windows shifted and
// 0.2% confirmed.
func TestDriftFalseAlarmRate(t *testing.T) {
	g := mixture{d: driftDim, rng: rand.New(rand.NewPCG(1, 2))}
	ref := driftReference(t, g)
	mon, err := NewMonitor(ref, Options{})
	if err != nil {
		t.Fatal(err)
	}
	const windows = 2000
	shiftedN, confirmed, maxJS, newRows := 0, 0, 0.0, 0
	for range windows {
		w, err := mon.Observe(g.rows(driftWindow, uniform(driftK), 0))
		if err != nil {
			t.Fatal(err)
		}
		if w.Shifted {
			shiftedN++
		}
		if w.Confirmed {
			confirmed++
			mon.Reset()
		}
		maxJS = max(maxJS, w.JS)
		newRows += w.NewRegion
	}
	newShare := float64(newRows) / (windows * driftWindow)
	t.Logf("stationary: %d windows of %d: %d shifted, %d confirmed, max JS %.4f, new-region share %.4f",
		windows, driftWindow, shiftedN, confirmed, maxJS, newShare)
	if shiftedN > windows/100 {
		t.Errorf("%d of %d stationary windows shifted, want at most 1%%", shiftedN, windows)
	}
	if confirmed > windows/500 {
		t.Errorf("%d of %d stationary windows confirmed drift, want at most 0.2%%", confirmed, windows)
	}
	// The radius is the reference's 99th percentile, so about 1% of
	// stationary rows lie beyond it.
	if newShare < 0.003 || newShare > 0.03 {
		t.Errorf("stationary new-region share %.4f, want about 0.01", newShare)
	}
}

// A shift of 30% of the probability mass onto one of 8 clusters (JS 0.085
// bits against the uniform reference) is confirmed within 3 windows of 200
// rows in every one of 50 seeded trials; 2 is the least the 2-of-3 rule
// allows.
func TestDriftPlantedShiftDetected(t *testing.T) {
	g := mixture{d: driftDim, rng: rand.New(rand.NewPCG(3, 4))}
	ref := driftReference(t, g)
	t.Logf("JS of the shifted distribution against the reference: %.4f", JSDivergence(ref.Distribution(), shifted(driftK, driftShift)))
	const trials, within = 50, 3
	worst := 0
	for trial := range trials {
		mon, err := NewMonitor(ref, Options{})
		if err != nil {
			t.Fatal(err)
		}
		for range 5 { // stationary lead-in
			if w, err := mon.Observe(g.rows(driftWindow, uniform(driftK), 0)); err != nil || w.Confirmed {
				t.Fatalf("trial %d: stationary lead-in: confirmed %v, err %v", trial, w != nil && w.Confirmed, err)
			}
		}
		n := 0
		for n = 1; n <= 10; n++ {
			w, err := mon.Observe(g.rows(driftWindow, shifted(driftK, driftShift), 0))
			if err != nil {
				t.Fatal(err)
			}
			if w.Confirmed {
				break
			}
		}
		worst = max(worst, n)
	}
	t.Logf("planted shift of %v: confirmed within %d windows in all %d trials", driftShift, worst, trials)
	if worst > within {
		t.Errorf("planted shift confirmed after %d windows in some trial, want within %d", worst, within)
	}
}

// One noisy window does not confirm drift under the 2-of-3 rule.
func TestDriftOneNoisyWindow(t *testing.T) {
	g := mixture{d: driftDim, rng: rand.New(rand.NewPCG(5, 6))}
	ref := driftReference(t, g)
	mon, err := NewMonitor(ref, Options{})
	if err != nil {
		t.Fatal(err)
	}
	stream := []float64{0, 0, 0.5, 0, 0, 0}
	for i, s := range stream {
		w, err := mon.Observe(g.rows(driftWindow, shifted(driftK, s), 0))
		if err != nil {
			t.Fatal(err)
		}
		if w.Shifted != (s > 0) {
			t.Errorf("window %d (shift %v): shifted %v, JS %.4f p %.3g", i, s, w.Shifted, w.JS, w.PValue)
		}
		if w.Confirmed {
			t.Errorf("window %d: one noisy window confirmed drift", i)
		}
	}
}

// Rows from a region no cluster covers are flagged with their share.
func TestDriftNewRegion(t *testing.T) {
	g := mixture{d: driftDim, rng: rand.New(rand.NewPCG(7, 8))}
	ref := driftReference(t, g)
	w, err := ref.Compare(g.rows(2000, uniform(driftK), 0.2), Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("20%% far rows: new-region share %.4f (radius %.3f)", w.NewRegionShare, ref.Radius)
	if math.Abs(w.NewRegionShare-0.2) > 0.03 {
		t.Errorf("new-region share %.4f, want about 0.2 (+ about 0.01 of the stationary rows)", w.NewRegionShare)
	}
}

func TestJSDivergenceAndChiSquare(t *testing.T) {
	if js := JSDivergence([]float64{1, 0}, []float64{0, 1}); math.Abs(js-1) > 1e-12 {
		t.Errorf("JS of disjoint distributions = %v, want 1", js)
	}
	if js := JSDivergence([]float64{2, 2}, []float64{0.5, 0.5}); js != 0 {
		t.Errorf("JS of equal distributions = %v, want 0", js)
	}
	// JS([1/2,1/2], [1,0]) = 1/2 KL(p||m) + 1/2 KL(q||m), m = [3/4, 1/4].
	want := 0.5*(0.5*math.Log2(0.5/0.75)+0.5*math.Log2(0.5/0.25)) + 0.5*math.Log2(1/0.75)
	if js := JSDivergence([]float64{0.5, 0.5}, []float64{1, 0}); math.Abs(js-want) > 1e-12 {
		t.Errorf("JS = %v, want %v", js, want)
	}
	if js := JSDivergence([]float64{1}, []float64{1, 0}); !math.IsNaN(js) {
		t.Errorf("JS of mismatched bins = %v, want NaN", js)
	}
	// 2x2 table [[30, 10], [20, 40]]: expected [[20, 20], [30, 30]], so
	// chi2 = 100/20 + 100/20 + 100/30 + 100/30 = 16.667, df 1,
	// p = erfc(sqrt(chi2/2)).
	stat, df, p := ChiSquareHomogeneity([]int{30, 10, 0}, []int{20, 40, 0})
	wantStat := 10.0 + 20.0/3
	if math.Abs(stat-wantStat) > 1e-9 || df != 1 || math.Abs(p-math.Erfc(math.Sqrt(wantStat/2))) > 1e-12 {
		t.Errorf("chi-square = %v df %d p %v, want %v df 1 p %v", stat, df, p, wantStat, math.Erfc(math.Sqrt(wantStat/2)))
	}
	if _, _, p := ChiSquareHomogeneity([]int{5, 0}, []int{7, 0}); p != 1 {
		t.Errorf("one non-empty bin: p = %v, want 1", p)
	}
	// Bins of different lengths, either way round: nothing to test (the
	// longer first used to index past the shorter).
	if stat, df, p := ChiSquareHomogeneity([]int{30, 10}, []int{20, 40, 5}); stat != 0 || df != 0 || p != 1 {
		t.Errorf("2 bins against 3: chi-square = %v df %d p %v, want 0 df 0 p 1", stat, df, p)
	}
	if stat, df, p := ChiSquareHomogeneity([]int{30, 10, 5}, []int{20, 40}); stat != 0 || df != 0 || p != 1 {
		t.Errorf("3 bins against 2: chi-square = %v df %d p %v, want 0 df 0 p 1", stat, df, p)
	}
}

func TestDriftBadInput(t *testing.T) {
	g := mixture{d: driftDim, rng: rand.New(rand.NewPCG(9, 10))}
	ref := driftReference(t, g)
	if _, err := ref.Compare(tensor.New(tensor.F32, 3, driftDim+1), Options{}); err == nil {
		t.Error("window of the wrong dimension: no error")
	}
	nan := g.rows(3, uniform(driftK), 0)
	nan.F32()[4] = float32(math.NaN())
	if _, err := ref.Compare(nan, Options{}); err == nil {
		t.Error("window with NaN: no error")
	}
	for _, o := range []Options{{Threshold: 2}, {K: 3, M: 2}, {Quantile: 1.5}, {Alpha: 1}} {
		if _, err := NewMonitor(ref, o); err == nil {
			t.Errorf("options %+v: no error", o)
		}
	}
	bad := *ref
	bad.Centroids = bad.Centroids[1:]
	if _, err := NewMonitor(&bad, Options{}); err == nil {
		t.Error("reference with a short centroid list: no error")
	}
	// k*Dim overflowed to 0 and matched no centroids at all (found with
	// engine's FuzzLoadDriftReference).
	bad = Reference{Dim: 1 << 62, Counts: []int{1, 1, 1, 1}, Quantile: 0.9}
	if err := bad.Check(); err == nil {
		t.Error("reference of dim 2^62 and no centroids: no error")
	}
	bad = Reference{Dim: 1, Centroids: []float32{0}, Counts: []int{1}, Quantile: 0.9, Radius: math.NaN()}
	if err := bad.Check(); err == nil {
		t.Error("reference of radius NaN: no error")
	}
	if _, err := NewMonitor(nil, Options{}); err == nil {
		t.Error("nil reference: no error")
	}
}

// column returns the values as an F32 [n, 1] matrix: n rows of one dimension.
func column(t *testing.T, v ...float32) *tensor.Tensor {
	t.Helper()
	x, err := tensor.FromF32(v, len(v), 1)
	if err != nil {
		t.Fatal(err)
	}
	return x
}

// repeat returns n copies of v.
func repeat(v float32, n int) []float32 {
	s := make([]float32, n)
	for i := range s {
		s[i] = v
	}
	return s
}

// The radius is the nearest-rank quantile of the reference rows' distances
// (numpy's percentile, method "inverted_cdf"), and a row at exactly the
// radius is not in a new region.
func TestReferenceRadiusNearestRank(t *testing.T) {
	rows := column(t, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10) // distances 1..10 from the centroid 0
	for _, tc := range []struct {
		quantile  float64
		radius    float64
		newRegion int
	}{
		{0.9, 9, 1}, // ceil(0.9*10) = 9th smallest; only the row at 10 is beyond it
		{1, 10, 0},  // the farthest row; none is beyond it
		{0.05, 1, 9},
	} {
		ref, err := NewReference(rows, column(t, 0), false, tc.quantile)
		if err != nil {
			t.Fatal(err)
		}
		if ref.Radius != tc.radius {
			t.Errorf("quantile %v: radius %v, want %v", tc.quantile, ref.Radius, tc.radius)
		}
		w, err := ref.Compare(rows, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if w.NewRegion != tc.newRegion {
			t.Errorf("quantile %v: the reference rows have %d in a new region, want %d", tc.quantile, w.NewRegion, tc.newRegion)
		}
	}
}

// Distribution adds half a row to every cluster (Jeffreys smoothing).
func TestReferenceDistributionJeffreys(t *testing.T) {
	got := (&Reference{Counts: []int{0, 2}}).Distribution()
	want := []float64{0.5 / 3, 2.5 / 3}
	for j := range want {
		if math.Abs(got[j]-want[j]) > 1e-15 {
			t.Errorf("counts [0 2]: distribution %v, want %v", got, want)
			break
		}
	}
}

// twoClusters is a reference of 100 rows at each of the centroids 0 and 10,
// in one dimension.
func twoClusters(t *testing.T) *Reference {
	t.Helper()
	ref, err := NewReference(column(t, append(repeat(0, 100), repeat(10, 100)...)...), column(t, 0, 10), false, 1)
	if err != nil {
		t.Fatal(err)
	}
	return ref
}

// A window whose JS divergence passes the threshold is shifted only when
// the chi-square test also rejects at Alpha; a negative Alpha drops the
// test.
func TestCompareAlphaGate(t *testing.T) {
	ref := twoClusters(t)
	// 8 rows at 0 and 2 at 10 against [0.5, 0.5]: JS 0.0731, and the 2x2
	// table [[100, 100], [8, 2]] gives chi2 3.431, p 0.0640 (scipy's
	// chi2_contingency without correction).
	w, err := ref.Compare(column(t, append(repeat(0, 8), repeat(10, 2)...)...), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(w.JS-0.073104) > 1e-6 || math.Abs(w.ChiSquare-3.431373) > 1e-6 || math.Abs(w.PValue-0.063969) > 1e-6 {
		t.Errorf("8 and 2 rows: JS %v, chi2 %v, p %v; want 0.073104, 3.431373, 0.063969", w.JS, w.ChiSquare, w.PValue)
	}
	if w.Shifted {
		t.Errorf("8 and 2 rows: shifted with p %v above alpha 0.01, want not shifted", w.PValue)
	}
	// 3 rows at 0: JS 0.311, p 0.0855.
	three := column(t, 0, 0, 0)
	for _, tc := range []struct {
		alpha float64
		want  bool
	}{{0, false}, {-1, true}} {
		w, err := ref.Compare(three, Options{Alpha: tc.alpha})
		if err != nil {
			t.Fatal(err)
		}
		if w.Shifted != tc.want {
			t.Errorf("3 rows at 0, alpha %v: shifted %v (JS %v, p %v), want %v", tc.alpha, w.Shifted, w.JS, w.PValue, tc.want)
		}
	}
}

// The k-of-m rule counts the last M windows only, and M defaults to K
// when K is above the default M.
func TestMonitorLastMWindows(t *testing.T) {
	ref := twoClusters(t)
	mon, err := NewMonitor(ref, Options{K: 2, M: 3})
	if err != nil {
		t.Fatal(err)
	}
	shifted := column(t, repeat(0, 20)...)                        // JS 0.311, p 1.9e-5
	clean := column(t, append(repeat(0, 5), repeat(10, 5)...)...) // JS 0, p 1
	for i, tc := range []struct {
		window    *tensor.Tensor
		recent    int
		confirmed bool
	}{
		{shifted, 1, false},
		{clean, 1, false},
		{clean, 1, false},
		{shifted, 1, false}, // the first shifted window is 4 windows back
		{shifted, 2, true},
	} {
		w, err := mon.Observe(tc.window)
		if err != nil {
			t.Fatal(err)
		}
		if w.Recent != tc.recent || w.Confirmed != tc.confirmed {
			t.Errorf("window %d: recent %d, confirmed %v; want %d, %v", i, w.Recent, w.Confirmed, tc.recent, tc.confirmed)
		}
	}

	mon, err = NewMonitor(ref, Options{K: 5})
	if err != nil {
		t.Fatalf("K 5 and M unset: %v", err)
	}
	if o := mon.Options(); o.K != 5 || o.M != 5 {
		t.Errorf("K 5 and M unset: K %d, M %d; want 5, 5", o.K, o.M)
	}
}

// A row's cosine distance to its own direction is 0, not negative, though
// the float64 dot product of these float32 unit values is 1 + 3.0e-8.
func TestSphericalDistanceOfItself(t *testing.T) {
	u := []float32{0.16021416, -0.81812894, 0.55226487}
	x, err := tensor.FromF32(u, 1, 3)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := NewReference(x, x, true, 1)
	if err != nil {
		t.Fatal(err)
	}
	if ref.Radius != 0 {
		t.Errorf("a reference of its own centroid: radius %v, want 0", ref.Radius)
	}
	if d := ref.distance(u, u); d != 0 {
		t.Errorf("distance of %v to itself: %v, want 0", u, d)
	}
}
