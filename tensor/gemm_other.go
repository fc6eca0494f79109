//go:build !amd64

package tensor

import "unsafe"

// gemmKernels lists the kernels this CPU can run: off amd64, the portable one.
func gemmKernels() (f32 []*gemmKernel[float32], bf16 []*gemmKernel[uint32]) {
	return []*gemmKernel[float32]{&goKernel}, nil
}

// useAsmTranspose is false off amd64: packing is portable Go.
var useAsmTranspose = false

func transposeDwords(dst, src unsafe.Pointer, srcStride, n, d, width int) {
	panic("tensor: no assembly transpose on this architecture")
}

func transposeBF16(dst, src unsafe.Pointer, srcStride, n, d, width int) {
	panic("tensor: no assembly transpose on this architecture")
}

func interleaveBF16(dst *uint32, lo, hi *uint16, n, width, sliverStride int) {
	panic("tensor: no assembly interleave on this architecture")
}
