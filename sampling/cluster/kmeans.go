package cluster

import (
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/compassml/compass/sampling/internal/matrix"
	"github.com/compassml/compass/tensor"
)

// KMeansOptions configure KMeans. The zero value of every field but K is
// usable; DefaultKMeansOptions gives scikit-learn's defaults.
type KMeansOptions struct {
	// K is the number of clusters, 1 <= K <= N.
	K int
	// Spherical clusters by cosine similarity: rows are L2-normalised (a
	// copy is made when they are not unit vectors already), and centroids
	// are re-normalised after every update. Inertia stays the sum of squared
	// euclidean distances, which for unit vectors is 2 * sum(1 - cos).
	Spherical bool
	// MaxIter bounds Lloyd iterations per restart (epochs in mini-batch
	// mode); 0 means 300 (100 in mini-batch mode), as in scikit-learn.
	MaxIter int
	// Tol is scikit-learn's tolerance: Lloyd stops when the summed squared
	// centroid shift of an iteration is at most Tol times the mean
	// per-feature variance of the data. 0 stops only when no assignment
	// changes (or at MaxIter). DefaultKMeansOptions sets 1e-4.
	Tol float64
	// NInit is the number of restarts from independent seedings; the run
	// with the lowest inertia is kept. 0 means 1 (scikit-learn's "auto" for
	// k-means++); with Init given it must be 0 or 1.
	NInit int
	// Seed makes every random choice (seeding, samples, mini-batches)
	// reproducible: the same seed and data give the same result on the CPU
	// backend, whatever the number of threads.
	Seed uint64
	// Init, if not nil, is an F32 [K, d] tensor of initial centroids used
	// instead of k-means++ seeding.
	Init *tensor.Tensor
	// SeedSample runs k-means++ on a uniform sample of this many rows when N
	// is larger (seeding costs K * (2 + ln K) distance passes over its
	// input). 0 means max(10000, 50 K); negative means always all rows.
	SeedSample int
	// MiniBatch, if not nil, runs Sculley's mini-batch k-means instead of
	// Lloyd (see MiniBatchOptions).
	MiniBatch *MiniBatchOptions
	// Backend computes the distance GEMMs; nil means the CPU backend.
	Backend tensor.Backend
	// Progress receives one line per iteration; nil for none.
	Progress io.Writer
}

// MiniBatchOptions configure mini-batch k-means, which follows scikit-learn's
// MiniBatchKMeans (Sculley 2010, "Web-scale k-means clustering"): each step
// draws BatchSize rows uniformly with replacement, assigns them to the
// nearest centroid, and moves each centroid c that received points to the
// mean of everything it has ever received: c = (c*n_c + sum(batch points))
// / (n_c + batch count), a per-centre learning rate of 1/n_c. Every 10*K
// sampled rows (or as soon as some centre has received nothing), centres
// whose count is below ReassignmentRatio times the largest count are moved
// to random rows of the current batch. It stops after MaxIter epochs
// (MaxIter*N/BatchSize steps), or when the exponentially weighted average of
// the per-row batch inertia has not improved for MaxNoImprovement steps.
// Seeding runs k-means++ on 3*BatchSize random rows (at least 3*K), NInit
// times, keeping the seeding with the lowest inertia on another such
// sample. Only the rows of each batch are touched, so a memory-mapped input
// larger than memory works; the final assignment streams over all rows once.
type MiniBatchOptions struct {
	BatchSize         int     // 0 means 1024
	MaxNoImprovement  int     // 0 means 10; negative disables early stopping
	ReassignmentRatio float64 // 0 means 0.01; negative disables reassignment
}

// DefaultKMeansOptions returns scikit-learn's KMeans defaults for k clusters:
// 300 iterations, tolerance 1e-4, one k-means++ seeding.
func DefaultKMeansOptions(k int) KMeansOptions {
	return KMeansOptions{K: k, MaxIter: 300, Tol: 1e-4, NInit: 1}
}

// KMeansResult is the outcome of the best restart.
type KMeansResult struct {
	Centroids *tensor.Tensor // F32 [K, d] on the host
	Labels    []int32        // cluster of each row, in [0, K)
	Sizes     []int          // rows per cluster
	// Inertia is the sum of squared euclidean distances of the rows to
	// their centroids, computed exactly (float64) at the end.
	Inertia float64
	// Iterations run by the kept restart (steps in mini-batch mode).
	Iterations int
	// Converged is true when the run stopped before MaxIter: assignments
	// stopped changing or the centroid shift fell below the tolerance.
	Converged bool
	// History holds, for each Lloyd iteration, the inertia of that
	// iteration's assignment under the centroids it was made with (float64).
	// Lloyd never increases it. In mini-batch mode it holds the smoothed
	// per-row batch inertia.
	History []float64
	// Restart is the index of the kept restart; Relocated counts the empty
	// clusters it re-seeded.
	Restart   int
	Relocated int
	// SeedSeconds is the time spent seeding (k-means++, all restarts) and
	// LloydSeconds the time of the Lloyd runs (all restarts, the final exact
	// inertia included): what a benchmark reports separately.
	SeedSeconds, LloydSeconds float64
}

// NewMatrix copies rows into an F32 [len(rows), d] tensor. All rows must
// have the same length.
func NewMatrix(rows [][]float32) (*tensor.Tensor, error) {
	if len(rows) == 0 {
		return nil, fmt.Errorf("cluster: empty input: no rows")
	}
	d := len(rows[0])
	if d == 0 {
		return nil, fmt.Errorf("cluster: empty input: row 0 has no values")
	}
	t := tensor.New(tensor.F32, len(rows), d)
	v := t.F32()
	for i, r := range rows {
		if len(r) != d {
			return nil, fmt.Errorf("cluster: row %d has %d values, row 0 has %d", i, len(r), d)
		}
		copy(v[i*d:], r)
	}
	return t, nil
}

// check validates x, naming it what in errors.
func check(what string, x *tensor.Tensor) (*matrix.Matrix, error) {
	m, err := matrix.Check(what, x)
	if err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	return m, nil
}

// KMeans clusters the rows of x (F32 [N, d]; BF16 and F16 are widened) into
// o.K clusters.
//
// Seeding is scikit-learn's greedy k-means++: the first centre is a uniform
// random row; each next one is the best, by resulting inertia, of 2+ln(K)
// candidates drawn with probability proportional to the squared distance to
// the nearest centre so far (on a sample of rows when N is large, see
// SeedSample). Lloyd iterations then alternate an assignment step and an
// update step. The assignment computes ||c||^2 - 2 x.c for a block of rows
// against all centroids as one GEMM through the backend's MatMul (the
// constant ||x||^2 does not change the argmin), blocks sized so that no
// [N x K] matrix is held; ties go to the lowest cluster index. The update
// sums rows per cluster in float64. A cluster left empty is re-seeded as
// scikit-learn does: the empty clusters take, in order, the rows farthest
// from their own centroid (largest first), each such row being moved out of
// its old cluster's sum. Stopping follows scikit-learn exactly: after an
// iteration, stop if no assignment changed, else if the summed squared
// centroid shift is at most Tol times the mean feature variance; a run that
// stopped on the tolerance or MaxIter is re-assigned to its final
// centroids. The restart with the lowest inertia wins (the first on ties).
func KMeans(x *tensor.Tensor, o KMeansOptions) (*KMeansResult, error) {
	m, err := check("kmeans", x)
	if err != nil {
		return nil, err
	}
	return kmeansMatrix(m, o)
}

func kmeansMatrix(m *matrix.Matrix, o KMeansOptions) (*KMeansResult, error) {
	if o.K < 1 {
		return nil, fmt.Errorf("cluster: kmeans: K = %d; need at least 1 cluster", o.K)
	}
	if o.K > m.N {
		return nil, fmt.Errorf("cluster: kmeans: K = %d is more than the %d rows", o.K, m.N)
	}
	if o.NInit < 0 || o.MaxIter < 0 || o.Tol < 0 || math.IsNaN(o.Tol) {
		return nil, fmt.Errorf("cluster: kmeans: negative NInit, MaxIter or Tol (%d, %d, %v)", o.NInit, o.MaxIter, o.Tol)
	}
	if o.NInit == 0 {
		o.NInit = 1
	}
	if o.Backend == nil {
		o.Backend = tensor.NewCPU()
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	var init []float32
	if o.Init != nil {
		if o.NInit != 1 {
			return nil, fmt.Errorf("cluster: kmeans: NInit = %d with explicit initial centroids; use 1", o.NInit)
		}
		c, err := check("kmeans initial centroids", o.Init)
		if err != nil {
			return nil, err
		}
		if c.N != o.K || c.D != m.D {
			return nil, fmt.Errorf("cluster: kmeans: initial centroids are [%d %d], want [%d %d]", c.N, c.D, o.K, m.D)
		}
		init = slices.Clone(c.V)
	}
	if o.Spherical {
		var err error
		if m, err = m.Normalized("kmeans"); err != nil {
			return nil, fmt.Errorf("cluster: %w", err)
		}
		if init != nil {
			matrix.NormalizeRows(init, m.D)
		}
	}
	if o.MiniBatch != nil {
		return miniBatch(m, o, init)
	}
	if o.MaxIter == 0 {
		o.MaxIter = 300
	}
	tol := 0.0
	if o.Tol > 0 {
		tol = o.Tol * meanVariance(m)
	}
	var best *KMeansResult
	var seeding, lloyds time.Duration
	for r := 0; r < o.NInit; r++ {
		rng := matrix.NewRand(o.Seed, uint64(r))
		c := init
		t0 := time.Now()
		if c == nil {
			var err error
			if c, err = seedPlusPlus(m, o.K, seedSample(o, m.N), rng, o.Backend); err != nil {
				return nil, err
			}
		}
		t1 := time.Now()
		res, err := lloyd(m, c, o, tol, r)
		if err != nil {
			return nil, err
		}
		seeding, lloyds = seeding+t1.Sub(t0), lloyds+time.Since(t1)
		fmt.Fprintf(o.Progress, "kmeans: restart %d/%d: inertia %.6g after %d iterations\n", r+1, o.NInit, res.Inertia, res.Iterations)
		if best == nil || res.Inertia < best.Inertia {
			best = res
		}
	}
	best.SeedSeconds, best.LloydSeconds = seeding.Seconds(), lloyds.Seconds()
	return best, nil
}

func seedSample(o KMeansOptions, n int) int {
	s := o.SeedSample
	switch {
	case s < 0:
		return n
	case s == 0:
		s = max(10000, 50*o.K)
	}
	return min(max(s, o.K), n)
}

// meanVariance is the mean over features of the per-feature variance,
// scikit-learn's scale for the tolerance (two passes, float64).
func meanVariance(m *matrix.Matrix) float64 {
	mean := make([]float64, m.D)
	for i := 0; i < m.N; i++ {
		for j, x := range m.Row(i) {
			mean[j] += float64(x)
		}
	}
	for j := range mean {
		mean[j] /= float64(m.N)
	}
	var s float64
	for i := 0; i < m.N; i++ {
		for j, x := range m.Row(i) {
			e := float64(x) - mean[j]
			s += e * e
		}
	}
	return s / float64(m.N) / float64(m.D)
}

// sampleRows returns s distinct row indices of n in increasing order (all
// rows when s >= n), chosen uniformly by a partial Fisher-Yates shuffle.
func sampleRows(n, s int, rng *rand.Rand) []int {
	if s >= n {
		idx := make([]int, n)
		for i := range idx {
			idx[i] = i
		}
		return idx
	}
	// Floyd's algorithm: s draws, no O(n) permutation.
	chosen := make(map[int]bool, s)
	idx := make([]int, 0, s)
	for j := n - s; j < n; j++ {
		t := rng.IntN(j + 1)
		if chosen[t] {
			t = j
		}
		chosen[t] = true
		idx = append(idx, t)
	}
	slices.Sort(idx)
	return idx
}

// seedPlusPlus is scikit-learn's greedy k-means++ (_kmeans_plusplus), run on
// a sample of sample rows of m, and returns K centroids ([K*d] row-major).
func seedPlusPlus(m *matrix.Matrix, k, sample int, rng *rand.Rand, b tensor.Backend) ([]float32, error) {
	xs := m
	if sample < m.N {
		xs = m.Gather(sampleRows(m.N, sample, rng))
	}
	n, d := xs.N, xs.D
	trials := 2 + int(math.Log(float64(k)))
	xnorm := make([]float64, n)
	for i := range xnorm {
		xnorm[i] = matrix.Norm2(xs.Row(i))
	}
	centers := make([]float32, k*d)
	first := rng.IntN(n)
	copy(centers, xs.Row(first))

	closest := make([]float64, n)
	if err := sqDistances(b, xs.Row(first), 1, xs, xnorm, func(_ int, dist []float64) { copy(closest, dist) }); err != nil {
		return nil, err
	}
	pot := matrix.Sum64(closest)
	cum := make([]float64, n)
	cand := make([]int, trials)
	candRows := make([]float32, trials*d)
	candDist := make([][]float64, trials)
	for t := range candDist {
		candDist[t] = make([]float64, n)
	}
	candPot := make([]float64, trials)
	for c := 1; c < k; c++ {
		var s float64
		for i, v := range closest {
			s += v
			cum[i] = s
		}
		for t := range cand {
			r := rng.Float64() * pot
			i, _ := slices.BinarySearch(cum, r) // numpy.searchsorted, side left
			cand[t] = min(i, n-1)
			copy(candRows[t*d:], xs.Row(cand[t]))
		}
		err := sqDistances(b, candRows, trials, xs, xnorm, func(t int, dist []float64) {
			var p float64
			for i, v := range dist {
				v = min(v, closest[i])
				candDist[t][i] = v
				p += v
			}
			candPot[t] = p
		})
		if err != nil {
			return nil, err
		}
		bestT := 0
		for t := 1; t < trials; t++ {
			if candPot[t] < candPot[bestT] {
				bestT = t
			}
		}
		pot = candPot[bestT]
		copy(closest, candDist[bestT])
		copy(centers[c*d:], xs.Row(cand[bestT]))
	}
	return centers, nil
}

// sqDistances computes the squared distances of the rows of a ([rows*d]
// row-major) to every row of xs, as ||a||^2 - 2 a.x + ||x||^2 with the
// products from one GEMM, clamped at 0, and passes row r's distances to fn.
func sqDistances(b tensor.Backend, a []float32, rows int, xs *matrix.Matrix, xnorm []float64, fn func(r int, dist []float64)) error {
	at, err := tensor.FromF32(a, rows, xs.D)
	if err != nil {
		return err
	}
	out := tensor.New(tensor.F32, rows, xs.N)
	if err := matrix.MatMulHost(b, out, at, xs.T, -2); err != nil {
		return err
	}
	prod := out.F32()
	dist := make([]float64, xs.N)
	for r := 0; r < rows; r++ {
		an := matrix.Norm2(a[r*xs.D : (r+1)*xs.D])
		for i := range dist {
			dist[i] = max(0, an+float64(prod[r*xs.N+i])+xnorm[i])
		}
		fn(r, dist)
	}
	return nil
}
