package tensor

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"unsafe"
)

// The CPU GEMM follows the Goto/BLIS scheme. op(B) is packed KC deep and NC
// wide at a time into slivers NR columns wide; each task packs a block of MC
// rows of op(A) into slivers MR rows tall; a register-blocked micro-kernel
// multiplies one A sliver by one B sliver and adds alpha times the MR x NR
// product into C. Packing is where dtypes and transposes are handled:
// whatever a and b are (F32, BF16 or F16, transposed or not), the
// micro-kernel sees contiguous slivers of one element type, float32 or (for
// the bf16 dot-product kernel) bf16 pairs. Tiles at the edges of C go
// through a scratch tile, so every shape works, not only multiples of the
// blocking.

// gemmElem is what packed slivers hold: float32, or two bf16 adjacent in
// depth packed in a uint32 (the even index in the low half).
type gemmElem interface{ float32 | uint32 }

// gemmKernel is a micro-kernel with the sliver sizes and blocking it wants.
type gemmKernel[E gemmElem] struct {
	name   string
	mr, nr int // micro-tile: rows of an A sliver, columns of a B sliver
	kc     int // depth of a packed block, in elements of K (even for bf16 pairs)
	mc     int // rows of A packed per task (a multiple of mr)
	nc     int // columns of B packed per panel (a multiple of nr)
	// kern adds alpha * (A sliver x B sliver) into the mr x nr tile at c
	// (rows ldc floats apart), or stores it there without reading c when
	// add is false (the first depth block when beta is 0). a holds d groups
	// of mr elements, b d groups of nr, where d is the depth in packed
	// elements.
	kern func(d int, a, b *E, c *float32, ldc int, alpha float32, add bool)
	// pack writes free indices [f0, f0+n) and depth [p0, p0+kc) of a view
	// as slivers of width free indices: sliver s is d groups of width
	// elements at dst[s*d*width:], the last one zero-padded.
	pack func(dst []E, v view, f0, n, p0, kc, width int)
	// pairs is true when an element holds two depth steps.
	pairs bool
}

// depth is how many packed elements kc steps of K take.
func (k *gemmKernel[E]) depth(kc int) int {
	if k.pairs {
		return (kc + 1) / 2
	}
	return kc
}

// gemmF32 runs every product; gemmBF16, when the CPU has bf16 dot
// products, runs those with two BF16 operands. Both are chosen once at
// start-up from the CPU's features (gemm_amd64.go).
var (
	gemmF32  = &goKernel
	gemmBF16 *gemmKernel[uint32]
)

// GEMMKernel names the micro-kernels the CPU MatMul uses: "avx512",
// "avx2-fma" or "go" for float32, preceded by "avx512-bf16+" when BF16 x
// BF16 products have their own kernel.
func GEMMKernel() string {
	if gemmBF16 != nil {
		return gemmBF16.name + "+" + gemmF32.name
	}
	return gemmF32.name
}

// The portable kernel: 6 x 16, the shape of the AVX2 one.
const (
	goMR = 6
	goNR = 16
)

var goKernel = gemmKernel[float32]{name: "go", mr: goMR, nr: goNR, kc: 256, mc: 120, nc: 3072,
	kern: kernelGo, pack: packF32}

// kernelGo is the portable micro-kernel.
func kernelGo(d int, a, b *float32, c *float32, ldc int, alpha float32, add bool) {
	as := unsafe.Slice(a, d*goMR)
	bs := unsafe.Slice(b, d*goNR)
	var acc [goMR][goNR]float32
	for p := 0; p < d; p++ {
		av := as[p*goMR : p*goMR+goMR]
		bv := bs[p*goNR : p*goNR+goNR]
		for i, ai := range av {
			row := &acc[i]
			for j, bj := range bv {
				row[j] += ai * bj
			}
		}
	}
	cs := unsafe.Slice(c, (goMR-1)*ldc+goNR)
	for i := range acc {
		row := cs[i*ldc : i*ldc+goNR]
		for j, v := range acc[i] {
			if add {
				row[j] += alpha * v
			} else {
				row[j] = alpha * v
			}
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

// view addresses an operand by free index (a row of op(A), a column of
// op(B)) and depth (the index summed over): element (f, p) is at
// f*freeStride + p*depthStride. Packing A and packing B are then the same.
type view struct {
	t                       *Tensor
	freeStride, depthStride int
}

// viewA is op(A) seen by rows; viewB is op(B) seen by columns.
func viewA(a operand) view {
	if a.trans { // stored [K, M]
		return view{a.t, 1, a.rows}
	}
	return view{a.t, a.cols, 1}
}

func viewB(b operand) view {
	if b.trans { // stored [N, K], like a weight in y = x W^T
		return view{b.t, b.rows, 1}
	}
	return view{b.t, 1, b.cols}
}

// MatMul implements Backend.
//
// With two BF16 operands on a CPU with AVX512_BF16 (GEMMKernel says
// "avx512-bf16+..."), the products go through VDPBF16PS, which reads bf16
// subnormal inputs as zero and flushes subnormal partial sums to zero (both
// below 2^-126, about 1.2e-38). Products of bf16 values are exact in
// float32, so otherwise the result is the float32 sum, in another order.
// Every other case converts the inputs to float32 and multiplies and adds
// in float32. Either way alpha scales each block's sum as it is added to C;
// it is not folded into the (rounded) inputs. With BF16Products, a float32
// operand times a bf16 one is first rounded to bf16 (roundForBF16).
func (cpu *CPU) MatMul(c, a, b *Tensor, transA, transB bool, alpha, beta float32) error {
	opA, opB, err := matmulShapes(c, a, b, transA, transB)
	if err != nil {
		return err
	}
	if cpu.BF16Products {
		a, b = roundForBF16(a, b), roundForBF16(b, a)
		opA.t, opB.t = a, b
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
	product := M > 0 && N > 0 && K > 0 && alpha != 0
	switch {
	case beta == 0 && product: // gemm overwrites C without reading it
	case beta == 0:
		clear(cf)
	case beta == 1:
	default:
		for i := range cf {
			cf[i] *= beta
		}
	}
	if product {
		if M <= rowsMaxM && !opA.trans && opB.trans && rowsDType(a.dtype) && rowsDType(b.dtype) {
			matmulRows(cf, a, b, M, N, K, alpha, beta == 0)
		} else if gemmBF16 != nil && a.dtype == BF16 && b.dtype == BF16 {
			gemm(cf, opA, opB, alpha, beta == 0, gemmBF16)
		} else {
			gemm(cf, opA, opB, alpha, beta == 0, gemmF32)
		}
	}
	if c.dtype != F32 {
		writeF32(c, 0, cf)
	}
	return nil
}

// roundForBF16 returns x rounded to a new bf16 tensor when x is float32
// and other bf16 (BF16Products' rounding), else x itself.
func roundForBF16(x, other *Tensor) *Tensor {
	if x.dtype != F32 || other.dtype != BF16 {
		return x
	}
	r := New(BF16, x.shape...)
	src, dst := x.F32(), r.U16()
	parallelFor(len(src), 1<<16, func(lo, hi int) { ConvertF32ToBF16(dst[lo:hi], src[lo:hi]) })
	return r
}

// rowsMaxM is the most rows of A that matmulRows takes: for so few rows,
// packing W^T (a transpose of all of W on every call) cost more than the
// products, as when decoding a token or a few through a linear layer.
const rowsMaxM = 8

// rowsDType says whether matmulRows takes an operand of dtype dt.
func rowsDType(dt DType) bool { return dt == F32 || dt == BF16 }

// matmulRows sets C = alpha A W^T (adding to C unless overwrite) for A
// [M, K] and W [N, K], both row-major, float32 or bf16, without packing:
// each element is the dot product of a row of A (widened once, if bf16)
// and a row of W (widened as it is read), through rowDots or rowDotsBF16,
// in float32. The columns of C are split among the workers in blocks of
// about 32 KiB of W, which every row of A reads while it is in cache. Each
// element is computed the same way whatever the split, so results do not
// depend on the thread count. (Bf16 subnormals are multiplied exactly
// here, where the VDPBF16PS kernel reads them as zero.)
func matmulRows(c []float32, a, w *Tensor, M, N, K int, alpha float32, overwrite bool) {
	var af []float32
	if a.dtype == F32 {
		af = a.F32()
	} else {
		af = a.ToF32()
	}
	block := max(4, (32<<10)/(w.dtype.Size()*K)) // rows of W
	parallelFor(N, max(block, 64), func(lo, hi int) {
		tmp := make([]float32, min(block, hi-lo))
		for j0 := lo; j0 < hi; j0 += block {
			j1 := min(j0+block, hi)
			for i := range M {
				dst := c[i*N+j0 : i*N+j1]
				if !overwrite {
					dst = tmp[:j1-j0]
				}
				if w.dtype == BF16 {
					rowDotsBF16(dst, af[i*K:(i+1)*K], w.U16()[j0*K:], K, alpha)
				} else {
					rowDots(dst, af[i*K:(i+1)*K], w.F32()[j0*K:], K, alpha)
				}
				if !overwrite {
					for j, x := range dst {
						c[i*N+j0+j] += x
					}
				}
			}
		}
	})
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

// Packed panels are reused across calls.
var (
	gemmBuffersF32  = sync.Pool{New: func() any { return new([]float32) }}
	gemmBuffersPair = sync.Pool{New: func() any { return new([]uint32) }}
)

// gemmPool is the pool of packed buffers of element type E.
func gemmPool[E gemmElem]() *sync.Pool {
	var zero E
	if _, ok := any(zero).(float32); ok {
		return &gemmBuffersF32
	}
	return &gemmBuffersPair
}

func getBuffer[E gemmElem](n int) *[]E {
	p := gemmPool[E]().Get().(*[]E)
	if cap(*p) < n {
		*p = make([]E, n)
	}
	*p = (*p)[:n]
	return p
}

func putBuffer[E gemmElem](p *[]E) { gemmPool[E]().Put(p) }

// gemm adds alpha * op(A) * op(B) into the row-major M x N matrix c, or
// stores it there when overwrite is set: c is then never read (its first
// depth block is stored rather than added), as BLAS's beta = 0 asks.
//
// Each element of C is summed in the same order whatever the number of
// threads: the tasks split C, never the depth, the KC blocks are added in
// order, and the tiles sit at multiples of MR and NR whatever size the
// tasks have (so the same edge tiles go through scratch).
func gemm[E gemmElem](c []float32, a, b operand, alpha float32, overwrite bool, k *gemmKernel[E]) {
	M, K, N := a.rows, a.cols, b.cols
	workers := runtime.GOMAXPROCS(0)
	if M*N*K < 64*64*64 {
		workers = 1 // too small to pay for goroutines
	}
	va, vb := viewA(a), viewB(b)
	mSlivers := (M + k.mr - 1) / k.mr
	blocks, groups := gemmTasks(k, workers, mSlivers, min(N, k.nc))

	dMax := k.depth(k.kc)
	bufB := getBuffer[E](dMax * ((k.nc + k.nr - 1) / k.nr * k.nr))
	defer putBuffer(bufB)
	bufA := make([]*[]E, workers) // one A block per worker
	for w := range bufA {
		bufA[w] = getBuffer[E](dMax * k.mr * ((mSlivers + blocks - 1) / blocks))
		defer putBuffer(bufA[w])
	}
	packedB := *bufB

	for j0 := 0; j0 < N; j0 += k.nc {
		nc := min(k.nc, N-j0)
		nSlivers := (nc + k.nr - 1) / k.nr
		for p0 := 0; p0 < K; p0 += k.kc {
			kc := min(k.kc, K-p0)
			d := k.depth(kc)
			add := p0 > 0 || !overwrite
			// The workers share the packing of B in a few wide chunks:
			// where the source rows are contiguous across slivers, one
			// chunk reads long runs of each, which the hardware prefetcher
			// follows (one sliver's worth of each of KC rows it does not).
			chunks := min(nSlivers, 2*workers)
			parallelRange(workers, chunks, func(_, ch int) {
				s0, s1 := split(nSlivers, chunks, ch), split(nSlivers, chunks, ch+1)
				k.pack(packedB[s0*k.nr*d:], vb, j0+s0*k.nr, min(nc, s1*k.nr)-s0*k.nr, p0, kc, k.nr)
			})
			// A task packs its block of A (Goto's order: it stays in this
			// core's L2) and multiplies it by its group of B slivers.
			parallelRange(workers, blocks*groups, func(w, task int) {
				b, g := task/groups, task%groups
				i0 := split(mSlivers, blocks, b) * k.mr
				i1 := min(M, split(mSlivers, blocks, b+1)*k.mr)
				s0, s1 := split(nSlivers, groups, g), split(nSlivers, groups, g+1)
				if s0 == s1 {
					return
				}
				packedA := *bufA[w]
				k.pack(packedA, va, i0, i1-i0, p0, kc, k.mr)
				macroKernel(k, c, N, packedA, packedB, d, i0, i1-i0, j0, nc, s0, s1, alpha, add)
			})
		}
	}
}

// gemmTasks splits the rows of C into blocks of about MC rows and, when
// that gives fewer than two blocks per worker, the columns of a panel into
// groups; several tasks per worker of about the same size balance well.
// Blocks and groups are made of whole slivers (see split).
func gemmTasks[E gemmElem](k *gemmKernel[E], workers, mSlivers, ncMax int) (blocks, groups int) {
	perBlock := max(1, k.mc/k.mr)
	blocks = (mSlivers + perBlock - 1) / perBlock
	groups = 1
	if workers == 1 {
		return blocks, groups
	}
	if blocks >= workers {
		blocks = (blocks + workers - 1) / workers * workers // the same number for everyone
	}
	blocks = min(blocks, mSlivers)
	if blocks < 2*workers {
		nSlivers := (ncMax + k.nr - 1) / k.nr
		groups = max(1, min(nSlivers, (2*workers+blocks-1)/blocks))
	}
	return blocks, groups
}

// split is where part i of n slivers cut into parts starts: the parts
// differ by at most one sliver.
func split(n, parts, i int) int { return i * n / parts }

// parallelRange runs fn(worker, 0..n-1) on up to workers goroutines (the
// caller's among them), handing out indices one at a time so that uneven
// tasks balance; worker is in [0, workers) and no two calls with the same
// worker run at once.
func parallelRange(workers, n int, fn func(worker, i int)) {
	if workers <= 1 || n <= 1 {
		for i := 0; i < n; i++ {
			fn(0, i)
		}
		return
	}
	var next atomic.Int64
	work := func(w int) {
		for {
			i := int(next.Add(1) - 1)
			if i >= n {
				return
			}
			fn(w, i)
		}
	}
	var wg sync.WaitGroup
	for w := 1; w < min(workers, n); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			work(w)
		}()
	}
	work(0)
	wg.Wait()
}

// macroKernel multiplies the packed rows [i0, i0+mc) of A by B slivers
// [s0, s1) of the panel at columns j0.. (nc wide) and adds the product
// into c (stores it when add is false). d is the packed depth.
func macroKernel[E gemmElem](k *gemmKernel[E], c []float32, ldc int, packedA, packedB []E, d, i0, mc, j0, nc, s0, s1 int, alpha float32, add bool) {
	var scratch [gemmMaxTile]float32
	mr, nr := k.mr, k.nr
	for s := s0; s < s1; s++ {
		jj := j0 + s*nr
		n := min(nr, j0+nc-jj)
		bp := &packedB[s*nr*d]
		for i := 0; i < mc; i += mr {
			m := min(mr, mc-i)
			ap := &packedA[i*d]
			if m == mr && n == nr {
				k.kern(d, ap, bp, &c[(i0+i)*ldc+jj], ldc, alpha, add)
				continue
			}
			k.kern(d, ap, bp, &scratch[0], nr, alpha, false)
			for r := 0; r < m; r++ {
				row := c[(i0+i+r)*ldc+jj : (i0+i+r)*ldc+jj+n]
				tile := scratch[r*nr : r*nr+n]
				if !add {
					copy(row, tile)
					continue
				}
				for q, x := range tile {
					row[q] += x
				}
			}
		}
	}
}

// gemmMaxTile bounds mr*nr over the kernels (12 x 32 for AVX-512).
const gemmMaxTile = 12 * 32

// packF32 is gemmKernel.pack for float32 slivers.
func packF32(dst []float32, v view, f0, n, p0, kc, width int) {
	slivers := (n + width - 1) / width
	dst = dst[:slivers*kc*width]
	if n%width != 0 {
		clear(dst[(slivers-1)*kc*width:])
	}
	if v.depthStride != 1 { // the free values at each depth are contiguous
		for p := 0; p < kc; p++ {
			row := (p0+p)*v.depthStride + f0
			for s := 0; s < slivers; s++ {
				q0 := s * width
				w := min(width, n-q0)
				readF32(dst[(s*kc+p)*width:][:w], v.t, row+q0)
			}
		}
		return
	}
	// Each free index is contiguous in depth: transpose while converting,
	// with the assembly where it can (whole groups of 4 rows, 8 steps).
	for s := 0; s < slivers; s++ {
		out := dst[s*kc*width : (s+1)*kc*width]
		f, m := f0+s*width, min(width, n-s*width)
		m4, d8 := 0, 0
		if useAsmTranspose && (v.t.dtype == F32 || v.t.dtype == BF16) {
			m4, d8 = m&^3, kc&^7
			if m4 > 0 && d8 > 0 {
				off := f*v.freeStride + p0
				if v.t.dtype == F32 {
					transposeInChunks(transposeDwords, unsafe.Pointer(&out[0]), unsafe.Pointer(&v.t.F32()[off]), v.freeStride*4, 4, m4, d8, width)
				} else {
					transposeInChunks(transposeBF16, unsafe.Pointer(&out[0]), unsafe.Pointer(&v.t.U16()[off]), v.freeStride*2, 2, m4, d8, width)
				}
			}
		}
		transposeF32(out, v, f, 0, m4, p0, d8, kc, width) // the depth the assembly left
		transposeF32(out, v, f, m4, m, p0, 0, kc, width)  // the rows it left
	}
}

// transposeInChunks runs an assembly transpose (transposeDwords or
// transposeBF16: n rows, d depth steps, into a sliver of width) on
// packDepthChunk depth steps of every row at a time. The assembly walks
// four rows through all their depth, writing 16 bytes of each of the
// sliver's lines; over a whole sliver (64 KiB for bf16 pairs) the lines
// left L1 before the next four rows wrote theirs. In chunks, packing a
// 14336x4096 bf16 W^T read it at 10.2-11.9 GB/s against 9.0-9.4 (Zen 5,
// one thread). srcBytes is the size of one depth step in the source.
func transposeInChunks(f func(dst, src unsafe.Pointer, srcStride, n, d, width int), dst, src unsafe.Pointer, srcStride, srcBytes, n, d, width int) {
	for p := 0; p < d; p += packDepthChunk {
		f(unsafe.Add(dst, 4*p*width), unsafe.Add(src, p*srcBytes), srcStride, n, min(packDepthChunk, d-p), width)
	}
}

// packDepthChunk is transposeInChunks' chunk, a multiple of 8: 64 steps of
// a 32-wide sliver are 8 KiB.
const packDepthChunk = 64

// transposeF32 does packF32's transpose for free indices [f0+q0, f0+q1)
// and depth [p0+pa, p0+pb), packDepthBlock steps at a time so that the
// lines written stay in L1 (a whole sliver of width floats per step does
// not).
func transposeF32(dst []float32, v view, f0, q0, q1, p0, pa, pb, width int) {
	for b0 := pa; b0 < pb; b0 += packDepthBlock {
		pn := min(packDepthBlock, pb-b0)
		out := dst[b0*width:]
		for q := q0; q < q1; q++ {
			off := (f0+q)*v.freeStride + p0 + b0
			switch v.t.dtype {
			case F32:
				for p, x := range v.t.F32()[off : off+pn] {
					out[p*width+q] = x
				}
			case BF16:
				for p, h := range v.t.U16()[off : off+pn] {
					out[p*width+q] = BF16ToF32(h)
				}
			default:
				var line [packDepthBlock]float32
				readF32(line[:pn], v.t, off)
				for p, x := range line[:pn] {
					out[p*width+q] = x
				}
			}
		}
	}
}

// packDepthBlock is how many depth steps a portable transposing pack does
// at once.
const packDepthBlock = 16

// packPairs is gemmKernel.pack for bf16 pairs: depth p and p+1 of one free
// index share an element, p in the low half; an odd kc is padded with zero.
// The view must be BF16.
func packPairs(dst []uint32, v view, f0, n, p0, kc, width int) {
	d := (kc + 1) / 2
	slivers := (n + width - 1) / width
	dst = dst[:slivers*d*width]
	if n%width != 0 {
		clear(dst[(slivers-1)*d*width:])
	}
	u := v.t.U16()
	if v.depthStride != 1 { // interleave two rows of contiguous values
		for pp := 0; pp < d; pp++ {
			lo := u[(p0+2*pp)*v.depthStride+f0:][:n]
			hi := lo // an odd kc: the last pair is (x, 0)
			if 2*pp+1 < kc {
				hi = u[(p0+2*pp+1)*v.depthStride+f0:][:n]
			}
			// The assembly takes the row pair across every sliver in one
			// call (one call per sliver cost more than its 32 pairs), up
			// to a multiple of 8 columns; Go the rest.
			done := 0
			if useAsmTranspose && width%8 == 0 && 2*pp+1 < kc && n >= 8 {
				done = n &^ 7
				interleaveBF16(&dst[pp*width], &lo[0], &hi[0], done, width, d*width)
			}
			for s := done / width; s < slivers; s++ {
				q0 := s * width
				out := dst[(s*d+pp)*width:][:min(width, n-q0)]
				if 2*pp+1 == kc {
					for q := range out {
						out[q] = uint32(lo[q0+q])
					}
					continue
				}
				for q := max(done-q0, 0); q < len(out); q++ {
					out[q] = uint32(lo[q0+q]) | uint32(hi[q0+q])<<16
				}
			}
		}
		return
	}
	// Each free index is contiguous in depth, so its pairs are already
	// adjacent: a transpose of 32-bit elements, but for an odd last one.
	full := kc / 2
	for s := 0; s < slivers; s++ {
		out := dst[s*d*width : (s+1)*d*width]
		f, m := f0+s*width, min(width, n-s*width)
		m4, d8 := 0, 0
		if useAsmTranspose {
			m4, d8 = m&^3, full&^7
			if m4 > 0 && d8 > 0 {
				off := f*v.freeStride + p0
				transposeInChunks(transposeDwords, unsafe.Pointer(&out[0]), unsafe.Pointer(&u[off]), v.freeStride*2, 4, m4, d8, width)
			}
		}
		transposePairs(out, u, v.freeStride, f, 0, m4, p0, d8, full, width)
		transposePairs(out, u, v.freeStride, f, m4, m, p0, 0, full, width)
		if kc%2 == 1 {
			for q := 0; q < m; q++ {
				out[(d-1)*width+q] = uint32(u[(f+q)*v.freeStride+p0+kc-1])
			}
		}
	}
}

// transposePairs does packPairs' transpose for free indices [f0+q0, f0+q1)
// and whole pairs [pa, pb) of the depth from p0, as transposeF32 does.
func transposePairs(dst []uint32, u []uint16, stride, f0, q0, q1, p0, pa, pb, width int) {
	for b0 := pa; b0 < pb; b0 += packDepthBlock {
		pn := min(packDepthBlock, pb-b0)
		out := dst[b0*width:]
		for q := q0; q < q1; q++ {
			src := u[(f0+q)*stride+p0+2*b0:][:2*pn]
			for p := 0; p < pn; p++ {
				out[p*width+q] = uint32(src[2*p]) | uint32(src[2*p+1])<<16
			}
		}
	}
}
