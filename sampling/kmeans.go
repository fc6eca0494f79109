package sampling

import (
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"
	"time"

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
		return nil, fmt.Errorf("sampling: empty input: no rows")
	}
	d := len(rows[0])
	if d == 0 {
		return nil, fmt.Errorf("sampling: empty input: row 0 has no values")
	}
	t := tensor.New(tensor.F32, len(rows), d)
	v := t.F32()
	for i, r := range rows {
		if len(r) != d {
			return nil, fmt.Errorf("sampling: row %d has %d values, row 0 has %d", i, len(r), d)
		}
		copy(v[i*d:], r)
	}
	return t, nil
}

// matrix is validated input: a host F32 [n, d] tensor of finite values.
type matrix struct {
	t    *tensor.Tensor
	v    []float32
	n, d int
}

// checkMatrix validates x and returns it as F32 (BF16 and F16 are widened
// into a copy). what names the input in errors.
func checkMatrix(what string, x *tensor.Tensor) (*matrix, error) {
	if x == nil {
		return nil, fmt.Errorf("sampling: %s: empty input: no tensor", what)
	}
	if !x.OnHost() {
		return nil, fmt.Errorf("sampling: %s: %v is on a device; pass host memory", what, x)
	}
	if x.Rank() != 2 {
		return nil, fmt.Errorf("sampling: %s: want a [rows, dim] matrix, got %v", what, x)
	}
	n, d := x.Dim(0), x.Dim(1)
	if n == 0 {
		return nil, fmt.Errorf("sampling: %s: empty input: %v has no rows", what, x)
	}
	if d == 0 {
		return nil, fmt.Errorf("sampling: %s: empty input: %v has no columns", what, x)
	}
	switch x.DType() {
	case tensor.F32:
	case tensor.BF16, tensor.F16:
		f := tensor.New(tensor.F32, n, d)
		if err := tensor.NewCPU().Copy(f, x); err != nil {
			return nil, fmt.Errorf("sampling: %s: %w", what, err)
		}
		x = f
	default:
		return nil, fmt.Errorf("sampling: %s: %v is not a floating-point tensor", what, x)
	}
	m := &matrix{t: x, v: x.F32(), n: n, d: d}
	if bad := firstNonFinite(m); bad >= 0 {
		row, col := bad/d, bad%d
		return nil, fmt.Errorf("sampling: %s: row %d, column %d is %v (NaN or Inf are not allowed)", what, row, col, m.v[bad])
	}
	return m, nil
}

// firstNonFinite returns the index of the first NaN or Inf value, or -1.
func firstNonFinite(m *matrix) int {
	found := make([]int, workers(m.n))
	parallelChunks(m.n, len(found), func(w, lo, hi int) {
		found[w] = -1
		for i, x := range m.v[lo*m.d : hi*m.d] {
			if x-x != 0 { // NaN - NaN and Inf - Inf are NaN; finite x - x is 0
				found[w] = lo*m.d + i
				return
			}
		}
	})
	for _, f := range found {
		if f >= 0 {
			return f // chunks are in row order, so the first hit is the lowest
		}
	}
	return -1
}

// row returns row i.
func (m *matrix) row(i int) []float32 { return m.v[i*m.d : (i+1)*m.d] }

// normalized returns m with unit rows for spherical k-means: m itself when
// every row already has norm 1 (within 1e-3), else a normalised copy. A zero
// row has no direction and is an error naming it.
func (m *matrix) normalized(what string) (*matrix, error) {
	unit := true
	for i := 0; i < m.n; i++ {
		s := norm2(m.row(i))
		if s == 0 {
			return nil, fmt.Errorf("sampling: %s: row %d is all zeros and has no direction for spherical k-means", what, i)
		}
		if math.Abs(math.Sqrt(s)-1) > 1e-3 {
			unit = false
		}
	}
	if unit {
		return m, nil
	}
	t := tensor.New(tensor.F32, m.n, m.d)
	c := &matrix{t: t, v: t.F32(), n: m.n, d: m.d}
	parallelChunks(m.n, workers(m.n), func(_, lo, hi int) {
		for i := lo; i < hi; i++ {
			src, dst := m.row(i), c.row(i)
			inv := 1 / math.Sqrt(norm2(src))
			for j, x := range src {
				dst[j] = float32(float64(x) * inv)
			}
		}
	})
	return c, nil
}

func norm2(x []float32) float64 {
	var s float64
	for _, v := range x {
		s += float64(v) * float64(v)
	}
	return s
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
	m, err := checkMatrix("kmeans", x)
	if err != nil {
		return nil, err
	}
	return kmeansMatrix(m, o)
}

func kmeansMatrix(m *matrix, o KMeansOptions) (*KMeansResult, error) {
	if o.K < 1 {
		return nil, fmt.Errorf("sampling: kmeans: K = %d; need at least 1 cluster", o.K)
	}
	if o.K > m.n {
		return nil, fmt.Errorf("sampling: kmeans: K = %d is more than the %d rows", o.K, m.n)
	}
	if o.NInit < 0 || o.MaxIter < 0 || o.Tol < 0 || math.IsNaN(o.Tol) {
		return nil, fmt.Errorf("sampling: kmeans: negative NInit, MaxIter or Tol (%d, %d, %v)", o.NInit, o.MaxIter, o.Tol)
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
			return nil, fmt.Errorf("sampling: kmeans: NInit = %d with explicit initial centroids; use 1", o.NInit)
		}
		c, err := checkMatrix("kmeans initial centroids", o.Init)
		if err != nil {
			return nil, err
		}
		if c.n != o.K || c.d != m.d {
			return nil, fmt.Errorf("sampling: kmeans: initial centroids are [%d %d], want [%d %d]", c.n, c.d, o.K, m.d)
		}
		init = slices.Clone(c.v)
	}
	if o.Spherical {
		var err error
		if m, err = m.normalized("kmeans"); err != nil {
			return nil, err
		}
		if init != nil {
			normalizeRows(init, m.d)
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
		rng := newRand(o.Seed, uint64(r))
		c := init
		t0 := time.Now()
		if c == nil {
			var err error
			if c, err = seedPlusPlus(m, o.K, seedSample(o, m.n), rng, o.Backend); err != nil {
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

// newRand is the random source of restart (or stream) r of a seed.
func newRand(seed, r uint64) *rand.Rand {
	return rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15^r))
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
func meanVariance(m *matrix) float64 {
	mean := make([]float64, m.d)
	for i := 0; i < m.n; i++ {
		for j, x := range m.row(i) {
			mean[j] += float64(x)
		}
	}
	for j := range mean {
		mean[j] /= float64(m.n)
	}
	var s float64
	for i := 0; i < m.n; i++ {
		for j, x := range m.row(i) {
			e := float64(x) - mean[j]
			s += e * e
		}
	}
	return s / float64(m.n) / float64(m.d)
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

// gather copies the given rows of m into a new matrix.
func (m *matrix) gather(rows []int) *matrix {
	t := tensor.New(tensor.F32, len(rows), m.d)
	g := &matrix{t: t, v: t.F32(), n: len(rows), d: m.d}
	for i, r := range rows {
		copy(g.row(i), m.row(r))
	}
	return g
}

// seedPlusPlus is scikit-learn's greedy k-means++ (_kmeans_plusplus), run on
// a sample of sample rows of m, and returns K centroids ([K*d] row-major).
func seedPlusPlus(m *matrix, k, sample int, rng *rand.Rand, b tensor.Backend) ([]float32, error) {
	xs := m
	if sample < m.n {
		xs = m.gather(sampleRows(m.n, sample, rng))
	}
	n, d := xs.n, xs.d
	trials := 2 + int(math.Log(float64(k)))
	xnorm := make([]float64, n)
	for i := range xnorm {
		xnorm[i] = norm2(xs.row(i))
	}
	centers := make([]float32, k*d)
	first := rng.IntN(n)
	copy(centers, xs.row(first))

	closest := make([]float64, n)
	if err := sqDistances(b, xs.row(first), 1, xs, xnorm, func(_ int, dist []float64) { copy(closest, dist) }); err != nil {
		return nil, err
	}
	pot := sum64(closest)
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
			copy(candRows[t*d:], xs.row(cand[t]))
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
		copy(centers[c*d:], xs.row(cand[bestT]))
	}
	return centers, nil
}

// sqDistances computes the squared distances of the rows of a ([rows*d]
// row-major) to every row of xs, as ||a||^2 - 2 a.x + ||x||^2 with the
// products from one GEMM, clamped at 0, and passes row r's distances to fn.
func sqDistances(b tensor.Backend, a []float32, rows int, xs *matrix, xnorm []float64, fn func(r int, dist []float64)) error {
	at, err := tensor.FromF32(a, rows, xs.d)
	if err != nil {
		return err
	}
	out := tensor.New(tensor.F32, rows, xs.n)
	if err := matmulHost(b, out, at, xs.t, -2); err != nil {
		return err
	}
	prod := out.F32()
	dist := make([]float64, xs.n)
	for r := 0; r < rows; r++ {
		an := norm2(a[r*xs.d : (r+1)*xs.d])
		for i := range dist {
			dist[i] = max(0, an+float64(prod[r*xs.n+i])+xnorm[i])
		}
		fn(r, dist)
	}
	return nil
}

// matmulHost sets out = alpha a b^T for host tensors through the backend,
// moving operands to the device and the result back where the backend is
// not the CPU.
func matmulHost(b tensor.Backend, out, a, bt *tensor.Tensor, alpha float32) error {
	da, err := b.ToDevice(a)
	if err != nil {
		return err
	}
	db, err := b.ToDevice(bt)
	if err != nil {
		return err
	}
	dout := out
	if !out.OnHost() || b.Name() != "cpu" {
		if dout, err = b.Alloc(tensor.F32, out.Shape()...); err != nil {
			return err
		}
		defer b.Free(dout)
	}
	if err := b.MatMul(dout, da, db, false, true, alpha, 0); err != nil {
		return err
	}
	if dout != out {
		h, err := b.ToHost(dout)
		if err != nil {
			return err
		}
		copy(out.F32(), h.F32())
	}
	if da != a {
		b.Free(da)
	}
	if db != bt {
		b.Free(db)
	}
	return nil
}

func sum64(x []float64) float64 {
	var s float64
	for _, v := range x {
		s += v
	}
	return s
}

// workers is how many goroutines to use for n independent items.
func workers(n int) int { return max(1, min(n, runtime.GOMAXPROCS(0))) }

// parallelChunks splits [0, n) into parts contiguous chunks (in order) and
// runs fn(part, lo, hi) for each on its own goroutine.
func parallelChunks(n, parts int, fn func(part, lo, hi int)) {
	if parts <= 1 || n < 2 {
		fn(0, 0, n)
		return
	}
	var wg sync.WaitGroup
	for p := 0; p < parts; p++ {
		lo, hi := p*n/parts, (p+1)*n/parts
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn(p, lo, hi)
		}()
	}
	wg.Wait()
}

// parallelTasks runs fn(0..n-1) on up to GOMAXPROCS goroutines.
func parallelTasks(n int, fn func(i int)) {
	w := workers(n)
	if w <= 1 {
		for i := 0; i < n; i++ {
			fn(i)
		}
		return
	}
	next := make(chan int, n)
	for i := 0; i < n; i++ {
		next <- i
	}
	close(next)
	var wg sync.WaitGroup
	for range w {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				fn(i)
			}
		}()
	}
	wg.Wait()
}
