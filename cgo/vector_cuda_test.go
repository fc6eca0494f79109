//go:build cuda

package cgo

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/compassml/compass/tensor"
)

// TestGPUVectorPaths runs the memory-bound kernels that move 8 elements at
// a time (cast, add, mul, scale, SwiGLU, RMSNorm) on both of their paths
// against the CPU: aligned tensors whose length is not a multiple of 8
// (groups, then a tail of single elements), and views one element into
// their block, which are not 16-byte aligned and take the single-element
// loop. Add and Mul also broadcast a b whose period is a multiple of 8
// (the grouped path) and one whose period is not. The embedding gather,
// RoPE and AdamW likewise: aligned rows of a multiple of 8 (AdamW: 4)
// elements, and views one element in. SwiGLUBackwardCast and AddCast must
// write the plain ops' outputs bit for bit and, into their second outputs,
// bit for bit what Copy makes of them; SwiGLU and RMSNorm writing a 16-bit
// output (the model's n1, n2 and SwiGLU output, inputDType) what Copy
// makes of their float32 one.
func TestGPUVectorPaths(t *testing.T) {
	b := gpuBackend(t)
	rng := newRNG(t)
	// at returns p (an input or output of one more element than shape
	// holds) viewed from element offset, with shape.
	at := func(p pair, offset int, shape ...int) pair {
		n := p.h.NumElements() - 1
		view := func(x *tensor.Tensor) *tensor.Tensor {
			v, err := x.Slice(offset, offset+n)
			must(t, err)
			v, err = v.Reshape(shape...)
			must(t, err)
			return v
		}
		return pair{view(p.h), view(p.d)}
	}
	in := func(dt tensor.DType, offset int, shape ...int) pair {
		return at(input(t, b, rng, dt, product(shape)+1), offset, shape...)
	}
	out := func(dt tensor.DType, offset int, shape ...int) pair {
		return at(output(t, b, dt, product(shape)+1), offset, shape...)
	}
	const n = 8*37 + 5
	for _, offset := range []int{0, 1} {
		for _, c := range []struct{ in, out tensor.DType }{
			{tensor.F32, tensor.BF16}, {tensor.BF16, tensor.F32}, {tensor.F16, tensor.F32}, {tensor.F32, tensor.F32},
		} {
			name := fmt.Sprintf("offset %d %s -> %s", offset, c.in, c.out)
			x, y, o := in(c.in, offset, n), in(c.in, offset, n), out(c.out, offset, n)
			must(t, cpu.Copy(o.h, x.h))
			must(t, b.Copy(o.d, x.d))
			compare(t, b, "cast "+name, o, 0)
			must(t, cpu.Scale(o.h, x.h, 0.75))
			must(t, b.Scale(o.d, x.d, 0.75))
			compare(t, b, "scale "+name, o, 0)
			must(t, cpu.SwiGLU(o.h, x.h, y.h))
			must(t, b.SwiGLU(o.d, x.d, y.d))
			closeTo(t, b, "swiglu "+name, o, elemTol(c.out, 1e-6), 0)
			if c.out == tensor.F32 {
				for _, dt := range []tensor.DType{tensor.BF16, tensor.F16} {
					narrow := out(dt, offset, n)
					must(t, b.SwiGLU(narrow.d, x.d, y.d))
					sameAsCopy(t, b, fmt.Sprintf("swiglu to %s %s", dt, name), o.d, nil, narrow.d)
				}
			}
			dout, dg, du := in(c.out, offset, n), out(c.in, offset, n), out(c.in, offset, n)
			must(t, cpu.SwiGLUBackward(dg.h, du.h, dout.h, x.h, y.h))
			must(t, b.SwiGLUBackward(dg.d, du.d, dout.d, x.d, y.d))
			closeTo(t, b, "swiglu backward dgate "+name, dg, elemTol(c.in, 1e-6), 0)
			closeTo(t, b, "swiglu backward dup "+name, du, elemTol(c.in, 1e-6), 0)
			for _, dt := range []tensor.DType{tensor.BF16, tensor.F16} {
				dg2, du2, gc, uc := out(c.in, offset, n), out(c.in, offset, n), out(dt, offset, n), out(dt, offset, n)
				must(t, b.SwiGLUBackwardCast(dg2.d, du2.d, gc.d, uc.d, dout.d, x.d, y.d))
				sameAsCopy(t, b, fmt.Sprintf("swiglu backward dgate cast to %s %s", dt, name), dg.d, dg2.d, gc.d)
				sameAsCopy(t, b, fmt.Sprintf("swiglu backward dup cast to %s %s", dt, name), du.d, du2.d, uc.d)
			}
		}
		// Add and Mul, a [5, 6, 16] (or [5, 6, 12]) and b its trailing
		// dimensions: periods 96 and 16 take the grouped path, 12 not.
		for _, bshape := range [][]int{{6, 16}, {16}, {12}} {
			shape := []int{5, 6, bshape[len(bshape)-1]}
			x, o := in(tensor.F32, offset, shape...), out(tensor.F32, offset, shape...)
			y := in(tensor.BF16, offset, bshape...)
			for _, op := range []struct {
				name     string
				cpu, gpu func(out, x, y *tensor.Tensor) error
			}{{"add", cpu.Add, b.Add}, {"mul", cpu.Mul, b.Mul}} {
				must(t, op.cpu(o.h, x.h, y.h))
				must(t, op.gpu(o.d, x.d, y.d))
				compare(t, b, fmt.Sprintf("%s offset %d, b %v", op.name, offset, bshape), o, 0)
			}
			must(t, b.Add(o.d, x.d, y.d))
			for _, dt := range []tensor.DType{tensor.BF16, tensor.F16} {
				o2, cast := out(tensor.F32, offset, shape...), out(dt, offset, shape...)
				must(t, b.AddCast(o2.d, cast.d, x.d, y.d))
				sameAsCopy(t, b, fmt.Sprintf("add cast to %s offset %d, b %v", dt, offset, bshape), o.d, o2.d, cast.d)
			}
		}
		// The embedding gather from a table of rows of 24, then of 21 (never
		// grouped); ids that include a bad one, whose row is zeros and whose
		// position the error names.
		for _, H := range []int{24, 21} {
			const V, N = 13, 9
			table, o := in(tensor.BF16, offset, V, H), out(tensor.F32, offset, N, H)
			idh, err := tensor.FromI32([]int32{3, 0, 12, 5, 5, 1, 7, 2, 11}, N)
			must(t, err)
			ids := toDev(t, b, idh)
			must(t, cpu.Embedding(o.h, table.h, idh))
			must(t, b.Embedding(o.d, table.d, ids))
			compare(t, b, fmt.Sprintf("embedding offset %d H %d", offset, H), o, 0)
			bad, err := tensor.FromI32([]int32{3, 0, 12, 13, 5, 1, 7, 2, 11}, N)
			must(t, err)
			if err := b.Embedding(o.d, table.d, toDev(t, b, bad)); err == nil || !strings.Contains(err.Error(), "id 13 at position 3") {
				t.Errorf("embedding offset %d H %d, a bad id: %v", offset, H, err)
			}
		}
		// RoPE: half 16 of D 40 (grouped when aligned; 8 dimensions past the
		// rotated ones), half 12 (never grouped).
		for _, dims := range [][2]int{{40, 16}, {32, 12}} {
			const N, heads = 6, 3
			D, half := dims[0], dims[1]
			x, o := in(tensor.BF16, offset, N, heads, D), out(tensor.F32, offset, N, heads, D)
			cos, sin := in(tensor.F32, offset, N, half), in(tensor.F32, offset, N, half)
			for _, inverse := range []bool{false, true} {
				must(t, cpu.RoPE(o.h, x.h, cos.h, sin.h, inverse))
				must(t, b.RoPE(o.d, x.d, cos.d, sin.d, inverse))
				compare(t, b, fmt.Sprintf("rope offset %d D %d half %d inverse %v", offset, D, half, inverse), o, tolF32)
			}
		}
		// AdamW on tensors of 36 elements (grouped when aligned) and 37.
		for _, n := range []int{36, 37} {
			p, g, m, v := in(tensor.F32, offset, n), in(tensor.F32, offset, n), in(tensor.F32, offset, n), in(tensor.F32, offset, n)
			for i, x := range v.h.F32() {
				v.h.F32()[i] = x * x // the second moment is not negative
			}
			must(t, b.Copy(v.d, toDev(t, b, v.h)))
			for step := 1; step <= 2; step++ {
				must(t, cpu.AdamW([]*tensor.Tensor{p.h}, []*tensor.Tensor{g.h}, []*tensor.Tensor{m.h}, []*tensor.Tensor{v.h}, step, 1e-3, 0.9, 0.999, 1e-8, 0.01))
				must(t, b.AdamW([]*tensor.Tensor{p.d}, []*tensor.Tensor{g.d}, []*tensor.Tensor{m.d}, []*tensor.Tensor{v.d}, step, 1e-3, 0.9, 0.999, 1e-8, 0.01))
			}
			for name, x := range map[string]pair{"p": p, "m": m, "v": v} {
				compare(t, b, fmt.Sprintf("adamw offset %d n %d %s", offset, n, name), x, 0)
			}
		}
		// RMSNorm, rows of 72 elements: grouped when aligned.
		for _, dt := range dtypes {
			const rows, H = 5, 72
			x, w := in(dt, offset, rows, H), in(tensor.BF16, offset, H)
			o, rstd := out(tensor.F32, offset, rows, H), output(t, b, tensor.F32, rows)
			must(t, cpu.RMSNorm(o.h, rstd.h, x.h, w.h, 1e-5))
			must(t, b.RMSNorm(o.d, rstd.d, x.d, w.d, 1e-5))
			name := fmt.Sprintf("rmsnorm offset %d %s", offset, dt)
			compare(t, b, name+" rstd", rstd, tolF32)
			compare(t, b, name, o, tolFor(tolF32, dt, tensor.F32, tensor.BF16))
			for _, cdt := range []tensor.DType{tensor.BF16, tensor.F16} {
				narrow, rstd2 := out(cdt, offset, rows, H), output(t, b, tensor.F32, rows)
				must(t, b.RMSNorm(narrow.d, rstd2.d, x.d, w.d, 1e-5))
				sameAsCopy(t, b, fmt.Sprintf("%s to %s", name, cdt), o.d, nil, narrow.d)
			}
			dout, dx := in(tensor.F32, offset, rows, H), out(dt, offset, rows, H)
			must(t, cpu.RMSNormBackward(dx.h, dout.h, x.h, w.h, rstd.h))
			must(t, b.RMSNormBackward(dx.d, dout.d, x.d, w.d, rstd.d))
			compare(t, b, name+" backward", dx, tolFor(tolReduce, dt, tensor.F32, tensor.BF16))
		}
	}
}

// sameAsCopy checks a fused cast: got has want's bits (the op without the
// cast; nil for no such output) and cast has the bits Copy(cast, want)
// writes.
func sameAsCopy(t *testing.T, b *Backend, name string, want, got, cast *tensor.Tensor) {
	t.Helper()
	if got != nil && !bytes.Equal(hostOf(t, b, got).Bytes(), hostOf(t, b, want).Bytes()) {
		t.Errorf("%s: the output differs from the op's without the cast", name)
	}
	ref, err := b.Alloc(cast.DType(), cast.Shape()...)
	must(t, err)
	defer b.Free(ref)
	must(t, b.Copy(ref, want))
	if !bytes.Equal(hostOf(t, b, cast).Bytes(), hostOf(t, b, ref).Bytes()) {
		t.Errorf("%s: the cast output differs from Copy's", name)
	}
}

func product(shape []int) int {
	n := 1
	for _, d := range shape {
		n *= d
	}
	return n
}
