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

// kmeansShapes checks x [N, D] (any float dtype) and c F32 [K, D], all on
// the device, and returns N, K and D.
func kmeansShapes(op string, x, c *tensor.Tensor) (N, K, D int, err error) {
	if err := floatCheck(op, x, c); err != nil {
		return 0, 0, 0, err
	}
	if x.Rank() != 2 || c.Rank() != 2 {
		return 0, 0, 0, fmt.Errorf("cuda: %s: x %v and c %v must be [N, D] and [K, D]", op, x, c)
	}
	N, D, K = x.Dim(0), x.Dim(1), c.Dim(0)
	switch {
	case c.DType() != tensor.F32:
		return 0, 0, 0, fmt.Errorf("cuda: %s: centroids %v must be F32", op, c)
	case c.Dim(1) != D:
		return 0, 0, 0, fmt.Errorf("cuda: %s: centroids %v do not have the %d dimensions of x %v", op, c, D, x)
	case K == 0:
		return 0, 0, 0, fmt.Errorf("cuda: %s: no centroids (c %v)", op, c)
	case D == 0:
		return 0, 0, 0, fmt.Errorf("cuda: %s: points without dimensions (x %v)", op, x)
	}
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
// dist[i] the squared distance to it, computed as ||x||^2 - 2 x.c + ||c||^2
// in float32 (so two centroids whose distances differ by less than the
// rounding of those terms may swap, and dist may be a little below 0 for
// a point on its centroid).
//
// Operands, all device tensors the caller allocates and frees: x [N, D]
// (F32, BF16 or F16), c F32 [K, D], assign I32 [N], dist F32 [N]. The row
// norms are scratch, allocated and freed here. Like the other operations
// it only queues the work; ToHost of assign or dist waits for it.
func (b *Backend) KMeansAssign(assign, dist, x, c *tensor.Tensor) error {
	const op = "kmeans assign"
	N, K, D, err := kmeansShapes(op, x, c)
	if err != nil {
		return err
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
	xn, err := b.alloc(tensor.F32, N)
	if err != nil {
		return err
	}
	defer b.Free(xn)
	cn, err := b.alloc(tensor.F32, K)
	if err != nil {
		return err
	}
	defer b.Free(cn)
	args := new(Args).Raw(cn).Tensor(c).I32(K).I32(D)
	if err := b.q.launch(op, "kmeans_sqnorm", kernels.Sizes{N: K}, args); err != nil {
		return err
	}
	args.Reset().Raw(xn).Tensor(x).I32(N).I32(D)
	if err := b.q.launch(op, "kmeans_sqnorm", kernels.Sizes{N: N}, args); err != nil {
		return err
	}
	args.Reset().Raw(assign).Raw(dist).Tensor(x).Raw(xn).Raw(c).Raw(cn).I32(N).I32(K).I32(D)
	return b.q.launch(op, "kmeans_assign", kernels.Sizes{N: N, K: K}, args)
}

// KMeansUpdate moves each centroid to the mean of the points assigned to
// it: c[k] = mean of the rows i of x with assign[i] = k, counts[k] their
// number. A centroid no point is assigned to keeps its value, bit for bit,
// with count 0: the caller finds empty clusters in counts and decides what
// to do with them. The sums are float32 atomics, so their order, and the
// last bits of c, vary from run to run.
//
// Operands, all device tensors the caller allocates and frees: c F32
// [K, D] (read and written), counts I32 [K] (written), x [N, D] (F32, BF16
// or F16), assign I32 [N] with values in [0, K), as KMeansAssign writes
// them. The kernel adds each point into the row assign names, so the
// values are checked first on a copy read back to the host (N int32: a
// synchronisation, and little beside the update's N D reads); a value
// outside [0, K) is an error and nothing is changed. The sums are scratch,
// allocated and freed here.
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
	if N > 0 {
		host, err := b.ToHost(assign)
		if err != nil {
			return err
		}
		for i, k := range host.I32() {
			if k < 0 || int(k) >= K {
				return fmt.Errorf("cuda: %s: assign[%d] = %d is not a centroid of [0, %d)", op, i, k, K)
			}
		}
	}
	countsMem, _ := counts.Device()
	if err := b.q.memsetD32(countsMem.Ptr, 0, K); err != nil {
		return err
	}
	if N == 0 {
		return nil // every cluster empty: c stays
	}
	sums, err := b.alloc(tensor.F32, K, D)
	if err != nil {
		return err
	}
	defer b.Free(sums)
	sumsMem, _ := sums.Device()
	if err := b.q.memsetD32(sumsMem.Ptr, 0, K*D); err != nil {
		return err
	}
	args := new(Args).Raw(sums).Raw(counts).Tensor(x).Raw(assign).I32(N).I32(D)
	if err := b.q.launch(op, "kmeans_accumulate", kernels.Sizes{N: N, H: D}, args); err != nil {
		return err
	}
	args.Reset().Raw(c).Raw(sums).Raw(counts).I32(K).I32(D)
	return b.q.launch(op, "kmeans_divide", kernels.Sizes{K: K, H: D}, args)
}
