package drift

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/compassml/compass/sampling/internal/matrix"
	"github.com/compassml/compass/tensor"
)

// exactAssign is the reference assign is checked against: every centroid's
// distance in float64, ties to the lowest index, rows split over the
// cores (what assign computed before it used k-means' distance GEMM).
func exactAssign(t testing.TB, r *Reference, x *tensor.Tensor) ([]int, []float64) {
	m, err := matrix.Check("x", x)
	if err != nil {
		t.Fatal(err)
	}
	if r.Spherical {
		if m, err = m.Normalized("x"); err != nil {
			t.Fatal(err)
		}
	}
	k := len(r.Centroids) / r.Dim
	labels, dist := make([]int, m.N), make([]float64, m.N)
	matrix.ParallelChunks(m.N, matrix.Workers(m.N), func(_, lo, hi int) {
		for i := lo; i < hi; i++ {
			best, bestD := 0, math.Inf(1)
			for j := range k {
				if d := r.distance(m.Row(i), r.Centroids[j*r.Dim:(j+1)*r.Dim]); d < bestD {
					best, bestD = j, d
				}
			}
			labels[i], dist[i] = best, bestD
		}
	})
	return labels, dist
}

// randomReference is a reference with k random centroids in d dimensions,
// the last one a copy of centroid 1 (so that every row nearest to it is an
// exact tie, which must go to 1).
func randomReference(rng *rand.Rand, k, d int, spherical bool) *Reference {
	c := make([]float32, k*d)
	for i := range c {
		c[i] = float32(rng.NormFloat64())
	}
	copy(c[(k-1)*d:], c[d:2*d])
	if spherical {
		matrix.NormalizeRows(c, d)
	}
	return &Reference{Dim: d, Centroids: c, Counts: make([]int, k), Spherical: spherical}
}

func randomRows(rng *rand.Rand, n, d int, offset float32) *tensor.Tensor {
	x := tensor.New(tensor.F32, n, d)
	for i, v := range x.F32() {
		x.F32()[i] = v + float32(rng.NormFloat64()) + offset
	}
	return x
}

// assign takes the nearest centroid from a float32 GEMM and the distance
// exactly: the distance reported is the exact distance to the centroid
// chosen, and that centroid is the exact nearest one or within rounding of
// it. On these rows 0 of 4000 labels differed from the exact loop's (seed
// 3); the test allows 0.5% and a distance at most 1e-5 (relative) above
// the exact nearest.
func TestAssignMatchesExact(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, spherical := range []bool{false, true} {
		const n, k, d = 4000, 96, 40
		r := randomReference(rng, k, d, spherical)
		x := randomRows(rng, n, d, 0.3)
		labels, dist, err := r.assign("rows", x)
		if err != nil {
			t.Fatal(err)
		}
		want, wantDist := exactAssign(t, r, x)
		m, _ := matrix.Check("x", x)
		if spherical {
			m, _ = m.Normalized("x")
		}
		differ, toLast := 0, 0
		for i := range n {
			if labels[i] == k-1 {
				toLast++
			}
			exact := r.distance(m.Row(i), r.Centroids[labels[i]*d:(labels[i]+1)*d])
			if dist[i] != exact {
				t.Fatalf("spherical %v: row %d: distance %v, the exact distance to centroid %d is %v", spherical, i, dist[i], labels[i], exact)
			}
			if labels[i] == want[i] {
				continue
			}
			differ++
			if dist[i] > wantDist[i]+1e-5*(1+wantDist[i]) {
				t.Errorf("spherical %v: row %d: centroid %d at %v, the nearest is %d at %v", spherical, i, labels[i], dist[i], want[i], wantDist[i])
			}
		}
		t.Logf("spherical %v: %d of %d labels differ from the exact loop's", spherical, differ, n)
		if differ > n/200 {
			t.Errorf("spherical %v: %d of %d labels differ from the exact loop's, want at most 0.5%%", spherical, differ, n)
		}
		if toLast > 0 {
			t.Errorf("spherical %v: %d rows went to the last centroid, a copy of centroid 1 (ties go to the lowest index)", spherical, toLast)
		}
	}
}

// BenchmarkReferenceAssign compares assign with the exact loop it
// replaced on a drift reference of 20000 rows of dimension 768 and 256
// clusters (ratio: divide the two ns/op).
func BenchmarkReferenceAssign(b *testing.B) {
	rng := rand.New(rand.NewPCG(5, 6))
	const n, k, d = 20000, 256, 768
	r := randomReference(rng, k, d, true)
	x := randomRows(rng, n, d, 0)
	b.Run("gemm", func(b *testing.B) {
		for range b.N {
			if _, _, err := r.assign("rows", x); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("exact", func(b *testing.B) {
		for range b.N {
			exactAssign(b, r, x)
		}
	})
}
