package cgo

import (
	"fmt"

	"github.com/compassml/compass/kernels"
	"github.com/compassml/compass/tensor"
)

// K-means on the device: the two steps of a Lloyd iteration
// (kernels/kmeans.cu), for the clustering of embeddings. A caller keeps
// the points x and the centroids c on the device for all the iterations
// and reads back only what it decides on: the counts (empty clusters) and,
// when it wants them, the assignments and distances.

// kmeansPointsCheck checks the points x [N, D] (any float dtype) on the
// device and returns N and D.
func kmeansPointsCheck(op string, x *tensor.Tensor) (N, D int, err error) {
	if err := floatCheck(op, x); err != nil {
		return 0, 0, err
	}
	if x.Rank() != 2 {
		return 0, 0, fmt.Errorf("cuda: %s: x %v must be [N, D]", op, x)
	}
	N, D = x.Dim(0), x.Dim(1)
	if D == 0 {
		return 0, 0, fmt.Errorf("cuda: %s: points without dimensions (x %v)", op, x)
	}
	return N, D, int32Check(op, N, D)
}

// kmeansShapes checks x [N, D] (any float dtype) and c F32 [K, D], all on
// the device, and returns N, K and D.
func kmeansShapes(op string, x, c *tensor.Tensor) (N, K, D int, err error) {
	if N, D, err = kmeansPointsCheck(op, x); err != nil {
		return 0, 0, 0, err
	}
	if err := floatCheck(op, c); err != nil {
		return 0, 0, 0, err
	}
	switch {
	case c.Rank() != 2 || c.Dim(1) != D:
		return 0, 0, 0, fmt.Errorf("cuda: %s: centroids %v must be [K, %d], as x %v is [N, %d]", op, c, D, x, D)
	case c.DType() != tensor.F32:
		return 0, 0, 0, fmt.Errorf("cuda: %s: centroids %v must be F32", op, c)
	case c.Dim(0) == 0:
		return 0, 0, 0, fmt.Errorf("cuda: %s: no centroids (c %v)", op, c)
	}
	K = c.Dim(0)
	return N, K, D, int32Check(op, N, K, D)
}

// i32Check checks that t is an I32 device tensor of n elements.
func i32Check(op, what string, t *tensor.Tensor, n int) error {
	if err := deviceCheck(op, t); err != nil {
		return err
	}
	if t.DType() != tensor.I32 || t.NumElements() != n {
		return fmt.Errorf("cuda: %s: %s %v must be I32 with %d elements", op, what, t, n)
	}
	return nil
}

// KMeansAssign writes the nearest centroid of each point: assign[i] is the
// index of the row of c closest to row i of x (ties to the lowest index),
// dist[i] the squared distance to it, ||x||^2 - 2 x.c + ||c||^2 with the
// norms in float32 and x.c on the bf16 tensor cores with each operand split
// into two bf16 (hi + lo: about 3 * 2^-16 relative per product, near
// float32; kernels/kmeans.cu). So two centroids whose distances differ by
// less than that rounding may swap, and dist may be a little below 0 for a
// point on its centroid.
//
// Operands, all device tensors the caller allocates and frees: x [N, D]
// (F32, BF16 or F16), c F32 [K, D], assign I32 [N], dist F32 [N]. Scratch,
// allocated and freed here: the row norms, the centroids' hi and lo parts
// (2 K Dp bf16, Dp = D rounded up to a multiple of 32) and, except for
// BF16 points with D a multiple of 32 (used in place), the points' hi and,
// for F32 and F16 points, lo parts: 2 or 4 N Dp bytes. Like the other
// operations it only queues the work; ToHost of assign or dist waits for
// it. Iterations over the same points should use KMeansAssigner, which
// prepares the points' norms and parts once.
func (b *Backend) KMeansAssign(assign, dist, x, c *tensor.Tensor) error {
	return b.kmeansAssign(assign, dist, x, c, true)
}

// KMeansAssigner prepares the points x [N, D] (F32, BF16 or F16, on the
// device) for repeated assignments, as Lloyd's iterations make: their
// float32 row norms and, unless x is BF16 with D a multiple of 32, their
// bf16 hi and lo parts (KMeansAssign's scratch for them) are computed here,
// once, instead of at every call. assign is then KMeansAssign on those
// points, whose rows it reads as they were when prepared; x must stay
// allocated while assign is used, and free releases what was prepared.
func (b *Backend) KMeansAssigner(x *tensor.Tensor) (assign func(assign, dist, c *tensor.Tensor) error, free func(), err error) {
	p, err := b.prepareKMeans(x, true)
	if err != nil {
		return nil, nil, err
	}
	return func(assign, dist, c *tensor.Tensor) error { return b.assignPrepared(assign, dist, p, c) }, p.s.free, nil
}

// kmeansAssignF32 is KMeansAssign with the float32 FMA kernel
// (kmeans_assign): the reference the tests hold the tensor-core kernels
// to, and the GPU benchmark's baseline for them.
func (b *Backend) kmeansAssignF32(assign, dist, x, c *tensor.Tensor) error {
	return b.kmeansAssign(assign, dist, x, c, false)
}

// kmeansAssign is KMeansAssign on the tensor cores or, without
// tensorCores, in float32 FMA.
func (b *Backend) kmeansAssign(assign, dist, x, c *tensor.Tensor, tensorCores bool) error {
	p, err := b.prepareKMeans(x, tensorCores)
	if err != nil {
		return err
	}
	defer p.s.free()
	return b.assignPrepared(assign, dist, p, c)
}

// kmeansPoints is points prepared for assignments: x, its float32 row
// norms xn and, for the tensor cores, its bf16 hi part xh (x itself for
// BF16 points with D = Dp) and lo part xl (nil for BF16 points), with rows
// padded to Dp; s holds what was allocated.
type kmeansPoints struct {
	x, xn, xh, xl *tensor.Tensor
	N, D, Dp      int
	tensorCores   bool
	s             scratch
}

// prepareKMeans computes the points' norms and, with tensorCores, their
// bf16 parts.
func (b *Backend) prepareKMeans(x *tensor.Tensor, tensorCores bool) (*kmeansPoints, error) {
	const op = "kmeans assign"
	N, D, err := kmeansPointsCheck(op, x)
	if err != nil {
		return nil, err
	}
	p := &kmeansPoints{x: x, N: N, D: D, tensorCores: tensorCores, s: scratch{b: b},
		Dp: (D + kernels.KMeansTCPad - 1) / kernels.KMeansTCPad * kernels.KMeansTCPad}
	if N == 0 {
		return p, nil
	}
	ok := false
	defer func() {
		if !ok {
			p.s.free()
		}
	}()
	if p.xn, err = p.s.alloc(tensor.F32, N); err != nil {
		return nil, err
	}
	args := new(Args).Raw(p.xn).Tensor(x).I32(N).I32(D)
	if err := b.q.launch(op, "kmeans_sqnorm", kernels.Sizes{N: N}, args); err != nil {
		return nil, err
	}
	p.xh = x
	if mem, _ := x.Device(); tensorCores && (x.DType() != tensor.BF16 || D != p.Dp || mem.Ptr%16 != 0) {
		if p.xh, err = p.s.alloc(tensor.BF16, N, p.Dp); err != nil {
			return nil, err
		}
		if x.DType() != tensor.BF16 {
			if p.xl, err = p.s.alloc(tensor.BF16, N, p.Dp); err != nil {
				return nil, err
			}
		}
		if err := b.kmeansSplit(p.xh, p.xl, x, N, D, p.Dp); err != nil {
			return nil, err
		}
	}
	ok = true
	return p, nil
}

// kmeansSplit writes the rows of src [rows, D] as bf16 hi and, when lo is
// not nil, lo parts, padded with zeros to Dp.
func (b *Backend) kmeansSplit(hi, lo, src *tensor.Tensor, rows, D, Dp int) error {
	args := new(Args).Raw(hi).Raw(lo).Tensor(src).I32(rows).I32(D).I32(Dp)
	return b.q.launch("kmeans assign", "kmeans_split", kernels.Sizes{N: rows, H: Dp}, args)
}

// assignPrepared is kmeansAssign on prepared points.
func (b *Backend) assignPrepared(assign, dist *tensor.Tensor, p *kmeansPoints, c *tensor.Tensor) error {
	const op = "kmeans assign"
	N, K, D, err := kmeansShapes(op, p.x, c)
	if err != nil {
		return err
	}
	if N != p.N || D != p.D {
		return fmt.Errorf("cuda: %s: points %v are not the [%d, %d] prepared", op, p.x, p.N, p.D)
	}
	if err := i32Check(op, "assign", assign, N); err != nil {
		return err
	}
	if err := deviceCheck(op, dist); err != nil {
		return err
	}
	if dist.DType() != tensor.F32 || dist.NumElements() != N {
		return fmt.Errorf("cuda: %s: dist %v must be F32 with %d elements", op, dist, N)
	}
	if N == 0 {
		return nil
	}
	s := &scratch{b: b}
	defer s.free()
	cn, err := s.alloc(tensor.F32, K)
	if err != nil {
		return err
	}
	args := new(Args).Raw(cn).Tensor(c).I32(K).I32(D)
	if err := b.q.launch(op, "kmeans_sqnorm", kernels.Sizes{N: K}, args); err != nil {
		return err
	}
	if !p.tensorCores {
		args.Reset().Raw(assign).Raw(dist).Tensor(p.x).Raw(p.xn).Raw(c).Raw(cn).I32(N).I32(K).I32(D)
		return b.q.launch(op, "kmeans_assign", kernels.Sizes{N: N, K: K}, args)
	}
	// The centroids as bf16 hi and lo parts, rows padded to Dp.
	ch, err := s.alloc(tensor.BF16, K, p.Dp)
	if err != nil {
		return err
	}
	cl, err := s.alloc(tensor.BF16, K, p.Dp)
	if err != nil {
		return err
	}
	if err := b.kmeansSplit(ch, cl, c, K, D, p.Dp); err != nil {
		return err
	}
	sizes := kernels.Sizes{N: N, K: K}
	if p.xl == nil {
		args.Reset().Raw(assign).Raw(dist).Raw(p.xh).Raw(p.xn).Raw(ch).Raw(cl).Raw(cn).I32(N).I32(K).I32(p.Dp)
		return b.q.launch(op, "kmeans_assign_tc", sizes, args)
	}
	args.Reset().Raw(assign).Raw(dist).Raw(p.xh).Raw(p.xl).Raw(p.xn).Raw(ch).Raw(cl).Raw(cn).I32(N).I32(K).I32(p.Dp)
	return b.q.launch(op, "kmeans_assign_tc_split", sizes, args)
}

// KMeansUpdate moves each centroid to the mean of the points assigned to
// it: c[k] = mean of the rows i of x with assign[i] = k, counts[k] their
// number. A centroid no point is assigned to keeps its value, bit for bit,
// with count 0: the caller finds empty clusters in counts and decides what
// to do with them. The means are a segmented reduction (kernels/kmeans.cu):
// the points sorted by cluster, stably, then each cluster's summed in
// index order in float32, so the same inputs give the same centroids bit
// for bit on every run.
//
// Operands, all device tensors the caller allocates and frees: c F32
// [K, D] (read and written), counts I32 [K] (written), x [N, D] (F32, BF16
// or F16), assign I32 [N] with values in [0, K), as KMeansAssign writes
// them. The kernels index with the values of assign, so they are checked
// first on a copy read back to the host (N int32: a synchronisation, and
// little beside the update's N D reads); a value outside [0, K) is an
// error and nothing is changed. Scratch, allocated and freed here: the
// sort's chunk counts (ceil(N/8192) K int32), order (N) and cluster sizes
// and starts (2K + 1).
func (b *Backend) KMeansUpdate(c, counts, x, assign *tensor.Tensor) error {
	const op = "kmeans update"
	N, K, D, err := kmeansShapes(op, x, c)
	if err != nil {
		return err
	}
	if err := i32Check(op, "counts", counts, K); err != nil {
		return err
	}
	if err := i32Check(op, "assign", assign, N); err != nil {
		return err
	}
	if N == 0 {
		countsMem, _ := counts.Device()
		return b.q.memsetD32(countsMem.Ptr, 0, K) // every cluster empty: c stays
	}
	host, err := b.ToHost(assign)
	if err != nil {
		return err
	}
	for i, k := range host.I32() {
		if k < 0 || int(k) >= K {
			return fmt.Errorf("cuda: %s: assign[%d] = %d is not a centroid of [0, %d)", op, i, k, K)
		}
	}
	s := &scratch{b: b}
	defer s.free()
	chunks := (N + kernels.KMeansSortChunk - 1) / kernels.KMeansSortChunk
	chunkCounts, err := s.alloc(tensor.I32, chunks, K)
	if err != nil {
		return err
	}
	sizes, err := s.alloc(tensor.I32, K)
	if err != nil {
		return err
	}
	start, err := s.alloc(tensor.I32, K+1)
	if err != nil {
		return err
	}
	order, err := s.alloc(tensor.I32, N)
	if err != nil {
		return err
	}
	ccMem, _ := chunkCounts.Device()
	if err := b.q.memsetD32(ccMem.Ptr, 0, chunks*K); err != nil {
		return err
	}
	sz := kernels.Sizes{N: N, K: K, H: D}
	for _, l := range []struct {
		kernel string
		args   *Args
	}{
		{"kmeans_chunk_counts", new(Args).Raw(chunkCounts).Raw(assign).I32(N).I32(K)},
		{"kmeans_chunk_offsets", new(Args).Raw(chunkCounts).Raw(sizes).I32(chunks).I32(K)},
		{"kmeans_cluster_starts", new(Args).Raw(start).Raw(sizes).I32(K)},
		{"kmeans_scatter", new(Args).Raw(order).Raw(chunkCounts).Raw(start).Raw(assign).I32(N).I32(K)},
		{"kmeans_segment_mean", new(Args).Raw(c).Raw(counts).Tensor(x).Raw(order).Raw(start).I32(K).I32(D)},
	} {
		if err := b.q.launch(op, l.kernel, sz, l.args); err != nil {
			return err
		}
	}
	return nil
}
