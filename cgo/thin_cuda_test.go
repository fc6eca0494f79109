//go:build cuda

package cgo

import (
	"fmt"
	"testing"

	"github.com/compassml/compass/tensor"
)

// TestGPUThinMatMul holds thin.cu's kernels to the CPU's MatMul on the six
// LoRA products of a training step (lora.cu's table; rank r, N tokens,
// projection in -> out), at ranks 1, 7 and 16, with token counts and
// widths that are not multiples of any tile, sums long enough to be split
// into parts, beta 0 on an output of NaNs (it must not be read) and beta 1,
// and one product on a view that is not 16-byte aligned (it goes to
// cuBLAS instead). Each product must take the kernel the table names: the
// profile says which ran.
func TestGPUThinMatMul(t *testing.T) {
	b := gpuBackend(t)
	rng := newRNG(t)
	f32 := tensor.F32
	type product struct {
		name           string
		c, a, w        []int // shapes
		transA, transB bool
		alpha, beta    float32
		kernel         string
	}
	for _, size := range []struct{ r, N, in, out int }{{16, 150, 520, 260}, {7, 67, 1004, 36}, {1, 33, 20, 1028}} {
		r, N, in, out := size.r, size.N, size.in, size.out
		for _, p := range []product{
			{"t = x A^T", []int{N, r}, []int{N, in}, []int{r, in}, false, true, 1, 0, "thin_narrow"},
			{"y += s t B^T", []int{N, out}, []int{N, r}, []int{out, r}, false, true, 2, 1, "thin_small_k"},
			{"dB += s dy^T t", []int{out, r}, []int{N, out}, []int{N, r}, true, false, 2, 1, "thin_rows"},
			{"dt = s dy B", []int{N, r}, []int{N, out}, []int{out, r}, false, false, 2, 0, "thin_narrow"},
			{"dA += dt^T x", []int{r, in}, []int{N, r}, []int{N, in}, true, false, 1, 1, "thin_rows"},
			{"dx = dt A", []int{N, in}, []int{N, r}, []int{r, in}, false, false, 1, 0, "thin_small_k"},
		} {
			name := fmt.Sprintf("%s r %d N %d in %d out %d", p.name, r, N, in, out)
			if p.kernel == "thin_narrow" && p.a[1]%4 != 0 {
				p.kernel = "" // rows of a not 16-byte aligned: cuBLAS
			}
			x, w := input(t, b, rng, f32, p.a...), input(t, b, rng, f32, p.w...)
			c := output(t, b, f32, p.c...)
			if p.beta != 0 {
				c = input(t, b, rng, f32, p.c...)
			}
			must(t, cpu.MatMul(c.h, x.h, w.h, p.transA, p.transB, p.alpha, p.beta))
			ran := profiled(t, b, func() error { return b.MatMul(c.d, x.d, w.d, p.transA, p.transB, p.alpha, p.beta) })
			if p.kernel != "" && ran[p.kernel] != 1 {
				t.Errorf("%s: ran %v, want %s", name, ran, p.kernel)
			}
			compare(t, b, name, c, tolReduce)
		}
	}

	// A view one element into its block: not 16-byte aligned, so the
	// product with N <= 16 goes to cuBLAS, with the same result.
	whole := input(t, b, rng, f32, 64*40+1)
	xh, _ := whole.h.Slice(1, 64*40+1)
	xd, _ := whole.d.Slice(1, 64*40+1)
	xh, _ = xh.Reshape(64, 40)
	xd, _ = xd.Reshape(64, 40)
	A := input(t, b, rng, f32, 16, 40)
	c := output(t, b, f32, 64, 16)
	must(t, cpu.MatMul(c.h, xh, A.h, false, true, 1, 0))
	ran := profiled(t, b, func() error { return b.MatMul(c.d, xd, A.d, false, true, 1, 0) })
	if ran["thin_narrow"] != 0 {
		t.Errorf("an unaligned a ran thin_narrow: %v", ran)
	}
	compare(t, b, "t = x A^T, x unaligned", c, tolReduce)
}

// profiled runs f under the profiler and returns the calls of each kernel
// and product it issued.
func profiled(t *testing.T, b *Backend, f func() error) map[string]int {
	t.Helper()
	must(t, b.StartProfile())
	err := f()
	lines, perr := b.StopProfile()
	must(t, err)
	must(t, perr)
	calls := map[string]int{}
	for _, l := range lines {
		calls[l.Name] = l.Calls
	}
	return calls
}
