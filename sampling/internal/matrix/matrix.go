// Package matrix holds what the sampling packages share below their APIs:
// validated host matrices of row vectors, products through a backend's
// GEMM, parallel loops over rows, and the seeded random streams.
package matrix

import (
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"sync"

	"github.com/compassml/compass/tensor"
)

// BlockBytes bounds a [rows x K] block of distances or similarities held
// at once.
const BlockBytes = 16 << 20

// Matrix is validated input: a host F32 [N, D] tensor of finite values.
type Matrix struct {
	T    *tensor.Tensor
	V    []float32 // T's values, row-major
	N, D int
}

// Check validates x and returns it as F32 (BF16 and F16 are widened
// into a copy). what names the input in errors.
func Check(what string, x *tensor.Tensor) (*Matrix, error) {
	if x == nil {
		return nil, fmt.Errorf("%s: empty input: no tensor", what)
	}
	if !x.OnHost() {
		return nil, fmt.Errorf("%s: %v is on a device; pass host memory", what, x)
	}
	if x.Rank() != 2 {
		return nil, fmt.Errorf("%s: want a [rows, dim] matrix, got %v", what, x)
	}
	n, d := x.Dim(0), x.Dim(1)
	if n == 0 {
		return nil, fmt.Errorf("%s: empty input: %v has no rows", what, x)
	}
	if d == 0 {
		return nil, fmt.Errorf("%s: empty input: %v has no columns", what, x)
	}
	switch x.DType() {
	case tensor.F32:
	case tensor.BF16, tensor.F16:
		f := tensor.New(tensor.F32, n, d)
		if err := tensor.NewCPU().Copy(f, x); err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		x = f
	default:
		return nil, fmt.Errorf("%s: %v is not a floating-point tensor", what, x)
	}
	m := &Matrix{T: x, V: x.F32(), N: n, D: d}
	if bad := firstNonFinite(m); bad >= 0 {
		row, col := bad/d, bad%d
		return nil, fmt.Errorf("%s: row %d, column %d is %v (NaN or Inf are not allowed)", what, row, col, m.V[bad])
	}
	return m, nil
}

// firstNonFinite returns the index of the first NaN or Inf value, or -1.
func firstNonFinite(m *Matrix) int {
	found := make([]int, Workers(m.N))
	ParallelChunks(m.N, len(found), func(w, lo, hi int) {
		found[w] = -1
		for i, x := range m.V[lo*m.D : hi*m.D] {
			if x-x != 0 { // NaN - NaN and Inf - Inf are NaN; finite x - x is 0
				found[w] = lo*m.D + i
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

// Row returns row i.
func (m *Matrix) Row(i int) []float32 { return m.V[i*m.D : (i+1)*m.D] }

// Normalized returns m with unit rows for spherical k-means: m itself when
// every row already has norm 1 (within 1e-3), else a normalised copy. A zero
// row has no direction and is an error naming it.
func (m *Matrix) Normalized(what string) (*Matrix, error) {
	unit, err := m.unitRows(what)
	if err != nil || unit {
		return m, err
	}
	t := tensor.New(tensor.F32, m.N, m.D)
	c := &Matrix{T: t, V: t.F32(), N: m.N, D: m.D}
	m.normalizeInto(c)
	return c, nil
}

// NormalizeInPlace gives m the rows Normalized would return, in place, for
// a matrix its caller owns: the k-means and silhouettes that follow find
// unit rows and make no copy of their own.
func (m *Matrix) NormalizeInPlace(what string) error {
	unit, err := m.unitRows(what)
	if err != nil || unit {
		return err
	}
	m.normalizeInto(m)
	return nil
}

// unitRows reports whether every row has norm 1 within 1e-3; a zero row is
// an error.
func (m *Matrix) unitRows(what string) (bool, error) {
	unit := true
	for i := 0; i < m.N; i++ {
		s := Norm2(m.Row(i))
		if s == 0 {
			return false, fmt.Errorf("%s: row %d is all zeros and has no direction for spherical k-means", what, i)
		}
		if math.Abs(math.Sqrt(s)-1) > 1e-3 {
			unit = false
		}
	}
	return unit, nil
}

// normalizeInto writes m's rows divided by their norms into dst, which may
// be m.
func (m *Matrix) normalizeInto(dst *Matrix) {
	ParallelChunks(m.N, Workers(m.N), func(_, lo, hi int) {
		for i := lo; i < hi; i++ {
			src, out := m.Row(i), dst.Row(i)
			inv := 1 / math.Sqrt(Norm2(src))
			for j, x := range src {
				out[j] = float32(float64(x) * inv)
			}
		}
	})
}

// Norm2 is the squared euclidean norm of x, summed in float64.
func Norm2(x []float32) float64 {
	var s float64
	for _, v := range x {
		s += float64(v) * float64(v)
	}
	return s
}

// NewRand is the random source of restart (or stream) r of a seed. Each
// use has its own stream (k-means restarts 0.., the silhouette sample 1,
// the within-cluster shuffle 2, the baselines 3), so that one seed gives
// the same choices whatever else ran.
func NewRand(seed, r uint64) *rand.Rand {
	return rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15^r))
}

// Rows returns rows [lo, hi) of m as a matrix that shares m's memory.
func (m *Matrix) Rows(lo, hi int) *Matrix {
	t, err := m.T.Slice(lo, hi)
	if err != nil {
		panic(err) // a caller's bounds, not input
	}
	return &Matrix{T: t, V: m.V[lo*m.D : hi*m.D], N: hi - lo, D: m.D}
}

// Gather copies the given rows of m into a new matrix.
func (m *Matrix) Gather(rows []int) *Matrix {
	t := tensor.New(tensor.F32, len(rows), m.D)
	g := &Matrix{T: t, V: t.F32(), N: len(rows), D: m.D}
	for i, r := range rows {
		copy(g.Row(i), m.Row(r))
	}
	return g
}

// MatMulHost sets out = alpha a b^T for host tensors through the backend,
// moving operands to the device and the result back where the backend is
// not the CPU.
func MatMulHost(b tensor.Backend, out, a, bt *tensor.Tensor, alpha float32) error {
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

// Sum64 sums x in order.
func Sum64(x []float64) float64 {
	var s float64
	for _, v := range x {
		s += v
	}
	return s
}

// Workers is how many goroutines to use for n independent items.
func Workers(n int) int { return max(1, min(n, runtime.GOMAXPROCS(0))) }

// ParallelChunks splits [0, n) into parts contiguous chunks (in order) and
// runs fn(part, lo, hi) for each on its own goroutine.
func ParallelChunks(n, parts int, fn func(part, lo, hi int)) {
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

// ParallelTasks runs fn(0..n-1) on up to GOMAXPROCS goroutines.
func ParallelTasks(n int, fn func(i int)) {
	w := Workers(n)
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

// NormalizeRows scales each row of v ([*, d]) to unit length; zero rows
// stay zero.
func NormalizeRows(v []float32, d int) {
	for i := 0; i+d <= len(v); i += d {
		r := v[i : i+d]
		if s := Norm2(r); s > 0 {
			inv := 1 / math.Sqrt(s)
			for j := range r {
				r[j] = float32(float64(r[j]) * inv)
			}
		}
	}
}

// Concat stacks matrices (nil ones skipped) into one.
func Concat(parts []*Matrix) *Matrix {
	n, d := 0, 0
	for _, p := range parts {
		if p != nil {
			n += p.N
			d = p.D
		}
	}
	t := tensor.New(tensor.F32, n, d)
	m := &Matrix{T: t, V: t.F32(), N: n, D: d}
	off := 0
	for _, p := range parts {
		if p != nil {
			copy(m.V[off:], p.V)
			off += len(p.V)
		}
	}
	return m
}
