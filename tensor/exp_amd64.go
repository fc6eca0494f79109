package tensor

import "golang.org/x/sys/cpu"

func init() {
	ks := expKernels()
	expImpl = ks[len(ks)-1]
}

// expKernels lists the implementations this CPU can run, the fastest last;
// tests run every one.
func expKernels() []*expKernel {
	ks := []*expKernel{&expGoKernel}
	if cpu.X86.HasAVX2 && cpu.X86.HasFMA {
		ks = append(ks, &expAVX2Kernel)
		if cpu.X86.HasAVX512F {
			ks = append(ks, &expAVX512Kernel)
		}
	}
	return ks
}

var (
	expAVX2Kernel = expKernel{name: "avx2-fma", max: maxAVX2Slice,
		subSum: func(dst, src []float32, m float32) float64 { return expSubSumAVX2(&dst[0], &src[0], len(dst), m) }}
	expAVX512Kernel = expKernel{name: "avx512", max: maxAVX2Slice,
		subSum: func(dst, src []float32, m float32) float64 { return expSubSumAVX512(&dst[0], &src[0], len(dst), m) }}
)

func maxAVX2Slice(x []float32) float32 { return maxAVX2(&x[0], len(x)) }

// The loops in assembly (exp_amd64.s).

//go:noescape
func expSubSumAVX2(dst, src *float32, n int, m float32) float64

//go:noescape
func expSubSumAVX512(dst, src *float32, n int, m float32) float64

//go:noescape
func maxAVX2(x *float32, n int) float32
