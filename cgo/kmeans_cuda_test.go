//go:build cuda

package cgo

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/compassml/compass/kernels"
	"github.com/compassml/compass/sampling/cluster"
	"github.com/compassml/compass/tensor"
)

// sqDistances is the float64 brute force of the assignment: the squared
// distance from point i to every centroid.
func sqDistances(x, c []float32, i, K, D int) []float64 {
	d := make([]float64, K)
	for k := range d {
		for j := 0; j < D; j++ {
			diff := float64(x[i*D+j]) - float64(c[k*D+j])
			d[k] += diff * diff
		}
	}
	return d
}

// sqNorm is the float64 squared norm of row i of v [_, D].
func sqNorm(v []float32, i, D int) float64 {
	n := 0.0
	for _, e := range v[i*D : (i+1)*D] {
		n += float64(e) * float64(e)
	}
	return n
}

// absDot is sum_j |x_ij c_kj| in float64, the scale of the rounding of x.c.
func absDot(x, c []float32, i, k, D int) float64 {
	s := 0.0
	for j := 0; j < D; j++ {
		s += math.Abs(float64(x[i*D+j]) * float64(c[k*D+j]))
	}
	return s
}

// poisonedI32 is an I32 device tensor of -1 (what a kernel that writes
// nothing leaves).
func poisonedI32(tb testing.TB, b *Backend, n int) *tensor.Tensor {
	h := tensor.New(tensor.I32, n)
	for i := range h.I32() {
		h.I32()[i] = -1
	}
	return toDev(tb, b, h)
}

// TestGPUKMeansAssign checks KMeansAssign (the tensor-core kernels) and
// the float32 kernel it is measured against, kmeans_assign, against a
// float64 brute force: points, centroids and dimensions that fill no tile
// (32 for the float32 kernel, 128 x 128 x 32 for the tensor-core one),
// more of each than one tile holds, whole tiles, one point, one centroid,
// bf16 points used in place (D a multiple of 32) or copied (not), f16 and
// f32 points split in two; a centroid duplicated at a higher index must
// never be chosen (ties go to the lowest index). The expansion ||x||^2 -
// 2 x.c + ||c||^2 can swap two centroids whose distances differ by its
// rounding, so the assigned centroid must be within that rounding of the
// nearest, and dist within it of the assigned centroid's distance: a few
// float32 ulps of the terms for kmeans_assign, and for the tensor cores
// the split's error besides, 2 * 3 * 2^-16 * sum |x_j c_j| (kmeans.cu).
func TestGPUKMeansAssign(t *testing.T) {
	b := gpuBackend(t)
	rng := newRNG(t)
	for _, c := range []struct {
		N, K, D int
		dt      tensor.DType
	}{
		{45, 13, 20, tensor.F32}, {70, 40, 70, tensor.F32}, {33, 9, 24, tensor.BF16}, {64, 32, 32, tensor.F16},
		{1, 5, 3, tensor.F32}, {10, 1, 8, tensor.F32},
		{300, 200, 70, tensor.F32}, {260, 130, 64, tensor.BF16}, {129, 257, 40, tensor.BF16}, {150, 140, 33, tensor.F16},
	} {
		x := input(t, b, rng, c.dt, c.N, c.D)
		xv := x.h.ToF32()
		ch := randHost(rng, tensor.F32, 1, c.K, c.D)
		cv := ch.F32()
		dup := -1
		if c.K >= 3 {
			// Centroids 1 and K-1 are both point 0, which has then two
			// nearest centroids at exactly the same float32 distance.
			copy(cv[c.D:2*c.D], xv[:c.D])
			copy(cv[(c.K-1)*c.D:], cv[c.D:2*c.D])
			dup = c.K - 1
		}
		cd := toDev(t, b, ch)
		for _, k := range []struct {
			name   string
			assign func(assign, dist, x, c *tensor.Tensor) error
			split  float64 // the products' relative error besides float32's
		}{
			{"tensor cores", b.KMeansAssign, 6 * math.Pow(2, -16)},
			{"float32", b.kmeansAssignF32, 0},
		} {
			name := fmt.Sprintf("kmeans assign (%s) N %d K %d D %d %s", k.name, c.N, c.K, c.D, c.dt)
			assign, dist := poisonedI32(t, b, c.N), output(t, b, tensor.F32, c.N).d
			must(t, k.assign(assign, dist, x.d, cd))
			av, dv := hostOf(t, b, assign).I32(), hostOf(t, b, dist).F32()
			worst := 0.0 // the largest dist deviation, as a share of its slack
			for i := 0; i < c.N; i++ {
				d := sqDistances(xv, cv, i, c.K, c.D)
				best := 0
				for k := range d {
					if d[k] < d[best] {
						best = k
					}
				}
				a := int(av[i])
				if a < 0 || a >= c.K {
					t.Fatalf("%s: point %d assigned to %d", name, i, a)
				}
				// The rounding of the expansion: a few float32 ulps of its
				// terms, and the split's error in the products of the two
				// centroids compared.
				slack := 1e-5 * (sqNorm(xv, i, c.D) + max(sqNorm(cv, a, c.D), sqNorm(cv, best, c.D)))
				slack += k.split * max(absDot(xv, cv, i, a, c.D), absDot(xv, cv, i, best, c.D))
				if d[a] > d[best]+slack {
					t.Errorf("%s: point %d assigned to %d at %g, nearest is %d at %g", name, i, a, d[a], best, d[best])
				}
				if a == dup || (i == 0 && dup > 0 && a != 1) {
					t.Errorf("%s: point %d assigned to centroid %d; centroid %d is centroid 1 again and ties go to 1", name, i, a, dup)
				}
				if math.Abs(float64(dv[i])-d[a]) > slack {
					t.Errorf("%s: point %d: dist %g, want %g", name, i, dv[i], d[a])
				}
				worst = max(worst, math.Abs(float64(dv[i])-d[a])/slack)
			}
			t.Logf("%s: dist off by at most %.2f of its slack", name, worst)
		}
	}

	x, c := input(t, b, rng, tensor.F32, 4, 3).d, input(t, b, rng, tensor.F32, 2, 3).d
	assign, dist := poisonedI32(t, b, 4), output(t, b, tensor.F32, 4).d
	for name, err := range map[string]error{
		"bf16 centroids":     b.KMeansAssign(assign, dist, x, input(t, b, rng, tensor.BF16, 2, 3).d),
		"centroid dims":      b.KMeansAssign(assign, dist, x, input(t, b, rng, tensor.F32, 2, 4).d),
		"no centroids":       b.KMeansAssign(assign, dist, x, output(t, b, tensor.F32, 0, 3).d),
		"assign too short":   b.KMeansAssign(poisonedI32(t, b, 3), dist, x, c),
		"assign f32":         b.KMeansAssign(dist, dist, x, c),
		"dist bf16":          b.KMeansAssign(assign, output(t, b, tensor.BF16, 4).d, x, c),
		"host points":        b.KMeansAssign(assign, dist, tensor.New(tensor.F32, 4, 3), c),
		"points of rank one": b.KMeansAssign(assign, dist, input(t, b, rng, tensor.F32, 12).d, c),
	} {
		if err == nil {
			t.Errorf("%s: no error", name)
		} else if !strings.HasPrefix(err.Error(), "cuda: kmeans assign: ") {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// TestGPUKMeansAssigner checks the prepared assignment of the clustering's
// loop: on points prepared once (f32 and f16 split, bf16 used in place or
// copied), every call with new centroids gives KMeansAssign's assignments
// and distances bit for bit, and a later change to x is not seen (the
// parts were taken when prepared; f32 points only, whose parts are
// copies). Centroids of other dimensions are refused.
func TestGPUKMeansAssigner(t *testing.T) {
	b := gpuBackend(t)
	rng := newRNG(t)
	for _, c := range []struct {
		N, K, D int
		dt      tensor.DType
	}{{150, 40, 70, tensor.F32}, {64, 9, 32, tensor.BF16}, {33, 20, 24, tensor.BF16}, {40, 7, 33, tensor.F16}} {
		name := fmt.Sprintf("kmeans assigner N %d K %d D %d %s", c.N, c.K, c.D, c.dt)
		x := input(t, b, rng, c.dt, c.N, c.D)
		assign, free, err := b.KMeansAssigner(x.d)
		must(t, err)
		for round := range 3 {
			cent := input(t, b, rng, tensor.F32, c.K, c.D).d
			got, gotDist := poisonedI32(t, b, c.N), output(t, b, tensor.F32, c.N).d
			want, wantDist := poisonedI32(t, b, c.N), output(t, b, tensor.F32, c.N).d
			must(t, assign(got, gotDist, cent))
			must(t, b.KMeansAssign(want, wantDist, x.d, cent))
			if !slices.Equal(hostOf(t, b, got).I32(), hostOf(t, b, want).I32()) {
				t.Errorf("%s, round %d: assignments differ from KMeansAssign's", name, round)
			}
			if !slices.Equal(hostOf(t, b, gotDist).F32(), hostOf(t, b, wantDist).F32()) {
				t.Errorf("%s, round %d: distances differ from KMeansAssign's", name, round)
			}
		}
		if c.dt == tensor.F32 {
			cent := input(t, b, rng, tensor.F32, c.K, c.D).d
			before, d := poisonedI32(t, b, c.N), output(t, b, tensor.F32, c.N).d
			must(t, assign(before, d, cent))
			must(t, b.Zero(x.d))
			after := poisonedI32(t, b, c.N)
			must(t, assign(after, d, cent))
			if !slices.Equal(hostOf(t, b, before).I32(), hostOf(t, b, after).I32()) {
				t.Errorf("%s: the assignment changed with x after it was prepared", name)
			}
		}
		err = assign(poisonedI32(t, b, c.N), output(t, b, tensor.F32, c.N).d, input(t, b, rng, tensor.F32, c.K, c.D+1).d)
		if err == nil || !strings.HasPrefix(err.Error(), "cuda: kmeans assign: ") {
			t.Errorf("%s: centroids of %d dimensions: %v", name, c.D+1, err)
		}
		free()
	}
	if _, _, err := b.KMeansAssigner(tensor.New(tensor.F32, 4, 3)); err == nil {
		t.Error("host points: no error")
	}
}

// TestGPUKMeansUpdate checks KMeansUpdate against float64 sums: every
// centroid with points becomes their mean (1e-6 of its scale), and bit for
// bit the float32 sum the kernel defines (each cluster's points in index
// order, four partial sums by position mod 4), which only a stable sort
// of the points by cluster gives; an empty centroid keeps its value bit
// for bit and reports count 0; dimensions and counts that fill no block,
// bf16 points, one point, more points than one chunk of the counting sort
// holds. An assignment outside [0, K) is an error that changes nothing.
func TestGPUKMeansUpdate(t *testing.T) {
	b := gpuBackend(t)
	rng := newRNG(t)
	for _, c := range []struct {
		N, K, D int
		dt      tensor.DType
	}{
		{50, 7, 19, tensor.F32}, {20, 4, 33, tensor.BF16}, {1, 2, 5, tensor.F32}, {300, 37, 40, tensor.F32},
		{kernels.KMeansSortChunk + 808, 37, 130, tensor.F32},
	} {
		name := fmt.Sprintf("kmeans update N %d K %d D %d %s", c.N, c.K, c.D, c.dt)
		x := input(t, b, rng, c.dt, c.N, c.D)
		cent := input(t, b, rng, tensor.F32, c.K, c.D)
		empty := c.K - 1 // nobody is assigned here
		assign := make([]int32, c.N)
		for i := range assign {
			assign[i] = int32(rng.IntN(c.K - 1))
		}
		ah, err := tensor.FromI32(assign, c.N)
		must(t, err)
		counts := poisonedI32(t, b, c.K)
		must(t, b.KMeansUpdate(cent.d, counts, x.d, toDev(t, b, ah)))

		xv, cv := x.h.ToF32(), cent.h.F32()
		sums := make([]float64, c.K*c.D)
		wantCounts := make([]int32, c.K)
		for i, a := range assign {
			wantCounts[a]++
			for j := 0; j < c.D; j++ {
				sums[int(a)*c.D+j] += float64(xv[i*c.D+j])
			}
		}
		want := tensor.New(tensor.F32, c.K, c.D)
		for i, s := range sums {
			want.F32()[i] = cv[i]
			if n := wantCounts[i/c.D]; n > 0 {
				want.F32()[i] = float32(s / float64(n))
			}
		}
		for k, n := range hostOf(t, b, counts).I32() {
			if n != wantCounts[k] {
				t.Errorf("%s: count[%d] = %d, want %d", name, k, n, wantCounts[k])
			}
		}
		closeTo(t, b, name+" centroids", pair{want, cent.d}, 1e-6, 0)
		got := hostOf(t, b, cent.d).F32()
		for k := 0; k < c.K-1; k++ {
			var members []int
			for i, a := range assign {
				if int(a) == k {
					members = append(members, i)
				}
			}
			if len(members) == 0 {
				continue
			}
			for j := 0; j < c.D; j++ {
				var part [4]float32
				for n, i := range members {
					part[n%4] += xv[i*c.D+j]
				}
				w := ((part[0] + part[1]) + (part[2] + part[3])) / float32(len(members))
				if g := got[k*c.D+j]; math.Float32bits(g) != math.Float32bits(w) {
					t.Fatalf("%s: centroid %d [%d] = %g, want %g: the float32 sum in index order", name, k, j, g, w)
				}
			}
		}
		for j := 0; j < c.D; j++ {
			if g := got[empty*c.D+j]; math.Float32bits(g) != math.Float32bits(cv[empty*c.D+j]) {
				t.Fatalf("%s: empty centroid %d changed: %g, was %g", name, empty, g, cv[empty*c.D+j])
			}
		}
	}

	// A bad assignment: an error naming it, before anything is written.
	x, cent := input(t, b, rng, tensor.F32, 4, 3), input(t, b, rng, tensor.F32, 2, 3)
	counts := poisonedI32(t, b, 2)
	for _, bad := range [][]int32{{0, 1, 2, 0}, {0, -1, 1, 1}} {
		ah, err := tensor.FromI32(bad, 4)
		must(t, err)
		err = b.KMeansUpdate(cent.d, counts, x.d, toDev(t, b, ah))
		if err == nil || !strings.Contains(err.Error(), "is not a centroid of [0, 2)") {
			t.Errorf("assign %v: %v", bad, err)
		}
	}
	compare(t, b, "centroids after refused updates", cent, 0)
	for name, err := range map[string]error{
		"counts f32":     b.KMeansUpdate(cent.d, output(t, b, tensor.F32, 2).d, x.d, poisonedI32(t, b, 4)),
		"counts of 3":    b.KMeansUpdate(cent.d, poisonedI32(t, b, 3), x.d, poisonedI32(t, b, 4)),
		"assign of 5":    b.KMeansUpdate(cent.d, counts, x.d, poisonedI32(t, b, 5)),
		"bf16 centroids": b.KMeansUpdate(input(t, b, rng, tensor.BF16, 2, 3).d, counts, x.d, poisonedI32(t, b, 4)),
	} {
		if err == nil {
			t.Errorf("%s: no error", name)
		} else if !strings.HasPrefix(err.Error(), "cuda: kmeans update: ") {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// TestGPUKMeansLloyd runs Lloyd iterations with the two operations, the
// points staying on the device, on well separated clusters: the centroids
// reach the clusters' means and every point its own cluster, as a float64
// Lloyd from the same start does.
func TestGPUKMeansLloyd(t *testing.T) {
	b := gpuBackend(t)
	rng := newRNG(t)
	const N, K, D = 200, 5, 12
	xh := tensor.New(tensor.F32, N, D)
	truth := make([]int, N)
	for i := range truth {
		truth[i] = i % K
		for j := 0; j < D; j++ {
			center := 0.0
			if j == truth[i] {
				center = 10
			}
			xh.F32()[i*D+j] = float32(center + 0.5*rng.NormFloat64())
		}
	}
	start := tensor.New(tensor.F32, K, D) // the first point of each cluster
	for k := 0; k < K; k++ {
		copy(start.F32()[k*D:(k+1)*D], xh.F32()[k*D:(k+1)*D])
	}
	x, cent := toDev(t, b, xh), toDev(t, b, start)
	assign, dist, counts := poisonedI32(t, b, N), output(t, b, tensor.F32, N).d, poisonedI32(t, b, K)
	for it := 0; it < 5; it++ {
		must(t, b.KMeansAssign(assign, dist, x, cent))
		must(t, b.KMeansUpdate(cent, counts, x, assign))
	}
	must(t, b.KMeansAssign(assign, dist, x, cent))
	for i, a := range hostOf(t, b, assign).I32() {
		if int(a) != truth[i] {
			t.Fatalf("point %d in cluster %d, want %d", i, a, truth[i])
		}
	}
	sums := make([]float64, K*D)
	for i := 0; i < N; i++ {
		for j := 0; j < D; j++ {
			sums[truth[i]*D+j] += float64(xh.F32()[i*D+j])
		}
	}
	want := tensor.New(tensor.F32, K, D)
	for i, s := range sums {
		want.F32()[i] = float32(s / (N / K))
	}
	closeTo(t, b, "centroids after Lloyd", pair{want, cent}, 1e-5, 0)
	for k, n := range hostOf(t, b, counts).I32() {
		if n != N/K {
			t.Errorf("cluster %d: %d points, want %d", k, n, N/K)
		}
	}
}

// TestGPUKMeansClustering runs the selection's k-means (sampling/cluster)
// with the GPU backend, whose fused KMeansAssign replaces the host's GEMM
// and argmin, and with the CPU, on the same seeded blobs (Lloyd and
// mini-batch, euclidean and spherical): the same labels and the same
// inertia to 1e-6.
func TestGPUKMeansClustering(t *testing.T) {
	b := gpuBackend(t)
	rng := rand.New(rand.NewPCG(3, 4))
	const N, D, K = 700, 24, 6
	centers := make([][]float32, K)
	for k := range centers {
		centers[k] = make([]float32, D)
		for j := range centers[k] {
			centers[k][j] = float32(rng.NormFloat64() * 4)
		}
	}
	rows := make([][]float32, N)
	for i := range rows {
		c := centers[rng.IntN(K)]
		rows[i] = make([]float32, D)
		for j := range rows[i] {
			rows[i][j] = c[j] + float32(rng.NormFloat64())
		}
	}
	x, err := cluster.NewMatrix(rows)
	must(t, err)
	for _, c := range []struct {
		name      string
		spherical bool
		batch     int
	}{{"lloyd", false, 0}, {"spherical", true, 0}, {"minibatch", false, 128}} {
		t.Run(c.name, func(t *testing.T) {
			o := cluster.DefaultKMeansOptions(K)
			o.Seed, o.Spherical = 5, c.spherical
			if c.batch > 0 {
				o.MiniBatch = &cluster.MiniBatchOptions{BatchSize: c.batch}
			}
			want, err := cluster.KMeans(x, o)
			must(t, err)
			o.Backend = b
			got, err := cluster.KMeans(x, o)
			must(t, err)
			if !slices.Equal(got.Labels, want.Labels) {
				diff := 0
				for i := range got.Labels {
					if got.Labels[i] != want.Labels[i] {
						diff++
					}
				}
				t.Errorf("%d of %d labels differ from the CPU's", diff, N)
			}
			if e := math.Abs(got.Inertia-want.Inertia) / want.Inertia; e > 1e-6 {
				t.Errorf("inertia %g, CPU %g (relative %.2g)", got.Inertia, want.Inertia, e)
			}
			t.Logf("%d iterations, inertia %.6g (CPU %.6g)", got.Iterations, got.Inertia, want.Inertia)
		})
	}
}
