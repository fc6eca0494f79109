package kernels_test

import (
	"fmt"
	"math"
	"testing"

	"github.com/compassml/compass/kernels"
	"github.com/compassml/compass/tensor"
)

// sqDistances is the float64 brute force of the assignment: the squared
// distance from point i to every centroid.
func sqDistances(x, c []float32, i, K, Dm int) []float64 {
	d := make([]float64, K)
	for k := range d {
		for j := 0; j < Dm; j++ {
			diff := float64(x[i*Dm+j]) - float64(c[k*Dm+j])
			d[k] += diff * diff
		}
	}
	return d
}

// TestKMeansAssign checks kmeans_sqnorm and kmeans_assign against a
// float64 brute force: points and centroids that fill no tile, more
// dimensions and centroids than one tile holds, one point, one centroid,
// bf16 points; a centroid duplicated at a higher index must never be
// chosen (ties go to the lowest index). The float32 expansion
// ||x||^2 - 2 x.c + ||c||^2 can swap two centroids whose distances differ
// by rounding, so the assigned centroid must be within that rounding of the
// nearest, and dist within it of the assigned centroid's distance.
func TestKMeansAssign(t *testing.T) {
	rng := newRand(t)
	for _, c := range []struct {
		N, K, Dm int
		dtype    tensor.DType
	}{
		{45, 13, 20, tensor.F32},
		{70, 40, 70, tensor.F32},
		{33, 9, 24, tensor.BF16},
		{1, 5, 3, tensor.F32},
		{10, 1, 8, tensor.F32},
	} {
		name := fmt.Sprintf("N=%d K=%d D=%d %v", c.N, c.K, c.Dm, c.dtype)
		x := randTensor(rng, c.dtype, 1, c.N, c.Dm)
		cent := randTensor(rng, tensor.F32, 1, c.K, c.Dm)
		cv := cent.F32()
		dup := -1
		if c.K >= 3 {
			// Centroids 1 and K-1 are both point 0, which has then two
			// nearest centroids at exactly the same float32 distance.
			copy(cv[c.Dm:2*c.Dm], x.ToF32()[:c.Dm])
			copy(cv[(c.K-1)*c.Dm:], cv[c.Dm:2*c.Dm])
			dup = c.K - 1
		}
		got := newEmu(t, "kmeans_assign").in("x", x).in("c", cent).
			launchAs("kmeans_sqnorm_c", "kmeans_sqnorm", kernels.Sizes{N: c.K}).
			launchAs("kmeans_sqnorm_x", "kmeans_sqnorm", kernels.Sizes{N: c.N}).
			launch("kmeans_assign", kernels.Sizes{N: c.N, K: c.K}).run()
		xv := x.ToF32()
		assign, dist := got["assign"].I32(), got["dist"].F32()
		for i := 0; i < c.N; i++ {
			d := sqDistances(xv, cv, i, c.K, c.Dm)
			best := 0
			for k := range d {
				if d[k] < d[best] {
					best = k
				}
			}
			a := int(assign[i])
			if a < 0 || a >= c.K {
				t.Fatalf("%s: point %d assigned to %d", name, i, a)
			}
			// The rounding of the expansion: a few float32 ulps of its terms.
			xn, cn := 0.0, 0.0
			for j := 0; j < c.Dm; j++ {
				xn += float64(xv[i*c.Dm+j]) * float64(xv[i*c.Dm+j])
				cn += float64(cv[a*c.Dm+j]) * float64(cv[a*c.Dm+j])
			}
			slack := 1e-5 * (xn + cn)
			if d[a] > d[best]+slack {
				t.Errorf("%s: point %d assigned to %d at %g, nearest is %d at %g", name, i, a, d[a], best, d[best])
			}
			if a == dup || (i == 0 && dup > 0 && a != 1) {
				t.Errorf("%s: point %d assigned to centroid %d; centroid %d is centroid 1 again and ties go to 1", name, i, a, dup)
			}
			if math.Abs(float64(dist[i])-d[a]) > slack {
				t.Errorf("%s: point %d: dist %g, want %g", name, i, dist[i], d[a])
			}
		}
		t.Logf("%s: %d points assigned", name, c.N)
	}
}

// TestKMeansUpdate checks kmeans_accumulate and kmeans_divide against float64
// sums: every centroid with points becomes their mean, an empty one keeps
// its value (bit for bit) and reports count 0.
func TestKMeansUpdate(t *testing.T) {
	rng := newRand(t)
	for _, c := range []struct {
		N, K, Dm int
		dtype    tensor.DType
	}{
		{50, 7, 19, tensor.F32},
		{20, 4, 33, tensor.BF16},
		{1, 2, 5, tensor.F32},
	} {
		name := fmt.Sprintf("N=%d K=%d D=%d %v", c.N, c.K, c.Dm, c.dtype)
		x := randTensor(rng, c.dtype, 1, c.N, c.Dm)
		cent := randTensor(rng, tensor.F32, 1, c.K, c.Dm)
		empty := c.K - 1 // nobody is assigned here
		assign := make([]int32, c.N)
		for i := range assign {
			assign[i] = int32(rng.IntN(c.K - 1))
		}
		got := newEmu(t, "kmeans_update").in("x", x).in("assign", i32s(assign, c.N)).in("c", cent).
			launch("kmeans_accumulate", kernels.Sizes{N: c.N, H: c.Dm}).
			launch("kmeans_divide", kernels.Sizes{K: c.K, H: c.Dm}).run()
		xv, cv := x.ToF32(), cent.F32()
		sums := make([]float64, c.K*c.Dm)
		counts := make([]int32, c.K)
		for i, a := range assign {
			counts[a]++
			for j := 0; j < c.Dm; j++ {
				sums[int(a)*c.Dm+j] += float64(xv[i*c.Dm+j])
			}
		}
		wantSums, wantC := make([]float32, c.K*c.Dm), make([]float32, c.K*c.Dm)
		for i, s := range sums {
			wantSums[i] = float32(s)
			wantC[i] = cv[i]
			if n := counts[i/c.Dm]; n > 0 {
				wantC[i] = float32(s / float64(n))
			}
		}
		for k, n := range counts {
			if got["counts"].I32()[k] != n {
				t.Errorf("%s: count[%d] = %d, want %d", name, k, got["counts"].I32()[k], n)
			}
		}
		closeTo(t, name+" sums", got["sums"], must(tensor.FromF32(wantSums, c.K, c.Dm)), 1e-6)
		closeTo(t, name+" centroids", got["c"], must(tensor.FromF32(wantC, c.K, c.Dm)), 1e-6)
		for j := 0; j < c.Dm; j++ {
			if g := got["c"].F32()[empty*c.Dm+j]; math.Float32bits(g) != math.Float32bits(cv[empty*c.Dm+j]) {
				t.Fatalf("%s: empty centroid %d changed: %g, was %g", name, empty, g, cv[empty*c.Dm+j])
			}
		}
	}
}
