package tensor

// Two loops over strided rows: the dots of one vector with many rows, and
// a weighted sum of rows. AttentionKV decodes with them (the scores q.k_s of
// every cached key, a cache row holding every kv head, and the weighted sum
// of the cached values), and matmulRows takes a few rows of A times W^T
// with the first, or with its twin over rows of bf16. Eight lanes at a time in assembly where the CPU allows
// (rowdot_amd64.s) and the row length is a multiple of 8.

// rowKernel is one implementation of the two loops; rows holds row s at
// rows[s*stride:], and len(q) = len(o) = d.
type rowKernel struct {
	name string
	// dots sets dst[s] = scale * (q . row s) for s < len(dst).
	dots func(dst, q, rows []float32, stride int, scale float32)
	// axpy adds p[s] * row s to o for s < len(p).
	axpy func(o, p, rows []float32, stride int)
	// dotsBF16 is dots over rows of bf16, each value widened to float32.
	dotsBF16 func(dst, q []float32, rows []uint16, stride int, scale float32)
}

// rowGoKernel is the portable implementation; rowImpl the one in use,
// chosen at start-up from the CPU's features (rowdot_amd64.go).
var (
	rowGoKernel = rowKernel{name: "go", dots: rowDotsGo, axpy: rowAxpyGo, dotsBF16: rowDotsBF16Go}
	rowImpl     = &rowGoKernel
)

// rowDots and rowAxpy run rowImpl's loops, or the portable ones where the
// row length is not a multiple of 8.
func rowDots(dst, q, rows []float32, stride int, scale float32) {
	if len(dst) == 0 {
		return
	}
	if len(q) == 0 || len(q)%8 != 0 {
		rowDotsGo(dst, q, rows, stride, scale)
		return
	}
	_ = rows[(len(dst)-1)*stride+len(q)-1] // the assembly does not check
	rowImpl.dots(dst, q, rows, stride, scale)
}

func rowDotsBF16(dst, q []float32, rows []uint16, stride int, scale float32) {
	if len(dst) == 0 {
		return
	}
	if len(q) == 0 || len(q)%8 != 0 {
		rowDotsBF16Go(dst, q, rows, stride, scale)
		return
	}
	_ = rows[(len(dst)-1)*stride+len(q)-1] // the assembly does not check
	rowImpl.dotsBF16(dst, q, rows, stride, scale)
}

func rowAxpy(o, p, rows []float32, stride int) {
	if len(p) == 0 {
		return
	}
	if len(o) == 0 || len(o)%8 != 0 {
		rowAxpyGo(o, p, rows, stride)
		return
	}
	_ = rows[(len(p)-1)*stride+len(o)-1] // the assembly does not check
	rowImpl.axpy(o, p, rows, stride)
}

func rowDotsGo(dst, q, rows []float32, stride int, scale float32) {
	for s := range dst {
		dst[s] = scale * dot(q, rows[s*stride:s*stride+len(q)])
	}
}

func rowDotsBF16Go(dst, q []float32, rows []uint16, stride int, scale float32) {
	row := make([]float32, len(q))
	for s := range dst {
		ConvertBF16ToF32(row, rows[s*stride:s*stride+len(q)])
		dst[s] = scale * dot(q, row)
	}
}

func rowAxpyGo(o, p, rows []float32, stride int) {
	for s, w := range p {
		for i, x := range rows[s*stride : s*stride+len(o)] {
			o[i] += w * x
		}
	}
}
