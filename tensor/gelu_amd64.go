package tensor

import "golang.org/x/sys/cpu"

func init() {
	ks := geluKernels()
	geluImpl = ks[len(ks)-1]
}

// geluKernels lists the implementations this CPU can run, the fastest last;
// tests run every one.
func geluKernels() []*geluKernel {
	ks := []*geluKernel{&geluGoKernel}
	if cpu.X86.HasAVX2 && cpu.X86.HasFMA {
		ks = append(ks, &geluAVX2Kernel)
		if cpu.X86.HasAVX512F {
			ks = append(ks, &geluAVX512Kernel)
		}
	}
	return ks
}

var (
	geluAVX2Kernel   = geluKernel{name: "avx2-fma", apply: func(dst, src []float32) { geluAVX2(&dst[0], &src[0], len(dst)) }}
	geluAVX512Kernel = geluKernel{name: "avx512", apply: func(dst, src []float32) { geluAVX512(&dst[0], &src[0], len(dst)) }}
)

// The loops in assembly (gelu_amd64.s).

//go:noescape
func geluAVX2(dst, src *float32, n int)

//go:noescape
func geluAVX512(dst, src *float32, n int)
