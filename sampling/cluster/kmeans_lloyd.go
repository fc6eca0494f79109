package cluster

import (
	"cmp"
	"fmt"
	"slices"

	"github.com/compassml/compass/sampling/internal/matrix"
	"github.com/compassml/compass/tensor"
)

// The Lloyd iterations: the assignment step (one distance GEMM per block of
// rows), the update step (per-cluster sums, kept incrementally), empty
// cluster relocation, and the loop that stops as scikit-learn does.

// assigner assigns rows to their nearest centroid, one GEMM per block of
// rows.
type assigner struct {
	b     tensor.Backend
	m     *matrix.Matrix
	k     int
	block int
	dev   *tensor.Tensor // m on the backend (m.T itself on the CPU)
	out   *tensor.Tensor // host scratch [block, k]
	cnorm []float32

	// The backend's fused assignment on dev, prepared once (fusedAssigner);
	// nil on a backend without it.
	fused     func(assign, dist, c *tensor.Tensor) error
	freeFused func()
}

func newAssigner(b tensor.Backend, m *matrix.Matrix, k int) (*assigner, error) {
	block := min(m.N, max(256, matrix.BlockBytes/4/k))
	dev, err := b.ToDevice(m.T)
	if err != nil {
		return nil, err
	}
	a := &assigner{b: b, m: m, k: k, block: block, dev: dev, cnorm: make([]float32, k)}
	if fa, ok := b.(fusedAssigner); ok {
		if a.fused, a.freeFused, err = fa.KMeansAssigner(dev); err != nil {
			a.close()
			return nil, fmt.Errorf("cluster: kmeans assignment: %w", err)
		}
		return a, nil
	}
	a.out = tensor.New(tensor.F32, block, k)
	return a, nil
}

func (a *assigner) close() {
	if a.freeFused != nil {
		a.freeFused()
	}
	if a.dev != a.m.T {
		a.b.Free(a.dev)
	}
}

// fusedAssigner is what a GPU backend offers (cgo.Backend.KMeansAssigner):
// the assignment with the argmin fused into the distance kernel, so that
// only N labels come back from the device, not an N x K matrix, on points
// prepared once (their norms, their bf16 parts) for every iteration.
type fusedAssigner interface {
	KMeansAssigner(x *tensor.Tensor) (assign func(assign, dist, c *tensor.Tensor) error, free func(), err error)
}

// assign writes the nearest centroid of every row into labels and returns
// how many labels changed. Ties go to the lowest index.
func (a *assigner) assign(cent []float32, labels []int32) (changed int, err error) {
	d := a.m.D
	ct, err := tensor.FromF32(cent, a.k, d)
	if err != nil {
		return 0, err
	}
	dc, err := a.b.ToDevice(ct)
	if err != nil {
		return 0, err
	}
	defer func() {
		if dc != ct {
			a.b.Free(dc)
		}
	}()
	if a.fused != nil {
		return a.assignFused(dc, labels) // the kernel takes the centroids' norms itself
	}
	for j := 0; j < a.k; j++ {
		a.cnorm[j] = float32(matrix.Norm2(cent[j*d : (j+1)*d]))
	}
	var dout *tensor.Tensor
	if a.b.Name() != "cpu" {
		if dout, err = a.b.Alloc(tensor.F32, a.block, a.k); err != nil {
			return 0, err
		}
		defer a.b.Free(dout)
	}
	nw := matrix.Workers(a.block)
	counts := make([]int, nw)
	for lo := 0; lo < a.m.N; lo += a.block {
		hi := min(lo+a.block, a.m.N)
		xb, err := a.dev.Slice(lo, hi)
		if err != nil {
			return 0, err
		}
		out, err := a.out.Slice(0, hi-lo)
		if err != nil {
			return 0, err
		}
		if dout == nil {
			err = a.b.MatMul(out, xb, dc, false, true, -2, 0)
		} else {
			var o *tensor.Tensor
			if o, err = dout.Slice(0, hi-lo); err == nil {
				if err = a.b.MatMul(o, xb, dc, false, true, -2, 0); err == nil {
					var h *tensor.Tensor
					if h, err = a.b.ToHost(o); err == nil {
						copy(out.F32(), h.F32())
					}
				}
			}
		}
		if err != nil {
			return 0, fmt.Errorf("cluster: kmeans distances: %w", err)
		}
		scores := out.F32()
		k := a.k
		matrix.ParallelChunks(hi-lo, nw, func(w, r0, r1 int) {
			n := 0
			for r := r0; r < r1; r++ {
				cn := a.cnorm
				s := scores[r*k : (r+1)*k]
				s = s[:len(cn)] // one bounds check for the loop
				best, bj := s[0]+cn[0], 0
				for j := 1; j < len(cn); j++ {
					if v := s[j] + cn[j]; v < best {
						best, bj = v, j
					}
				}
				if labels[lo+r] != int32(bj) {
					labels[lo+r] = int32(bj)
					n++
				}
			}
			counts[w] += n
		})
	}
	for _, c := range counts {
		changed += c
	}
	return changed, nil
}

// assignFused is assign on a backend with the fused kernel: every row at
// once on the device, the labels copied back. Its distances are float32
// ||x||^2 - 2 x.c + ||c||^2, as the host path's, so the two agree except
// where two centroids are within that rounding of each other.
func (a *assigner) assignFused(dc *tensor.Tensor, labels []int32) (changed int, err error) {
	n := a.m.N
	lab, err := a.b.Alloc(tensor.I32, n)
	if err != nil {
		return 0, err
	}
	defer a.b.Free(lab)
	dist, err := a.b.Alloc(tensor.F32, n)
	if err != nil {
		return 0, err
	}
	defer a.b.Free(dist)
	if err := a.fused(lab, dist, dc); err != nil {
		return 0, fmt.Errorf("cluster: kmeans assignment: %w", err)
	}
	h, err := a.b.ToHost(lab)
	if err != nil {
		return 0, err
	}
	for i, l := range h.I32() {
		if labels[i] != l {
			labels[i] = l
			changed++
		}
	}
	return changed, nil
}

// sumChunks is how many row chunks the update sums separately before adding
// the chunks up in order. It is fixed, not the thread count, so that every
// sum is taken in the same order on any machine.
const sumChunks = 16

// sumBytes bounds the float64 partial sums of the update.
const sumBytes = 64 << 20

// clusterSums holds the float64 sum and the count of the rows of each
// cluster, for a membership (the cluster each row is counted in) that
// follows the assignments. Once few rows change cluster, moving only those
// is much cheaper than summing everything again (late Lloyd iterations
// change a few percent of the rows).
type clusterSums struct {
	m      *matrix.Matrix
	k      int
	xx     float64     // sum of ||x||^2 over the rows
	member []int32     // cluster each row is counted in; -1: none yet
	sums   []float64   // [k*d]
	counts []int       // [k]
	part   [][]float64 // per-chunk partial sums or changes, [k*d] each
	dirty  []bool      // chunks whose partial holds changes
}

func newClusterSums(m *matrix.Matrix, k int) *clusterSums {
	chunks := max(1, min(sumChunks, m.N/256, sumBytes/(8*k*m.D)))
	s := &clusterSums{k: k, member: make([]int32, m.N), sums: make([]float64, k*m.D), counts: make([]int, k),
		part: make([][]float64, chunks), dirty: make([]bool, chunks)}
	for c := range s.part {
		s.part[c] = make([]float64, k*m.D)
	}
	s.reset(m)
	return s
}

// reset starts over on the rows of m (as many rows as before), with no row
// counted anywhere.
func (s *clusterSums) reset(m *matrix.Matrix) {
	s.m, s.xx = m, sumSquares(m)
	for i := range s.member {
		s.member[i] = -1
	}
	clear(s.sums)
	clear(s.counts)
}

// sync makes the sums and counts those of labels: from scratch when more
// than half of the rows changed cluster, else by moving the rows that did.
// Either way each fixed chunk of rows works into its own partial and the
// partials are added in chunk order, so the result does not depend on the
// number of threads.
func (s *clusterSums) sync(labels []int32) {
	m, d := s.m, s.m.D
	changed := 0
	for i, l := range labels {
		if l != s.member[i] {
			changed++
		}
	}
	if changed == 0 {
		return
	}
	chunks := len(s.part)
	fresh := 2*changed > m.N
	matrix.ParallelTasks(chunks, func(c int) {
		acc := s.part[c]
		lo, hi := c*m.N/chunks, (c+1)*m.N/chunks
		if fresh {
			clear(acc)
			for i := lo; i < hi; i++ {
				addRow(acc[int(labels[i])*d:int(labels[i]+1)*d], m.Row(i))
			}
			s.dirty[c] = true
			return
		}
		s.dirty[c] = false
		for i := lo; i < hi; i++ {
			from, to := s.member[i], labels[i]
			if from == to {
				continue
			}
			if !s.dirty[c] {
				clear(acc)
				s.dirty[c] = true
			}
			if from >= 0 {
				subRow(acc[int(from)*d:int(from+1)*d], m.Row(i))
			}
			addRow(acc[int(to)*d:int(to+1)*d], m.Row(i))
		}
	})
	if fresh {
		clear(s.sums)
	}
	for c, p := range s.part {
		if s.dirty[c] {
			for j, v := range p {
				s.sums[j] += v
			}
		}
	}
	if fresh {
		clear(s.counts)
		for _, l := range labels {
			s.counts[l]++
		}
	} else {
		for i, l := range labels {
			if from := s.member[i]; from != l {
				if from >= 0 {
					s.counts[from]--
				}
				s.counts[l]++
			}
		}
	}
	copy(s.member, labels)
	for j, n := range s.counts {
		if n == 0 {
			clear(s.sums[j*d : (j+1)*d]) // drop the rounding residue of an emptied cluster
		}
	}
}

// move counts row i in cluster to instead of its current one.
func (s *clusterSums) move(i, to int) {
	d := s.m.D
	from := int(s.member[i])
	x := s.m.Row(i)
	subRow(s.sums[from*d:(from+1)*d], x)
	s.counts[from]--
	if s.counts[from] == 0 {
		clear(s.sums[from*d : (from+1)*d])
	}
	if s.counts[to] == 0 {
		clear(s.sums[to*d : (to+1)*d]) // drop any rounding residue of an emptied cluster
	}
	addRow(s.sums[to*d:(to+1)*d], x)
	s.counts[to]++
	s.member[i] = int32(to)
}

// objective is the inertia of the membership under the centroids cent,
// computed from the sums as sum ||x||^2 - 2 sum_k c_k.S_k + sum_k n_k ||c_k||^2
// in float64, without a pass over the data.
func (s *clusterSums) objective(cent []float32) float64 {
	d := s.m.D
	obj := s.xx
	for j := 0; j < s.k; j++ {
		c := cent[j*d : (j+1)*d]
		sum := s.sums[j*d : (j+1)*d]
		var cs float64
		for f, v := range c {
			cs += float64(v) * sum[f]
		}
		obj += float64(s.counts[j])*matrix.Norm2(c) - 2*cs
	}
	return max(0, obj)
}

// subRow subtracts x from acc (same length), four at a time.
func subRow(acc []float64, x []float32) {
	acc = acc[:len(x)]
	j := 0
	for ; j+4 <= len(x); j += 4 {
		acc[j] -= float64(x[j])
		acc[j+1] -= float64(x[j+1])
		acc[j+2] -= float64(x[j+2])
		acc[j+3] -= float64(x[j+3])
	}
	for ; j < len(x); j++ {
		acc[j] -= float64(x[j])
	}
}

// addRow adds x into acc (same length), four at a time.
func addRow(acc []float64, x []float32) {
	acc = acc[:len(x)]
	j := 0
	for ; j+4 <= len(x); j += 4 {
		acc[j] += float64(x[j])
		acc[j+1] += float64(x[j+1])
		acc[j+2] += float64(x[j+2])
		acc[j+3] += float64(x[j+3])
	}
	for ; j < len(x); j++ {
		acc[j] += float64(x[j])
	}
}

// rowDistances returns ||x_i - c_{labels_i}||^2 for every row (float64).
func rowDistances(m *matrix.Matrix, labels []int32, cent []float32) []float64 {
	dist := make([]float64, m.N)
	matrix.ParallelChunks(m.N, matrix.Workers(m.N), func(_, lo, hi int) {
		for i := lo; i < hi; i++ {
			c := cent[int(labels[i])*m.D : int(labels[i]+1)*m.D]
			var s float64
			for j, v := range m.Row(i) {
				e := float64(v) - float64(c[j])
				s += e * e
			}
			dist[i] = s
		}
	})
	return dist
}

// sumSquares is the sum of the squared norms of the rows (float64).
func sumSquares(m *matrix.Matrix) float64 {
	part := make([]float64, sumChunks)
	matrix.ParallelChunks(m.N, sumChunks, func(c, lo, hi int) {
		for i := lo; i < hi; i++ {
			part[c] += matrix.Norm2(m.Row(i))
		}
	})
	return matrix.Sum64(part)
}

// inertia is the exact sum of rowDistances, summed in row order.
func inertia(m *matrix.Matrix, labels []int32, cent []float32) float64 {
	return matrix.Sum64(rowDistances(m, labels, cent))
}

// relocateEmpty re-seeds the clusters with no rows as scikit-learn does
// (_relocate_empty_clusters_dense): the rows farthest from their own
// centroid (under the centroids they were assigned with) become the new
// centres of the empty clusters, largest distance first, ties to the lowest
// row, and each leaves its old cluster's sum. A row is only taken from a
// cluster that keeps at least one other row. The labels are left as they
// are: the next assignment moves the rows. It returns how many clusters it
// re-seeded.
func relocateEmpty(s *clusterSums, labels []int32, cent []float32) int {
	var empty []int
	for j, c := range s.counts {
		if c == 0 {
			empty = append(empty, j)
		}
	}
	if len(empty) == 0 {
		return 0
	}
	dist := rowDistances(s.m, labels, cent)
	order := make([]int, s.m.N)
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(dist[b], dist[a]) })
	moved := 0
	for _, i := range order {
		if moved == len(empty) {
			break
		}
		if s.counts[s.member[i]] < 2 {
			continue
		}
		s.move(i, empty[moved])
		moved++
	}
	return moved
}

// lloyd runs Lloyd iterations from the centroids init (not modified).
func lloyd(m *matrix.Matrix, init []float32, o KMeansOptions, tol float64, restart int) (*KMeansResult, error) {
	k, d := o.K, m.D
	a, err := newAssigner(o.Backend, m, k)
	if err != nil {
		return nil, err
	}
	defer a.close()
	cent := slices.Clone(init)
	next := make([]float32, k*d)
	labels := make([]int32, m.N)
	for i := range labels {
		labels[i] = -1 // as scikit-learn: the first iteration never counts as converged
	}
	sums := newClusterSums(m, k)
	res := &KMeansResult{Restart: restart}
	strict := false
	for it := 0; it < o.MaxIter; it++ {
		changed, err := a.assign(cent, labels)
		if err != nil {
			return nil, err
		}
		sums.sync(labels)
		res.History = append(res.History, sums.objective(cent))
		res.Relocated += relocateEmpty(sums, labels, cent)
		for j := 0; j < k; j++ {
			c := next[j*d : (j+1)*d]
			n := sums.counts[j]
			if n == 0 {
				copy(c, cent[j*d:(j+1)*d]) // nothing to average: keep it
				continue
			}
			for f := range c {
				c[f] = float32(sums.sums[j*d+f] / float64(n))
			}
		}
		if o.Spherical {
			matrix.NormalizeRows(next, d)
		}
		var shift float64
		for f := range next {
			e := float64(next[f]) - float64(cent[f])
			shift += e * e
		}
		cent, next = next, cent
		res.Iterations = it + 1
		fmt.Fprintf(o.Progress, "kmeans: restart %d iteration %d: inertia %.6g, %d assignments changed, centroid shift %.3g\n",
			restart+1, it+1, res.History[it], changed, shift)
		if changed == 0 {
			strict = true
			res.Converged = true
			break
		}
		if shift <= tol {
			res.Converged = true
			break
		}
	}
	if !strict {
		// The centroids moved after the last assignment: assign again so
		// that labels and centroids agree (scikit-learn does the same).
		if _, err := a.assign(cent, labels); err != nil {
			return nil, err
		}
	}
	return finish(m, res, labels, cent, k), nil
}

// finish fills the result's labels, sizes, centroids and exact inertia.
func finish(m *matrix.Matrix, res *KMeansResult, labels []int32, cent []float32, k int) *KMeansResult {
	res.Labels = labels
	res.Sizes = make([]int, k)
	for _, l := range labels {
		res.Sizes[l]++
	}
	res.Inertia = inertia(m, labels, cent)
	res.Centroids, _ = tensor.FromF32(cent, k, m.D)
	return res
}

// Assign returns the nearest centroid of every row of x (ties to the lowest
// index) and the squared euclidean distance to it. centroids is F32 [K, d]
// with the d of x. With spherical set, rows of x are L2-normalised first
// (the centroids are taken as given).
func Assign(x, centroids *tensor.Tensor, spherical bool, b tensor.Backend) ([]int32, []float64, error) {
	m, err := check("assign", x)
	if err != nil {
		return nil, nil, err
	}
	c, err := check("assign centroids", centroids)
	if err != nil {
		return nil, nil, err
	}
	if c.D != m.D {
		return nil, nil, fmt.Errorf("cluster: assign: rows have dimension %d, centroids %d", m.D, c.D)
	}
	if spherical {
		if m, err = m.Normalized("assign"); err != nil {
			return nil, nil, fmt.Errorf("cluster: %w", err)
		}
	}
	if b == nil {
		b = tensor.NewCPU()
	}
	a, err := newAssigner(b, m, c.N)
	if err != nil {
		return nil, nil, err
	}
	defer a.close()
	labels := make([]int32, m.N)
	if _, err := a.assign(c.V, labels); err != nil {
		return nil, nil, err
	}
	return labels, rowDistances(m, labels, c.V), nil
}
