//go:build cuda

package cgo

import (
	"fmt"
	"testing"

	"github.com/compassml/compass/tensor"
)

// TestGPUDropout checks Dropout against the CPU bit for bit (the mask is a
// hash of the seed and the index, the product one float32 multiply): every
// dtype, p = 0 (a copy), output dtypes other than the input's, a large
// tensor (the grid-stride loop, a capped grid) and a grid of 3 blocks, in
// place as the backward uses it, and a seed with its top bit set (the
// 64-bit parameters must arrive whole).
func TestGPUDropout(t *testing.T) {
	b := gpuBackend(t)
	rng := newRNG(t)
	for _, dt := range dtypes {
		for _, c := range []struct {
			n    int
			p    float32
			seed uint64
		}{{1, 0.5, 3}, {4099, 0.1, 1<<63 | 12345}, {3 << 20, 0.5, 7}, {777, 0, 9}} {
			name := fmt.Sprintf("dropout %s[%d] p=%v seed=%#x", dt, c.n, c.p, c.seed)
			x := input(t, b, rng, dt, c.n)
			out := output(t, b, dt, c.n)
			must(t, cpu.Dropout(out.h, x.h, c.p, c.seed))
			must(t, b.Dropout(out.d, x.d, c.p, c.seed))
			compare(t, b, name, out, 0)
			must(t, cpu.Dropout(x.h, x.h, c.p, c.seed))
			must(t, b.Dropout(x.d, x.d, c.p, c.seed))
			compare(t, b, name+" in place", x, 0)
		}
	}
	// Output dtypes other than the input's, p up to 0.9, seed 0, each with
	// the Table's grid and with 3 blocks: each thread then strides over
	// many elements, and the mask must not depend on which thread takes one.
	threeBlocks := withShape(t, b, "dropout", gridX(3))
	f32, bf16, f16 := tensor.F32, tensor.BF16, tensor.F16
	for _, c := range []struct {
		n       int
		in, out tensor.DType
		p       float32
		seed    uint64
	}{
		{3001, f32, f32, 0.1, rng.Uint64() | 1<<63}, {3001, f32, f32, 0.9, 0}, {2049, bf16, bf16, 0.5, 0},
		{2049, f16, f32, 0.3, 12345}, {1000, f32, bf16, 0.25, 99},
	} {
		for _, grid := range []struct {
			name string
			b    *Backend
		}{{"Table grid", b}, {"3 blocks", threeBlocks}} {
			name := fmt.Sprintf("dropout %s[%d] -> %s p=%v seed=%#x, %s", c.in, c.n, c.out, c.p, c.seed, grid.name)
			x := input(t, b, rng, c.in, c.n)
			out := output(t, b, c.out, c.n)
			must(t, cpu.Dropout(out.h, x.h, c.p, c.seed))
			must(t, grid.b.Dropout(out.d, x.d, c.p, c.seed))
			compare(t, b, name, out, 0)
			zeros := 0
			for _, v := range out.h.ToF32() {
				if v == 0 {
					zeros++
				}
			}
			if zeros == 0 {
				t.Errorf("%s: nothing dropped", name)
			}
		}
	}

	x := input(t, b, rng, tensor.F32, 4, 5)
	for _, bad := range []struct {
		out *tensor.Tensor
		p   float32
	}{{output(t, b, tensor.F32, 4, 5).d, 1}, {output(t, b, tensor.F32, 5, 4).d, 0.1}, {x.h, 0.1}} {
		if err := b.Dropout(bad.out, x.d, bad.p, 1); err == nil {
			t.Errorf("dropout into %v with p=%v: no error", bad.out, bad.p)
		}
	}
}
