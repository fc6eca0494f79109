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
	if _, err := NewMonitor(nil, Options{}); err == nil {
		t.Error("nil reference: no error")
	}
}
