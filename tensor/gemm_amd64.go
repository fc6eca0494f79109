package tensor

import "golang.org/x/sys/cpu"

// useAVX2 is true where the AVX2/FMA micro-kernel can run (x/sys/cpu also
// checks that the OS saves the ymm registers).
var useAVX2 = cpu.X86.HasAVX2 && cpu.X86.HasFMA

func init() {
	if useAVX2 {
		microKernel = kernelAVX2
	}
}

// kernelAVX2 is microKernel in assembly (gemm_amd64.s).
//
//go:noescape
func kernelAVX2(kc int, a, b, c *float32, ldc int)
