package cluster

import (
	"fmt"
	"github.com/compassml/compass/sampling/internal/matrix"
	"math"
	"slices"
)

// miniBatch runs mini-batch k-means (see MiniBatchOptions) and returns the
// clustering of all rows under its final centroids.
func miniBatch(m *matrix.Matrix, o KMeansOptions, init []float32) (*KMeansResult, error) {
	mb := *o.MiniBatch
	if mb.BatchSize < 0 {
		return nil, fmt.Errorf("cluster: kmeans: negative mini-batch size %d", mb.BatchSize)
	}
	if mb.BatchSize == 0 {
		mb.BatchSize = 1024
	}
	if mb.MaxNoImprovement == 0 {
		mb.MaxNoImprovement = 10
	}
	if mb.ReassignmentRatio == 0 {
		mb.ReassignmentRatio = 0.01
	}
	if o.MaxIter == 0 {
		o.MaxIter = 100
	}
	k, d := o.K, m.D
	batch := min(mb.BatchSize, m.N)
	rng := matrix.NewRand(o.Seed, 0)

	// Seeding: NInit k-means++ runs on random rows, judged on another sample.
	cent := init
	if cent == nil {
		initSize := min(m.N, max(3*batch, 3*k))
		valid := m.Gather(randomRows(m.N, initSize, rng))
		best := math.Inf(1)
		for r := 0; r < o.NInit; r++ {
			sample := m.Gather(randomRows(m.N, initSize, rng))
			c, err := seedPlusPlus(sample, k, sample.N, rng, o.Backend)
			if err != nil {
				return nil, err
			}
			if o.Spherical {
				matrix.NormalizeRows(c, d)
			}
			labels := make([]int32, valid.N)
			a, err := newAssigner(o.Backend, valid, k)
			if err != nil {
				return nil, err
			}
			_, err = a.assign(c, labels)
			a.close()
			if err != nil {
				return nil, err
			}
			if in := inertia(valid, labels, c); in < best {
				best, cent = in, c
			}
		}
	}
	cent = slices.Clone(cent)

	weights := make([]float64, k) // rows each centre has received
	steps := max(1, o.MaxIter*m.N/batch)
	alpha := min(1, 2*float64(batch)/float64(m.N+1))
	ewa, ewaMin := 0.0, math.Inf(1)
	noImprovement, sinceReassign := 0, 0
	res := &KMeansResult{}
	labels := make([]int32, batch)
	var sums *clusterSums // reused across steps

	for step := 0; step < steps; step++ {
		rows := randomRows(m.N, batch, rng)
		xb := m.Gather(rows)
		a, err := newAssigner(o.Backend, xb, k)
		if err != nil {
			return nil, err
		}
		_, err = a.assign(cent, labels)
		a.close()
		if err != nil {
			return nil, err
		}
		if sums == nil {
			sums = newClusterSums(xb, k)
		} else {
			sums.reset(xb)
		}
		sums.sync(labels)
		batchInertia := sums.objective(cent)

		// Per-centre learning rate: each centre becomes the mean of all the
		// rows it has received so far.
		for j := 0; j < k; j++ {
			n := sums.counts[j]
			if n == 0 {
				continue
			}
			w := weights[j] + float64(n)
			c := cent[j*d : (j+1)*d]
			for f := range c {
				c[f] = float32((float64(c[f])*weights[j] + sums.sums[j*d+f]) / w)
			}
			weights[j] = w
		}
		if o.Spherical {
			matrix.NormalizeRows(cent, d)
		}

		sinceReassign += batch
		if mb.ReassignmentRatio > 0 && (slices.Contains(weights, 0) || sinceReassign >= 10*k) {
			sinceReassign = 0
			res.Relocated += reassign(xb, cent, weights, mb.ReassignmentRatio, rng)
		}

		// Early stopping on the smoothed per-row batch inertia, skipping
		// the first step (its centres were the seeding's).
		res.Iterations = step + 1
		if step == 0 {
			ewa = batchInertia / float64(batch)
			res.History = append(res.History, ewa)
			continue
		}
		ewa = ewa*(1-alpha) + batchInertia/float64(batch)*alpha
		res.History = append(res.History, ewa)
		if step%100 == 0 {
			fmt.Fprintf(o.Progress, "kmeans: mini-batch step %d/%d: mean batch inertia %.6g\n", step+1, steps, ewa)
		}
		if ewa < ewaMin {
			noImprovement, ewaMin = 0, ewa
		} else {
			noImprovement++
		}
		if mb.MaxNoImprovement > 0 && noImprovement >= mb.MaxNoImprovement {
			res.Converged = true
			break
		}
	}

	// Assign every row to the final centroids, streaming over blocks.
	a, err := newAssigner(o.Backend, m, k)
	if err != nil {
		return nil, err
	}
	defer a.close()
	all := make([]int32, m.N)
	if _, err := a.assign(cent, all); err != nil {
		return nil, err
	}
	return finish(m, res, all, cent, k), nil
}

// randomRows draws s row indices of n uniformly with replacement.
func randomRows(n, s int, rng interface{ IntN(int) int }) []int {
	rows := make([]int, s)
	for i := range rows {
		rows[i] = rng.IntN(n)
	}
	return rows
}

// reassign moves the centres that received fewer than ratio times the
// largest count to random rows of the batch (distinct rows, at most half
// the batch, the least-fed centres first), and gives them the smallest
// count among the centres that stay, so that they are not moved again at
// once (scikit-learn's _mini_batch_step). It returns how many it moved.
func reassign(xb *matrix.Matrix, cent []float32, weights []float64, ratio float64, rng interface {
	IntN(int) int
	Perm(int) []int
}) int {
	limit := ratio * slices.Max(weights)
	var move []int
	for j, w := range weights {
		if w < limit {
			move = append(move, j)
		}
	}
	if maxMove := xb.N / 2; len(move) > maxMove {
		slices.SortStableFunc(move, func(a, b int) int {
			switch {
			case weights[a] < weights[b]:
				return -1
			case weights[a] > weights[b]:
				return 1
			}
			return 0
		})
		move = move[:maxMove]
		slices.Sort(move)
	}
	if len(move) == 0 {
		return 0
	}
	floor := math.Inf(1)
	for j, w := range weights {
		if !slices.Contains(move, j) {
			floor = min(floor, w)
		}
	}
	if math.IsInf(floor, 1) {
		floor = 0
	}
	rows := rng.Perm(xb.N)[:len(move)]
	d := xb.D
	for i, j := range move {
		copy(cent[j*d:(j+1)*d], xb.Row(rows[i]))
		weights[j] = floor
	}
	return len(move)
}
