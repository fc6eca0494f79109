package tensor

import (
	"unsafe"

	"golang.org/x/sys/cpu"
)

// x/sys/cpu reports AVX2 and AVX-512 only where the OS also saves the ymm,
// zmm and mask registers.
func init() {
	f32, bf16 := gemmKernels()
	gemmF32 = f32[len(f32)-1]
	if len(bf16) > 0 {
		gemmBF16 = bf16[len(bf16)-1]
	}
}

// gemmKernels lists the kernels this CPU can run, the fastest last; tests
// run every one.
func gemmKernels() (f32 []*gemmKernel[float32], bf16 []*gemmKernel[uint32]) {
	f32 = []*gemmKernel[float32]{&goKernel}
	if cpu.X86.HasAVX2 && cpu.X86.HasFMA {
		f32 = append(f32, &avx2Kernel)
	}
	if cpu.X86.HasAVX512F {
		f32 = append(f32, &avx512Kernel)
		if cpu.X86.HasAVX512BF16 {
			bf16 = append(bf16, &avx512BF16Kernel)
		}
	}
	return f32, bf16
}

// A 6 x 16 tile is 12 ymm accumulators, a 12 x 32 one 24 zmm ones. The
// AVX-512 blocking was measured on Zen 4 (1 MiB of L2 per core, 32 KiB of
// L1): an A block of 144 rows, 512 packed elements deep, is 288 KiB of L2,
// and a B sliver (64 KiB) streams from L2, which was slightly faster than
// half the depth with the sliver in L1 (it halves the passes over C). A
// bf16 pair holds two steps of depth, so kc doubles for the same bytes.
var (
	avx2Kernel = gemmKernel[float32]{name: "avx2-fma", mr: 6, nr: 16, kc: 256, mc: 120, nc: 3072,
		kern: kernelAVX2, pack: packF32}
	avx512Kernel = gemmKernel[float32]{name: "avx512", mr: 12, nr: 32, kc: 512, mc: 144, nc: 3072,
		kern: kernelAVX512, pack: packF32}
	avx512BF16Kernel = gemmKernel[uint32]{name: "avx512-bf16", mr: 12, nr: 32, kc: 1024, mc: 144, nc: 3072,
		kern: kernelAVX512BF16, pack: packPairs, pairs: true}
)

// The micro-kernels in assembly (gemm_amd64.s, gemm_avx512_amd64.s).

//go:noescape
func kernelAVX2(d int, a, b, c *float32, ldc int, alpha float32, add bool)

//go:noescape
func kernelAVX512(d int, a, b, c *float32, ldc int, alpha float32, add bool)

//go:noescape
func kernelAVX512BF16(d int, a, b *uint32, c *float32, ldc int, alpha float32, add bool)

// useAsmTranspose says whether packing may use the AVX2 transposes and
// interleave (gemm_pack_amd64.s); tests turn it off to check the portable
// packing.
var useAsmTranspose = cpu.X86.HasAVX2

// transposeDwords sets dst[p*width+q] to the 32-bit element p of the row
// at src + q*srcStride bytes, for q < n (a multiple of 4) and p < d (a
// multiple of 8).
//
//go:noescape
func transposeDwords(dst, src unsafe.Pointer, srcStride, n, d, width int)

// transposeBF16 is transposeDwords from rows of bf16, widened to float32.
//
//go:noescape
func transposeBF16(dst, src unsafe.Pointer, srcStride, n, d, width int)

// interleaveBF16 sets the pair lo[q] | hi[q]<<16 of column q < n (a
// multiple of 8) at dst[(q/width)*sliverStride + q%width]: two rows of
// bf16 become pairs in consecutive slivers of width (a multiple of 8)
// columns, sliverStride elements apart.
//
//go:noescape
func interleaveBF16(dst *uint32, lo, hi *uint16, n, width, sliverStride int)
