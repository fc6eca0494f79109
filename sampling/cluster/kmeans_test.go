package cluster

import (
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/compassml/compass/sampling/internal/matrix"
	"github.com/compassml/compass/tensor"
)

// blobs returns n rows of dimension d drawn around k random centres (spread
// apart by sep) with unit-variance noise, and the centre of each row.
func blobs(seed uint64, n, d, k int, sep float64) (*tensor.Tensor, []int) {
	rng := rand.New(rand.NewPCG(seed, 7))
	centres := make([]float64, k*d)
	for i := range centres {
		centres[i] = sep * rng.NormFloat64()
	}
	x := tensor.New(tensor.F32, n, d)
	v := x.F32()
	truth := make([]int, n)
	for i := 0; i < n; i++ {
		c := rng.IntN(k)
		truth[i] = c
		for j := 0; j < d; j++ {
			v[i*d+j] = float32(centres[c*d+j] + rng.NormFloat64())
		}
	}
	return x, truth
}

func TestKMeansRecoversBlobs(t *testing.T) {
	x, truth := blobs(1, 600, 8, 5, 10)
	res, err := KMeans(x, KMeansOptions{K: 5, Seed: 3, NInit: 3, MaxIter: 100, Tol: 1e-4})
	if err != nil {
		t.Fatal(err)
	}
	// Every true blob maps to exactly one cluster.
	seen := map[int]int32{}
	for i, c := range truth {
		if l, ok := seen[c]; ok && l != res.Labels[i] {
			t.Fatalf("blob %d split between clusters %d and %d", c, l, res.Labels[i])
		}
		seen[c] = res.Labels[i]
	}
	if !res.Converged || res.Iterations >= 100 {
		t.Errorf("converged %v after %d iterations", res.Converged, res.Iterations)
	}
	if sum := sumInts(res.Sizes); sum != 600 {
		t.Errorf("sizes sum to %d", sum)
	}
	if got := inertiaF64(x, res.Labels, res.Centroids); math.Abs(got-res.Inertia) > 1e-9*got {
		t.Errorf("inertia %v, recomputed %v", res.Inertia, got)
	}
}

func sumInts(x []int) int {
	s := 0
	for _, v := range x {
		s += v
	}
	return s
}

// inertiaF64 recomputes the inertia in float64, independently of the package.
func inertiaF64(x *tensor.Tensor, labels []int32, c *tensor.Tensor) float64 {
	d := x.Dim(1)
	xv, cv := x.F32(), c.F32()
	var s float64
	for i, l := range labels {
		for j := 0; j < d; j++ {
			e := float64(xv[i*d+j]) - float64(cv[int(l)*d+j])
			s += e * e
		}
	}
	return s
}

func TestKMeansObjectiveNeverIncreases(t *testing.T) {
	for _, tc := range []struct {
		name      string
		seed      uint64
		k         int
		spherical bool
		sep       float64
	}{
		{"overlapping", 2, 12, false, 1.5},
		{"separated", 3, 7, false, 6},
		{"spherical", 4, 10, true, 1.5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x, _ := blobs(tc.seed, 2000, 16, 9, tc.sep)
			// A bad start (the first K rows) makes many iterations.
			init := tensor.New(tensor.F32, tc.k, 16)
			copy(init.F32(), x.F32()[:tc.k*16])
			res, err := KMeans(x, KMeansOptions{K: tc.k, Init: init, MaxIter: 200, Spherical: tc.spherical})
			if err != nil {
				t.Fatal(err)
			}
			if len(res.History) < 5 {
				t.Fatalf("only %d iterations", len(res.History))
			}
			for i := 1; i < len(res.History); i++ {
				// The history is float64 arithmetic on float32 data:
				// allow its rounding, nothing more.
				if res.History[i] > res.History[i-1]*(1+1e-9) {
					t.Errorf("objective rose at iteration %d: %v -> %v", i, res.History[i-1], res.History[i])
				}
			}
			if last := res.History[len(res.History)-1]; res.Inertia > last*(1+1e-9) {
				t.Errorf("final inertia %v above the last iteration's %v", res.Inertia, last)
			}
		})
	}
}

func TestKMeansEmptyClustersReseeded(t *testing.T) {
	// Two far-apart groups; three of the four initial centroids sit far
	// from every row, so the first assignment leaves them empty.
	x, _ := blobs(5, 400, 4, 2, 20)
	init := tensor.New(tensor.F32, 4, 4)
	iv := init.F32()
	copy(iv, x.F32()[:4])
	for j := 4; j < 16; j++ {
		iv[j] = 1e4 + float32(j)
	}
	res, err := KMeans(x, KMeansOptions{K: 4, Init: init, MaxIter: 50})
	if err != nil {
		t.Fatal(err)
	}
	if res.Relocated < 3 {
		t.Errorf("relocated %d clusters, want at least 3", res.Relocated)
	}
	for j, s := range res.Sizes {
		if s == 0 {
			t.Errorf("cluster %d is empty at the end", j)
		}
	}
	cv := res.Centroids.F32()
	for _, v := range cv {
		if math.Abs(float64(v)) > 1000 {
			t.Fatalf("a centroid stayed far away: %v", cv)
		}
	}
}

func TestRelocateEmptyTakesFarthestRows(t *testing.T) {
	// Rows 0..4 on a line; one cluster at 0 holds them all, cluster 1 is
	// empty: it must take row 4 (farthest from centroid 0), and row 4 must
	// leave cluster 0's sum.
	x, _ := tensor.FromF32([]float32{0, 1, 2, 3, 10}, 5, 1)
	m, _ := check("x", x)
	labels := []int32{0, 0, 0, 0, 0}
	s := newClusterSums(m, 2)
	s.sync(labels)
	if n := relocateEmpty(s, labels, []float32{0, 0}); n != 1 {
		t.Fatalf("relocated %d", n)
	}
	if s.sums[0] != 6 || s.sums[1] != 10 || s.counts[0] != 4 || s.counts[1] != 1 || s.member[4] != 1 {
		t.Errorf("sums %v counts %v members %v", s.sums, s.counts, s.member)
	}
}

func TestKMeansDeterministic(t *testing.T) {
	x, _ := blobs(6, 3000, 12, 8, 3)
	run := func(seed uint64) *KMeansResult {
		res, err := KMeans(x, KMeansOptions{K: 8, Seed: seed, NInit: 2, MaxIter: 100, Tol: 1e-4, SeedSample: 500})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	a, b, c := run(11), run(11), run(12)
	if !slices.Equal(a.Labels, b.Labels) || !slices.Equal(a.Centroids.F32(), b.Centroids.F32()) || a.Inertia != b.Inertia {
		t.Error("same seed, different result")
	}
	if slices.Equal(a.Centroids.F32(), c.Centroids.F32()) {
		t.Error("different seeds gave identical centroids")
	}
}

func TestKMeansSpherical(t *testing.T) {
	x, truth := blobs(7, 800, 6, 4, 5)
	res, err := KMeans(x, KMeansOptions{K: 4, Spherical: true, Seed: 1, NInit: 4, MaxIter: 100})
	if err != nil {
		t.Fatal(err)
	}
	cv := res.Centroids.F32()
	for j := 0; j < 4; j++ {
		if n := matrix.Norm2(cv[j*6 : (j+1)*6]); math.Abs(n-1) > 1e-5 {
			t.Errorf("centroid %d has squared norm %v", j, n)
		}
	}
	// Directions of well-separated blobs are recovered: purity over 95%.
	if p := purity(res.Labels, truth, 4); p < 0.95 {
		t.Errorf("purity %.3f", p)
	}
	// The input was not modified (normalisation works on a copy).
	if n := matrix.Norm2(x.F32()[:6]); math.Abs(n-1) < 1e-3 {
		t.Error("input rows were normalised in place")
	}
}

// purity is the share of rows whose cluster's majority truth is theirs.
func purity(labels []int32, truth []int, k int) float64 {
	count := map[[2]int]int{}
	for i, l := range labels {
		count[[2]int{int(l), truth[i]}]++
	}
	best := map[int]int{}
	for key, c := range count {
		best[key[0]] = max(best[key[0]], c)
	}
	total := 0
	for _, c := range best {
		total += c
	}
	return float64(total) / float64(len(labels))
}

func TestMiniBatchKMeans(t *testing.T) {
	x, truth := blobs(8, 20000, 8, 6, 8)
	o := KMeansOptions{K: 6, Seed: 2, NInit: 3, MaxIter: 20, MiniBatch: &MiniBatchOptions{BatchSize: 512}}
	res, err := KMeans(x, o)
	if err != nil {
		t.Fatal(err)
	}
	if p := purity(res.Labels, truth, 6); p < 0.97 {
		t.Errorf("mini-batch purity %.3f", p)
	}
	full, err := KMeans(x, KMeansOptions{K: 6, Seed: 2, NInit: 3, MaxIter: 100})
	if err != nil {
		t.Fatal(err)
	}
	if res.Inertia > full.Inertia*1.05 {
		t.Errorf("mini-batch inertia %v vs Lloyd %v", res.Inertia, full.Inertia)
	}
	again, _ := KMeans(x, o)
	if !slices.Equal(res.Labels, again.Labels) {
		t.Error("mini-batch is not deterministic by seed")
	}
}

func TestKMeansErrors(t *testing.T) {
	x, _ := blobs(9, 10, 3, 2, 1)
	nan := tensor.New(tensor.F32, 4, 2)
	nan.F32()[5] = float32(math.NaN())
	inf := tensor.New(tensor.F32, 4, 2)
	inf.F32()[2] = float32(math.Inf(1))
	badInit := tensor.New(tensor.F32, 2, 4)
	for _, tc := range []struct {
		name string
		x    *tensor.Tensor
		o    KMeansOptions
		want string
	}{
		{"K > N", x, KMeansOptions{K: 11}, "more than the 10 rows"},
		{"K < 1", x, KMeansOptions{K: 0}, "at least 1"},
		{"NaN", nan, KMeansOptions{K: 1}, "row 2, column 1"},
		{"Inf", inf, KMeansOptions{K: 1}, "row 1, column 0"},
		{"empty", tensor.New(tensor.F32, 0, 3), KMeansOptions{K: 1}, "empty input"},
		{"nil", nil, KMeansOptions{K: 1}, "empty input"},
		{"rank 1", tensor.New(tensor.F32, 5), KMeansOptions{K: 1}, "[rows, dim]"},
		{"init dims", x, KMeansOptions{K: 2, Init: badInit}, "initial centroids are [2 4]"},
		{"negative", x, KMeansOptions{K: 2, Tol: -1}, "negative"},
		{"zero row spherical", tensor.New(tensor.F32, 3, 2), KMeansOptions{K: 1, Spherical: true}, "row 0 is all zeros"},
	} {
		_, err := KMeans(tc.x, tc.o)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", tc.name, err, tc.want)
		}
	}
	if _, err := NewMatrix([][]float32{{1, 2}, {3}}); err == nil || !strings.Contains(err.Error(), "row 1 has 1 values") {
		t.Errorf("mismatched rows: %v", err)
	}
	if _, err := NewMatrix(nil); err == nil {
		t.Error("no rows: no error")
	}
	if _, _, err := Assign(x, badInit, false, nil); err == nil || !strings.Contains(err.Error(), "dimension 3, centroids 4") {
		t.Errorf("assign dims: %v", err)
	}
}

func TestKMeansKEqualsN(t *testing.T) {
	x, _ := blobs(10, 7, 3, 7, 5)
	res, err := KMeans(x, KMeansOptions{K: 7, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	if res.Inertia > 1e-9 {
		t.Errorf("K = N: inertia %v, want 0", res.Inertia)
	}
	one, err := KMeans(x, KMeansOptions{K: 1})
	if err != nil || one.Sizes[0] != 7 {
		t.Fatalf("K = 1: %v %v", one, err)
	}
}

func TestAssignTiesToLowestIndex(t *testing.T) {
	x, _ := tensor.FromF32([]float32{0, 0, 2, 0}, 2, 2)
	c, _ := tensor.FromF32([]float32{1, 0, 1, 0, 3, 0}, 3, 2)
	labels, dist, err := Assign(x, c, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if labels[0] != 0 || labels[1] != 0 || dist[0] != 1 || dist[1] != 1 {
		t.Errorf("labels %v dist %v", labels, dist)
	}
}

func TestSilhouetteByDefinition(t *testing.T) {
	x, _ := blobs(11, 120, 5, 3, 2)
	res, err := KMeans(x, KMeansOptions{K: 3, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	for _, cosine := range []bool{false, true} {
		got, err := Silhouette(x, res.Labels, SilhouetteOptions{Cosine: cosine})
		if err != nil {
			t.Fatal(err)
		}
		want := silhouetteNaive(x, res.Labels, cosine)
		if math.Abs(got-want) > 1e-5 {
			t.Errorf("cosine %v: silhouette %v, by definition %v", cosine, got, want)
		}
	}
	// Sampled: close to the exact value, and deterministic.
	big, _ := blobs(12, 3000, 5, 4, 3)
	r, _ := KMeans(big, KMeansOptions{K: 4, Seed: 1})
	exact, _ := Silhouette(big, r.Labels, SilhouetteOptions{SampleSize: -1})
	s1, _ := Silhouette(big, r.Labels, SilhouetteOptions{SampleSize: 800, Seed: 5})
	s2, _ := Silhouette(big, r.Labels, SilhouetteOptions{SampleSize: 800, Seed: 5})
	if s1 != s2 || math.Abs(s1-exact) > 0.03 {
		t.Errorf("sampled %v %v, exact %v", s1, s2, exact)
	}
	if _, err := Silhouette(big, make([]int32, 3000), SilhouetteOptions{}); err == nil {
		t.Error("one cluster: no error")
	}
}

// silhouetteNaive is the textbook definition, in float64.
func silhouetteNaive(x *tensor.Tensor, labels []int32, cosine bool) float64 {
	n, d := x.Dim(0), x.Dim(1)
	v := x.F32()
	dist := func(i, j int) float64 {
		var s, ni, nj float64
		for f := 0; f < d; f++ {
			a, b := float64(v[i*d+f]), float64(v[j*d+f])
			if cosine {
				s += a * b
				ni += a * a
				nj += b * b
			} else {
				s += (a - b) * (a - b)
			}
		}
		if cosine {
			return 1 - s/math.Sqrt(ni*nj)
		}
		return math.Sqrt(s)
	}
	var total float64
	for i := 0; i < n; i++ {
		sum := map[int32]float64{}
		cnt := map[int32]int{}
		for j := 0; j < n; j++ {
			cnt[labels[j]]++
			if j != i {
				sum[labels[j]] += dist(i, j)
			}
		}
		own := labels[i]
		if cnt[own] == 1 {
			continue
		}
		a := sum[own] / float64(cnt[own]-1)
		b := math.Inf(1)
		for l, s := range sum {
			if l != own {
				b = min(b, s/float64(cnt[l]))
			}
		}
		total += (b - a) / max(a, b)
	}
	return total / float64(n)
}

func TestChooseKFindsPlantedK(t *testing.T) {
	x, _ := blobs(13, 1500, 6, 6, 6)
	ks, err := KRange(3, 9, 1)
	if err != nil {
		t.Fatal(err)
	}
	res, scores, err := ChooseK(x, ks, KMeansOptions{Seed: 1, NInit: 3, MaxIter: 100, Tol: 1e-4}, SilhouetteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Sizes) != 6 || len(scores) != 7 {
		t.Errorf("chose K = %d; scores %+v", len(res.Sizes), scores)
	}
	if _, err := KRange(5, 4, 1); err == nil {
		t.Error("empty K range: no error")
	}
}

func TestParseKRange(t *testing.T) {
	// The step defaults to 10.
	for s, want := range map[string][]int{"80:120:10": {80, 90, 100, 110, 120}, "2:14": {2, 12}, " 3 : 5 : 2 ": {3, 5},
		"2:9223372036854775807:9223372036854775807": {2}} { // a step past the largest int

		if got, err := ParseKRange(s); err != nil || !slices.Equal(got, want) {
			t.Errorf("ParseKRange(%q) = %v, %v; want %v", s, got, err, want)
		}
	}
	for _, s := range []string{"", "5", "1:2:3:4", "a:b", "5:2", "1:3", "3:101000000100", "2:9223372036854775807:1"} {
		if _, err := ParseKRange(s); err == nil {
			t.Errorf("ParseKRange(%q): no error", s)
		}
	}
}

func TestKMeansSameOnAnyThreadCount(t *testing.T) {
	x, _ := blobs(14, 5000, 24, 10, 2)
	run := func(threads int) *KMeansResult {
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(threads))
		res, err := KMeans(x, KMeansOptions{K: 10, Seed: 4, NInit: 2, MaxIter: 50})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	a, b := run(1), run(4)
	if !slices.Equal(a.Labels, b.Labels) || !slices.Equal(a.Centroids.F32(), b.Centroids.F32()) ||
		a.Inertia != b.Inertia || !slices.Equal(a.History, b.History) {
		t.Error("1 and 4 threads give different results")
	}
}

func TestClusterSumsIncremental(t *testing.T) {
	x, _ := blobs(15, 3000, 7, 5, 1)
	m, _ := check("x", x)
	s := newClusterSums(m, 6)
	rng := rand.New(rand.NewPCG(1, 1))
	labels := make([]int32, m.N)
	for round := 0; round < 8; round++ {
		// Round 0 sets everything (from scratch); later rounds move a few
		// rows (incrementally), and one empties cluster 5 completely.
		for i := range labels {
			if round == 0 || rng.IntN(20) == 0 {
				labels[i] = int32(rng.IntN(6))
			}
			if round == 4 && labels[i] == 5 {
				labels[i] = 0
			}
		}
		s.sync(labels)
		want := make([]float64, 6*7)
		counts := make([]int, 6)
		for i, l := range labels {
			counts[l]++
			for j, v := range m.Row(i) {
				want[int(l)*7+j] += float64(v)
			}
		}
		if !slices.Equal(counts, s.counts) {
			t.Fatalf("round %d: counts %v, want %v", round, s.counts, counts)
		}
		for j := range want {
			if math.Abs(s.sums[j]-want[j]) > 1e-9*(1+math.Abs(want[j])) {
				t.Fatalf("round %d: sum %d is %v, want %v", round, j, s.sums[j], want[j])
			}
		}
		if round == 4 && (s.counts[5] != 0 || slices.ContainsFunc(s.sums[35:], func(v float64) bool { return v != 0 })) {
			t.Errorf("emptied cluster keeps %v", s.sums[35:])
		}
		cent := make([]float32, 6*7)
		if got, want := s.objective(cent), inertia(m, labels, cent); math.Abs(got-want) > 1e-9*want {
			t.Errorf("round %d: objective %v, direct %v", round, got, want)
		}
	}
}
