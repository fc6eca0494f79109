package tensor

import "golang.org/x/sys/cpu"

func init() {
	ks := rowKernels()
	rowImpl = ks[len(ks)-1]
}

// rowKernels lists the implementations this CPU can run, the fastest last;
// tests run every one.
func rowKernels() []*rowKernel {
	ks := []*rowKernel{&rowGoKernel}
	if cpu.X86.HasAVX2 && cpu.X86.HasFMA {
		ks = append(ks, &rowAVX2Kernel)
	}
	return ks
}

var rowAVX2Kernel = rowKernel{name: "avx2-fma",
	dots: func(dst, q, rows []float32, stride int, scale float32) {
		rowDotsAVX2(&dst[0], &q[0], &rows[0], len(dst), len(q), stride, scale)
	},
	axpy: func(o, p, rows []float32, stride int) {
		rowAxpyAVX2(&o[0], &p[0], &rows[0], len(p), len(o), stride)
	},
	dotsBF16: func(dst, q []float32, rows []uint16, stride int, scale float32) {
		rowDotsBF16AVX2(&dst[0], &q[0], &rows[0], len(dst), len(q), stride, scale)
	},
}

// The loops in assembly (rowdot_amd64.s); d is a multiple of 8.

//go:noescape
func rowDotsAVX2(dst, q, rows *float32, n, d, stride int, scale float32)

//go:noescape
func rowAxpyAVX2(o, p, rows *float32, n, d, stride int)

//go:noescape
func rowDotsBF16AVX2(dst, q *float32, rows *uint16, n, d, stride int, scale float32)
