package cluster

import (
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"

	"github.com/compassml/compass/sampling/internal/matrix"
	"github.com/compassml/compass/tensor"
)

// SilhouetteOptions configure Silhouette.
type SilhouetteOptions struct {
	// Cosine measures distance as 1 - cos(x, y) instead of the euclidean
	// distance ||x - y||; use it with spherical k-means.
	Cosine bool
	// SampleSize computes the silhouette on a uniform sample of this many
	// rows (without replacement) when N is larger, as scikit-learn's
	// silhouette_score(sample_size=...) does: distances are then among the
	// sampled rows only. 0 means 10000; negative means always exact. The
	// exact score takes N^2 distances.
	SampleSize int
	// Seed chooses the sample.
	Seed uint64
	// Backend computes the distance GEMMs; nil means the CPU backend.
	Backend tensor.Backend
}

// Silhouette returns the mean silhouette coefficient of a clustering of the
// rows of x: for row i with a(i) its mean distance to the other rows of its
// cluster and b(i) the smallest mean distance to the rows of another
// cluster, s(i) = (b - a) / max(a, b), and 0 for a row alone in its cluster
// (scikit-learn's definition). It needs at least 2 clusters and fewer
// clusters than rows, among the sampled rows.
func Silhouette(x *tensor.Tensor, labels []int32, o SilhouetteOptions) (float64, error) {
	m, err := check("silhouette", x)
	if err != nil {
		return 0, err
	}
	return silhouette(m, labels, o)
}

func silhouette(m *matrix.Matrix, labels []int32, o SilhouetteOptions) (float64, error) {
	if len(labels) != m.N {
		return 0, fmt.Errorf("cluster: silhouette: %d labels for %d rows", len(labels), m.N)
	}
	for i, l := range labels {
		if l < 0 {
			return 0, fmt.Errorf("cluster: silhouette: row %d has negative label %d", i, l)
		}
	}
	if o.Backend == nil {
		o.Backend = tensor.NewCPU()
	}
	size := o.SampleSize
	switch {
	case size == 0:
		size = 10000
	case size < 0:
		size = m.N
	}
	rows := sampleRows(m.N, size, matrix.NewRand(o.Seed, 1))
	// Compact the labels of the sample to 0..L-1, and order the sampled rows
	// by cluster, so that each row's distances to a cluster are one
	// contiguous run of the distance block (summed without a scatter).
	ids := map[int32]int{}
	for _, r := range rows {
		if _, ok := ids[labels[r]]; !ok {
			ids[labels[r]] = len(ids)
		}
	}
	nl := len(ids)
	if nl < 2 || nl > len(rows)-1 {
		return 0, fmt.Errorf("cluster: silhouette: %d clusters among %d rows; need 2 to %d", nl, len(rows), len(rows)-1)
	}
	sizes := make([]int, nl)
	for _, r := range rows {
		sizes[ids[labels[r]]]++
	}
	starts := make([]int, nl+1)
	for c := range nl {
		starts[c+1] = starts[c] + sizes[c]
	}
	sorted, ls := make([]int, len(rows)), make([]int, len(rows))
	fill := append([]int(nil), starts[:nl]...)
	for _, r := range rows {
		c := ids[labels[r]]
		sorted[fill[c]], ls[fill[c]] = r, c
		fill[c]++
	}
	xs := m.Gather(sorted)

	// Distances come from one GEMM per block of rows: cosine on unit rows,
	// euclidean on rows centred on their mean, which keeps the float32
	// cancellation in ||a||^2 + ||b||^2 - 2 a.b small.
	if o.Cosine {
		matrix.NormalizeRows(xs.V, xs.D)
	} else {
		centre(xs)
	}
	norms := make([]float32, xs.N)
	for i := range norms {
		norms[i] = float32(matrix.Norm2(xs.Row(i)))
	}
	block := max(1, min(xs.N, matrix.BlockBytes/4/xs.N))
	out := tensor.New(tensor.F32, block, xs.N)
	scores := make([]float64, xs.N)
	for lo := 0; lo < xs.N; lo += block {
		hi := min(lo+block, xs.N)
		xb, err := xs.T.Slice(lo, hi)
		if err != nil {
			return 0, err
		}
		ob, err := out.Slice(0, hi-lo)
		if err != nil {
			return 0, err
		}
		if err := matrix.MatMulHost(o.Backend, ob, xb, xs.T, 1); err != nil {
			return 0, fmt.Errorf("cluster: silhouette distances: %w", err)
		}
		dots := ob.F32()
		matrix.ParallelChunks(hi-lo, matrix.Workers(hi-lo), func(_, r0, r1 int) {
			acc := make([]float64, nl)
			for r := r0; r < r1; r++ {
				i := lo + r
				row := dots[r*xs.N : (r+1)*xs.N]
				for c := range nl {
					seg := row[starts[c]:starts[c+1]]
					if o.Cosine {
						acc[c] = cosineSum(seg)
					} else {
						acc[c] = euclideanSum(seg, norms[starts[c]:starts[c+1]], norms[i])
					}
				}
				// The row's distance to itself is in its own cluster's sum:
				// take it out as it was computed (about 0).
				if o.Cosine {
					acc[ls[i]] -= cosineSum(row[i : i+1])
				} else {
					acc[ls[i]] -= euclideanSum(row[i:i+1], norms[i:i+1], norms[i])
				}
				scores[i] = silhouetteOf(acc, sizes, ls[i])
			}
		})
	}
	return matrix.Sum64(scores) / float64(xs.N), nil
}

// euclideanSum returns the sum of sqrt(ni + norms[j] - 2 dots[j]) over j
// (negative differences, rounding noise, count as 0): the distance math
// in float32, the sum in float64 over short float32 partial sums.
func euclideanSum(dots, norms []float32, ni float32) float64 {
	total := 0.0
	for len(dots) > 0 {
		n := min(len(dots), 256)
		var part float32
		for j, p := range dots[:n] {
			part += float32(math.Sqrt(float64(max(0, ni+norms[j]-2*p))))
		}
		total += float64(part)
		dots, norms = dots[n:], norms[n:]
	}
	return total
}

// cosineSum returns the sum of max(0, 1 - dots[j]).
func cosineSum(dots []float32) float64 {
	total := 0.0
	for len(dots) > 0 {
		n := min(len(dots), 256)
		var part float32
		for _, p := range dots[:n] {
			part += max(0, 1-p)
		}
		total += float64(part)
		dots = dots[n:]
	}
	return total
}

// silhouetteOf is s(i) from the summed distances of row i to each cluster.
func silhouetteOf(acc []float64, sizes []int, own int) float64 {
	if sizes[own] < 2 {
		return 0
	}
	a := acc[own] / float64(sizes[own]-1)
	b := math.Inf(1)
	for c, s := range acc {
		if c != own && sizes[c] > 0 {
			b = min(b, s/float64(sizes[c]))
		}
	}
	if den := max(a, b); den > 0 {
		return (b - a) / den
	}
	return 0
}

// centre subtracts the column means from the rows of m.
func centre(m *matrix.Matrix) {
	mean := make([]float64, m.D)
	for i := 0; i < m.N; i++ {
		for j, v := range m.Row(i) {
			mean[j] += float64(v)
		}
	}
	for i := 0; i < m.N; i++ {
		r := m.Row(i)
		for j := range r {
			r[j] = float32(float64(r[j]) - mean[j]/float64(m.N))
		}
	}
}

// KScore is the outcome of one K tried by ChooseK.
type KScore struct {
	K          int     `json:"k"`
	Silhouette float64 `json:"silhouette"`
	Inertia    float64 `json:"inertia"`
}

// MaxKRange is the most values of K a range may list: each is a k-means
// run and a silhouette, so a range beyond it is a typo (2:1000000), not
// a search anyone means to run.
const MaxKRange = 1000

// KRangeError is the error of KRange and ParseKRange. Range is the range
// as given (the text, for ParseKRange) and Reason what is wrong with it, so
// that a command can name its flag without repeating the package's words.
type KRangeError struct {
	Range  string
	Reason string
}

func (e *KRangeError) Error() string { return "cluster: K range " + e.Range + ": " + e.Reason }

// KRange lists lo, lo+step, ... up to hi inclusive.
func KRange(lo, hi, step int) ([]int, error) {
	given := fmt.Sprintf("%d:%d:%d", lo, hi, step)
	if lo < 2 || hi < lo || step < 1 {
		return nil, &KRangeError{given, "need 2 <= LO <= HI and STEP >= 1"}
	}
	// Counted, not stepped through: lo + i*step <= hi never overflows,
	// where k += step past hi near the largest int would.
	n := (hi-lo)/step + 1
	if n > MaxKRange {
		return nil, &KRangeError{given, fmt.Sprintf("%d values of K, more than the %d a range may list", n, MaxKRange)}
	}
	ks := make([]int, n)
	for i := range ks {
		ks[i] = lo + i*step
	}
	return ks, nil
}

// ParseKRange reads "LO:HI" or "LO:HI:STEP" (STEP 10 when left out) and
// returns KRange(LO, HI, STEP).
func ParseKRange(s string) ([]int, error) {
	parts := strings.Split(s, ":")
	if len(parts) < 2 || len(parts) > 3 {
		return nil, &KRangeError{strconv.Quote(s), "want LO:HI or LO:HI:STEP"}
	}
	v := []int{0, 0, 10}
	for i, p := range parts {
		n, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil {
			return nil, &KRangeError{strconv.Quote(s), strconv.Quote(p) + " is not a number"}
		}
		v[i] = n
	}
	ks, err := KRange(v[0], v[1], v[2])
	if e, ok := err.(*KRangeError); ok {
		e.Range = strconv.Quote(s)
	}
	return ks, err
}

// ChooseK runs KMeans for every K in ks (o.K is ignored) and keeps the
// clustering with the highest silhouette (the smallest K on ties). Every K
// is scored on the same sample of rows (so.Seed). It returns the kept
// clustering and the score of every K, in the order of ks.
func ChooseK(x *tensor.Tensor, ks []int, o KMeansOptions, so SilhouetteOptions) (*KMeansResult, []KScore, error) {
	m, err := check("choose K", x)
	if err != nil {
		return nil, nil, err
	}
	return chooseK(m, ks, o, so)
}

func chooseK(m *matrix.Matrix, ks []int, o KMeansOptions, so SilhouetteOptions) (*KMeansResult, []KScore, error) {
	if len(ks) == 0 {
		return nil, nil, fmt.Errorf("cluster: choose K: no K to try")
	}
	if o.Spherical {
		var err error
		if m, err = m.Normalized("choose K"); err != nil {
			return nil, nil, fmt.Errorf("cluster: %w", err)
		}
	}
	progress := o.Progress
	if progress == nil {
		progress = io.Discard
	}
	var best *KMeansResult
	bestScore := math.Inf(-1)
	var scores []KScore
	for _, k := range ks {
		o.K = k
		res, err := kmeansMatrix(m, o)
		if err != nil {
			return nil, nil, err
		}
		s, err := silhouette(m, res.Labels, so)
		if err != nil {
			return nil, nil, fmt.Errorf("with %d clusters: %w", k, err)
		}
		fmt.Fprintf(progress, "kmeans: K = %d: silhouette %.4f, inertia %.6g\n", k, s, res.Inertia)
		scores = append(scores, KScore{K: k, Silhouette: s, Inertia: res.Inertia})
		if s > bestScore {
			best, bestScore = res, s
		}
	}
	return best, scores, nil
}
