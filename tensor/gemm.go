package tensor

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"unsafe"
)

// The CPU GEMM follows the Goto/BLIS scheme: op(B) is packed, KC rows by NC
// columns at a time, into slivers NR columns wide; op(A) into slivers MR rows
// tall; a register-blocked micro-kernel multiplies one A sliver by one B
// sliver, adding an MR x NR tile into C. Packing is where dtypes and
// transposes are handled: whatever a and b are (F32, BF16 or F16, transposed
// or not), the micro-kernel sees contiguous float32, with alpha folded into
// the packed A. Tiles at the edges of C go through a scratch tile, so every
// shape works, not only multiples of the blocking.
const (
	gemmMR = 6    // rows of the micro-tile (6 x 2 ymm accumulators)
	gemmNR = 16   // columns of the micro-tile (two 8-float ymm registers)
	gemmKC = 256  // depth of a packed panel: an A sliver (6 KiB) and a B sliver (16 KiB) stay in L1
	gemmMC = 120  // rows of A packed per block: 120 KiB, in L2
	gemmNC = 3072 // columns of B packed per panel: 3 MiB, in L3
)

// microKernel adds op(A) sliver x op(B) sliver, over depth kc, into the MR x
// NR tile at c (row stride ldc floats). a holds kc groups of MR floats, b kc
// groups of NR floats. Chosen once at start-up from the CPU's features.
var microKernel = kernelGo

// GEMMKernel says which micro-kernel the CPU MatMul uses: "avx2-fma" or "go".
func GEMMKernel() string {
	if useAVX2 {
		return "avx2-fma"
	}
	return "go"
}

// kernelGo is the portable micro-kernel.
func kernelGo(kc int, a, b, c *float32, ldc int) {
	as := unsafe.Slice(a, kc*gemmMR)
	bs := unsafe.Slice(b, kc*gemmNR)
	var acc [gemmMR][gemmNR]float32
	for p := 0; p < kc; p++ {
		av := as[p*gemmMR : p*gemmMR+gemmMR]
		bv := bs[p*gemmNR : p*gemmNR+gemmNR]
		for i, ai := range av {
			row := &acc[i]
			for j, bj := range bv {
				row[j] += ai * bj
			}
		}
	}
	cs := unsafe.Slice(c, (gemmMR-1)*ldc+gemmNR)
	for i := range acc {
		row := cs[i*ldc : i*ldc+gemmNR]
		for j, v := range acc[i] {
			row[j] += v
		}
	}
}

// operand is op(x) of a product seen as a rows x cols matrix.
type operand struct {
	t     *Tensor
	rows  int
	cols  int
	trans bool // t is stored as [cols, rows]
}

// MatMul implements Backend.
func (*CPU) MatMul(c, a, b *Tensor, transA, transB bool, alpha, beta float32) error {
	opA, opB, err := matmulShapes(c, a, b, transA, transB)
	if err != nil {
		return err
	}
	M, K, N := opA.rows, opA.cols, opB.cols

	// C is computed in float32; a bf16 or f16 C goes through a float32 copy.
	var cf []float32
	if c.dtype == F32 {
		cf = c.F32()
	} else {
		cf = make([]float32, M*N)
		if beta != 0 {
			readF32(cf, c, 0)
		}
	}
	switch beta {
	case 0:
		clear(cf)
	case 1:
	default:
		for i := range cf {
			cf[i] *= beta
		}
	}
	if M > 0 && N > 0 && K > 0 && alpha != 0 {
		gemm(cf, opA, opB, alpha)
	}
	if c.dtype != F32 {
		writeF32(c, 0, cf)
	}
	return nil
}

func matmulShapes(c, a, b *Tensor, transA, transB bool) (opA, opB operand, err error) {
	if err := floatCheck("matmul", c, a, b); err != nil {
		return opA, opB, err
	}
	if a.Rank() < 2 || b.Rank() != 2 {
		return opA, opB, fmt.Errorf("tensor: matmul: a %v must have rank >= 2 and b %v rank 2", a, b)
	}
	if transA && a.Rank() != 2 {
		return opA, opB, fmt.Errorf("tensor: matmul: a transposed must have rank 2, got %v", a)
	}
	k := a.Dim(-1)
	m := a.NumElements()
	if k > 0 {
		m /= k
	} else {
		m = 1
		for _, d := range a.shape[:a.Rank()-1] {
			m *= d
		}
	}
	opA = operand{t: a, rows: m, cols: k}
	if transA {
		opA = operand{t: a, rows: a.Dim(1), cols: a.Dim(0), trans: true}
	}
	opB = operand{t: b, rows: b.Dim(0), cols: b.Dim(1)}
	if transB {
		opB = operand{t: b, rows: b.Dim(1), cols: b.Dim(0), trans: true}
	}
	if opA.cols != opB.rows {
		return opA, opB, fmt.Errorf("tensor: matmul: inner dimensions differ: op(a) is [%d %d], op(b) is [%d %d]",
			opA.rows, opA.cols, opB.rows, opB.cols)
	}
	if c.NumElements() != opA.rows*opB.cols || c.Rank() == 0 || c.Dim(-1) != opB.cols {
		return opA, opB, fmt.Errorf("tensor: matmul: c %v is not [%d %d]", c, opA.rows, opB.cols)
	}
	return opA, opB, nil
}

// gemmBuffers are the packed panels, reused across calls.
var gemmBuffers = sync.Pool{New: func() any { return new([]float32) }}

func getBuffer(n int) *[]float32 {
	p := gemmBuffers.Get().(*[]float32)
	if cap(*p) < n {
		*p = make([]float32, n)
	}
	*p = (*p)[:n]
	return p
}

// gemm adds alpha * op(A) * op(B) into the row-major M x N matrix c.
func gemm(c []float32, a, b operand, alpha float32) {
	M, K, N := a.rows, a.cols, b.cols
	workers := runtime.GOMAXPROCS(0)
	if M*N*K < 64*64*64 {
		workers = 1 // too small to pay for goroutines
	}
	mPanels := (M + gemmMR - 1) / gemmMR
	bufA := getBuffer(mPanels * gemmMR * gemmKC)
	bufB := getBuffer(gemmKC * gemmNC)
	defer gemmBuffers.Put(bufA)
	defer gemmBuffers.Put(bufB)
	packedA, packedB := *bufA, *bufB

	for j0 := 0; j0 < N; j0 += gemmNC {
		nc := min(gemmNC, N-j0)
		nPanels := (nc + gemmNR - 1) / gemmNR
		for p0 := 0; p0 < K; p0 += gemmKC {
			kc := min(gemmKC, K-p0)
			// Pack this panel of B and all of A's rows for depth [p0, p0+kc).
			// A is packed whole (not one MC block at a time) so that all
			// workers can share it; a block is read back from L3 once per
			// macro-kernel, which is small next to its reuse across slivers.
			parallelRange(workers, nPanels+mPanels, func(s int) {
				if s < nPanels {
					packB(packedB[s*gemmNR*kc:], b, p0, kc, j0+s*gemmNR, min(gemmNR, nc-s*gemmNR))
				} else {
					s -= nPanels
					packA(packedA[s*gemmMR*kc:], a, s*gemmMR, min(gemmMR, M-s*gemmMR), p0, kc, alpha)
				}
			})
			// Tasks are (block of MC rows) x (group of B slivers); split the
			// columns too when there are fewer row blocks than workers.
			mBlocks := (M + gemmMC - 1) / gemmMC
			groups := 1
			if mBlocks < 4*workers {
				groups = min(nPanels, (4*workers+mBlocks-1)/mBlocks)
			}
			perGroup := (nPanels + groups - 1) / groups
			parallelRange(workers, mBlocks*groups, func(task int) {
				i0 := (task / groups) * gemmMC
				s0 := (task % groups) * perGroup
				macroKernel(c, N, packedA, packedB, kc, i0, min(gemmMC, M-i0), j0, nc, s0, min(s0+perGroup, nPanels))
			})
		}
	}
}

// parallelRange runs fn(0..n-1) on up to workers goroutines, handing out
// indices one at a time so that uneven tasks balance.
func parallelRange(workers, n int, fn func(i int)) {
	if workers <= 1 || n <= 1 {
		for i := 0; i < n; i++ {
			fn(i)
		}
		return
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < min(workers, n); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				fn(i)
			}
		}()
	}
	wg.Wait()
}

// macroKernel multiplies rows [i0, i0+mc) of packed A by B slivers
// [s0, s1) of the panel at columns j0.. into c.
func macroKernel(c []float32, ldc int, packedA, packedB []float32, kc, i0, mc, j0, nc, s0, s1 int) {
	var scratch [gemmMR * gemmNR]float32
	for s := s0; s < s1; s++ {
		jj := j0 + s*gemmNR
		n := min(gemmNR, j0+nc-jj)
		bp := &packedB[s*gemmNR*kc]
		for i := i0; i < i0+mc; i += gemmMR {
			m := min(gemmMR, i0+mc-i)
			ap := &packedA[(i/gemmMR)*gemmMR*kc]
			if m == gemmMR && n == gemmNR {
				microKernel(kc, ap, bp, &c[i*ldc+jj], ldc)
				continue
			}
			clear(scratch[:])
			microKernel(kc, ap, bp, &scratch[0], gemmNR)
			for r := 0; r < m; r++ {
				row := c[(i+r)*ldc+jj : (i+r)*ldc+jj+n]
				for q := range row {
					row[q] += scratch[r*gemmNR+q]
				}
			}
		}
	}
}

// packA writes rows [i0, i0+m) (m <= MR) and depth [p0, p0+kc) of alpha *
// op(A) as kc groups of MR floats, zero-padding missing rows.
func packA(dst []float32, a operand, i0, m, p0, kc int, alpha float32) {
	dst = dst[:kc*gemmMR]
	var line [gemmKC]float32
	if m < gemmMR {
		clear(dst)
	}
	if !a.trans { // A is [M, K]: each row is contiguous in depth
		for r := 0; r < m; r++ {
			v := line[:kc]
			readF32(v, a.t, (i0+r)*a.cols+p0)
			for p, x := range v {
				dst[p*gemmMR+r] = alpha * x
			}
		}
		return
	}
	// A is stored [K, M]: for each depth the m rows are contiguous.
	for p := 0; p < kc; p++ {
		v := line[:m]
		readF32(v, a.t, (p0+p)*a.rows+i0)
		for r, x := range v {
			dst[p*gemmMR+r] = alpha * x
		}
	}
}

// packB writes depth [p0, p0+kc) and columns [j0, j0+n) (n <= NR) of op(B)
// as kc groups of NR floats, zero-padding missing columns.
func packB(dst []float32, b operand, p0, kc, j0, n int) {
	dst = dst[:kc*gemmNR]
	var line [gemmKC]float32
	if n < gemmNR {
		clear(dst)
	}
	if b.trans { // B is stored [N, K], like a weight in y = x W^T
		for q := 0; q < n; q++ {
			v := line[:kc]
			readF32(v, b.t, (j0+q)*b.rows+p0)
			for p, x := range v {
				dst[p*gemmNR+q] = x
			}
		}
		return
	}
	for p := 0; p < kc; p++ { // B is [K, N]: the n columns of a row are contiguous
		readF32(dst[p*gemmNR:p*gemmNR+n], b.t, (p0+p)*b.cols+j0)
	}
}
