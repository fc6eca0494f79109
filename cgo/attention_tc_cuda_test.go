//go:build cuda

package cgo

import (
	"fmt"
	"math"
	"slices"
	"testing"

	"github.com/compassml/compass/kernels"
	"github.com/compassml/compass/tensor"
)

// tolTCGrad is the elementwise tolerance of the tensor-core gradients: P
// and dS are bf16 mma operands there (the float32 kernels keep them in
// float32), so a few elements in 10^5 reach 1.4e-2; the norm of each
// gradient stays within 1e-2.
const tolTCGrad = 2e-2

// The tensor-core attention against tcAttention, its arithmetic in plain
// Go (attention_tc_ref_test.go), as the relative error of the whole
// result: what is left is the order of the float32 sums, and the bf16
// roundings (of P, dS and the outputs) that this order tips. Largest seen
// on the emulated device: 4.8e-5 (out, the peaked case) and 5.9e-4 (dv);
// against the CPU's float32 attention the same results are 1.9e-3 and
// 2.7e-3 off (tolFor's 1e-2). A GPU's exp2f and mma sums round otherwise
// again, hence the margin. P rounded by truncation instead of to nearest
// (mutation attention-p-truncated) puts the peaked case's out 2.1e-3 off
// the kernels' arithmetic, within the elementwise bound against the CPU.
const tolTCRefOut, tolTCRefGrad = 1e-3, 3e-3

// tcAttentionFor is the tensor-core kernels' arithmetic, with their
// roundings, for q [B, T, Hq, D] and k [B, T, Hkv, D] (docStart nil: a
// document per row).
func tcAttentionFor(q, k, docStart *tensor.Tensor, scale float32) tcAttention {
	a := tcAttention{B: q.Dim(0), T: q.Dim(1), Hq: q.Dim(2), Hkv: k.Dim(2), D: q.Dim(3), scale: scale, round: true}
	if docStart != nil {
		a.docStart = docStart.I32()
	}
	return a
}

// refPair pairs the device result of got with want, the reference's
// values, for compare.
func refPair(t *testing.T, got pair, want []float32) pair {
	h, err := tensor.FromF32(want, got.h.Shape()...)
	must(t, err)
	return pair{h, got.d}
}

// TestGPUAttentionTC compares the tensor-core attention (attention_tc.cu,
// which Attention and AttentionBackward pick for bf16 tensors of head
// dimension 64, 96 or 128) with the CPU's Attention and
// AttentionBackward: head dimensions 64, 96 and 128, GQA groups of 1, 4
// and 7, lengths that fill no 64-row or 64-key tile (1, 77, 130,
// 200), and rows packing documents: documents of one token, a boundary
// inside a tile, a row whose documents put whole key tiles out of reach
// of a query tile (skipped). Outputs and gradients element by element at
// bf16's tolerance (P and dS are rounded to bf16 as mma operands, as
// FlashAttention does: tolTCGrad for the gradients), lse at float32's.
// Under GQA the backward runs both ways the dk/dv kernel can take its
// heads: one query head per block, the shares added by
// attention_dkdv_sum, and a kv head's heads per block; and both ways dq
// can be had: from the dS the dk/dv kernel writes
// (attention_tc_backward_dq_ds), and recomputed. Each result is
// also held, as a whole, to tcAttention, the kernels' arithmetic with
// their roundings, at tolTCRefOut and tolTCRefGrad.
func TestGPUAttentionTC(t *testing.T) {
	b := gpuBackend(t)
	rng := newRNG(t)
	ones := func(n int) []int {
		d := make([]int, n)
		for i := range d {
			d[i] = 1
		}
		return d
	}
	for _, s := range []struct {
		B, T, Hq, Hkv, D int
		docs             [][]int // documents packed in each row; nil: one per row
	}{
		{1, 1, 2, 1, 64, nil},
		{1, 77, 4, 1, 64, nil},
		{2, 130, 7, 1, 96, nil},
		{1, 130, 2, 2, 128, nil},
		{1, 64, 4, 4, 128, nil},
		{2, 140, 8, 2, 64, [][]int{{5, 1, 64, 70}, {15, 17, 1, 32, 75}}},
		{1, 200, 4, 1, 128, [][]int{{1, 100, 16, 83}}},
		{1, 150, 7, 1, 96, [][]int{{130, 1, 1, 18}}},
		{1, 70, 2, 1, 64, [][]int{append(ones(66), 4)}},
	} {
		name := fmt.Sprintf("attention tc B %d T %d Hq %d Hkv %d D %d docs %v", s.B, s.T, s.Hq, s.Hkv, s.D, s.docs)
		bf16 := tensor.BF16
		scale := float32(1 / math.Sqrt(float64(s.D)))
		q := input(t, b, rng, bf16, s.B, s.T, s.Hq, s.D)
		k, v := input(t, b, rng, bf16, s.B, s.T, s.Hkv, s.D), input(t, b, rng, bf16, s.B, s.T, s.Hkv, s.D)
		ds := docStartPair(t, b, s.T, s.docs)
		out, lse := output(t, b, bf16, s.B, s.T, s.Hq, s.D), output(t, b, tensor.F32, s.B, s.Hq, s.T)
		sizes := kernels.Sizes{B: s.B, T: s.T, Hq: s.Hq, Hkv: s.Hkv, D: s.D}
		if got, ok := attentionTC("attention_tc_forward", sizes, out.d, q.d, k.d, v.d); !ok || got != fmt.Sprintf("attention_tc_forward_d%d", s.D) {
			t.Fatalf("%s: Attention would not launch the tensor-core kernel (%q, %v)", name, got, ok)
		}
		must(t, cpu.Attention(out.h, lse.h, q.h, k.h, v.h, ds.h, scale))
		must(t, b.Attention(out.d, lse.d, q.d, k.d, v.d, ds.d, scale))
		compare(t, b, name, out, tolFor(tolReduce, bf16))
		closeTo(t, b, name, out, elemTol(bf16, 0), 0)
		compare(t, b, name+" lse", lse, tolReduce)
		closeTo(t, b, name+" lse", lse, 1e-5, 0)
		ref := tcAttentionFor(q.h, k.h, ds.h, scale)
		rOut, _ := ref.forward(q.h.ToF32(), k.h.ToF32(), v.h.ToF32())
		compare(t, b, name+" against the kernel's arithmetic", refPair(t, out, rOut), tolTCRefOut)

		// The backward, from the CPU's forward on both backends.
		dout := input(t, b, rng, bf16, s.B, s.T, s.Hq, s.D)
		dq := output(t, b, bf16, s.B, s.T, s.Hq, s.D)
		dk, dv := output(t, b, bf16, s.B, s.T, s.Hkv, s.D), output(t, b, bf16, s.B, s.T, s.Hkv, s.D)
		if _, ok := attentionTC("attention_tc_backward_dq", sizes, dq.d, dk.d, dv.d, dout.d, q.d, k.d, v.d); !ok {
			t.Fatalf("%s: AttentionBackward would not launch the tensor-core kernels", name)
		}
		outD, lseD := copyPair(t, b, pair{out.h, nil}), copyPair(t, b, pair{lse.h, nil})
		must(t, cpu.AttentionBackward(dq.h, dk.h, dv.h, dout.h, q.h, k.h, v.h, ds.h, out.h, lse.h, scale))
		must(t, b.AttentionBackward(dq.d, dk.d, dv.d, dout.d, q.d, k.d, v.d, ds.d, outD.d, lseD.d, scale))
		grads := []struct {
			what string
			got  pair
		}{{" dq", dq}, {" dk", dk}, {" dv", dv}}
		check := func(name string) {
			for _, gr := range grads {
				if s.T == 1 && gr.what != " dv" {
					// A softmax over one key has no gradient: rounding noise.
					nearZero(t, b, name+gr.what, gr.got, 1e-5)
					continue
				}
				compare(t, b, name+gr.what, gr.got, tolFor(tolReduce, bf16))
				closeTo(t, b, name+gr.what, gr.got, tolTCGrad, 0)
			}
		}
		check(name)
		rdq, rdk, rdv := ref.backward(dout.h.ToF32(), q.h.ToF32(), k.h.ToF32(), v.h.ToF32(), out.h.ToF32(), lse.h.F32())
		checkRef := func(name string) {
			for i, want := range [][]float32{rdq, rdk, rdv} {
				if s.T == 1 && i < 2 {
					continue // rounding noise (check's nearZero)
				}
				compare(t, b, name+grads[i].what+" against the kernels' arithmetic", refPair(t, grads[i].got, want), tolTCRefGrad)
			}
		}
		checkRef(name)
		// again runs the backward with a knob set, into gradients poisoned
		// first.
		again := func(what string, knob *bool) {
			*knob = true
			for _, gr := range grads {
				must(t, b.Copy(gr.got.d, nanHost(tensor.BF16, gr.got.d.Shape()...)))
			}
			err := b.AttentionBackward(dq.d, dk.d, dv.d, dout.d, q.d, k.d, v.d, ds.d, outD.d, lseD.d, scale)
			*knob = false
			must(t, err)
			check(name + what)
			checkRef(name + what)
		}
		if s.Hq != s.Hkv {
			// These launches are small: dk and dv were one query head per
			// block (dkdvPerHead). Now a kv head's heads per block.
			again(" (group blocks)", &b.dkdvGroupBlocks)
		}
		// dq was computed from the dk/dv kernel's dS (attentionDS: these
		// are small), in a scratch poisoned with NaN (PoisonEmpty), which
		// the pairs no query sees leave unwritten. Now recomputing it.
		again(" (dq recomputed)", &b.attentionRecomputeDQ)
	}
}

// TestGPUAttentionTCPeaked scales the inputs so that the softmax is peaked
// (scores of tens): the online rescaling across key tiles and P's bf16
// rounding at their worst.
func TestGPUAttentionTCPeaked(t *testing.T) {
	b := gpuBackend(t)
	rng := newRNG(t)
	const B, T, Hq, Hkv, D = 1, 190, 4, 2, 128
	bf16 := tensor.BF16
	qh := randHost(rng, bf16, 3, B, T, Hq, D)
	q := pair{qh, toDev(t, b, qh)}
	k, v := input(t, b, rng, bf16, B, T, Hkv, D), input(t, b, rng, bf16, B, T, Hkv, D)
	out, lse := output(t, b, bf16, B, T, Hq, D), output(t, b, tensor.F32, B, Hq, T)
	scale := float32(1 / math.Sqrt(D))
	must(t, cpu.Attention(out.h, lse.h, q.h, k.h, v.h, nil, scale))
	must(t, b.Attention(out.d, lse.d, q.d, k.d, v.d, nil, scale))
	closeTo(t, b, "attention tc peaked", out, elemTol(bf16, 0), 0)
	closeTo(t, b, "attention tc peaked lse", lse, 1e-5, 0)
	ref := tcAttentionFor(q.h, k.h, nil, scale)
	rOut, _ := ref.forward(q.h.ToF32(), k.h.ToF32(), v.h.ToF32())
	compare(t, b, "attention tc peaked against the kernel's arithmetic", refPair(t, out, rOut), tolTCRefOut)
}

// TestGPUAttentionTCChoice checks when Attention takes the tensor-core
// kernels: bf16 everywhere and a head dimension they were built for.
func TestGPUAttentionTCChoice(t *testing.T) {
	b := gpuBackend(t)
	rng := newRNG(t)
	for _, c := range []struct {
		D      int
		q, out tensor.DType
		want   bool
	}{
		{64, tensor.BF16, tensor.BF16, true}, {96, tensor.BF16, tensor.BF16, true}, {128, tensor.BF16, tensor.BF16, true},
		{32, tensor.BF16, tensor.BF16, false}, {80, tensor.BF16, tensor.BF16, false},
		{128, tensor.F32, tensor.F32, false}, {128, tensor.F16, tensor.F16, false}, {128, tensor.BF16, tensor.F32, false},
	} {
		q := input(t, b, rng, c.q, 1, 3, 2, c.D)
		k := input(t, b, rng, c.q, 1, 3, 1, c.D)
		out := output(t, b, c.out, 1, 3, 2, c.D)
		s := kernels.Sizes{B: 1, T: 3, Hq: 2, Hkv: 1, D: c.D}
		if _, ok := attentionTC("attention_tc_forward", s, out.d, q.d, k.d, k.d); ok != c.want {
			t.Errorf("D %d, q %s, out %s: tensor cores %v, want %v", c.D, c.q, c.out, ok, c.want)
		}
	}
}

// TestGPUAttentionRounded checks the default mode's float32 attention at
// the tensor-core head dimensions (Backend.roundAttention): q, k, v (and
// dout) rounded to bf16, the tensor-core kernels, the results widened to
// float32, against the CPU's float32 on the unrounded inputs. The inputs'
// rounding adds to the kernels' own bf16 error, hence bounds above
// TestGPUAttentionTC's; against tcAttention on the rounded inputs the
// bounds are TestGPUAttentionTC's. That the rounded path ran is checked
// too: Precise mode (the float32 kernels) gives a different output. And
// dout, rounded to bf16 by the delta launch, gives the gradients' bits of
// dout cast before the backward.
func TestGPUAttentionRounded(t *testing.T) {
	b := gpuBackend(t)
	rng := newRNG(t)
	const tolOut, tolGrad = 3e-2, 5e-2
	f32 := tensor.F32
	for _, s := range []struct {
		B, T, Hq, Hkv, D int
		docs             [][]int
	}{
		{1, 77, 4, 1, 64, nil},
		{2, 130, 7, 1, 96, nil},
		{1, 200, 4, 2, 128, [][]int{{1, 100, 16, 83}}},
	} {
		name := fmt.Sprintf("attention rounded B %d T %d Hq %d Hkv %d D %d docs %v", s.B, s.T, s.Hq, s.Hkv, s.D, s.docs)
		scale := float32(1 / math.Sqrt(float64(s.D)))
		q := input(t, b, rng, f32, s.B, s.T, s.Hq, s.D)
		k, v := input(t, b, rng, f32, s.B, s.T, s.Hkv, s.D), input(t, b, rng, f32, s.B, s.T, s.Hkv, s.D)
		ds := docStartPair(t, b, s.T, s.docs)
		out, lse := output(t, b, f32, s.B, s.T, s.Hq, s.D), output(t, b, f32, s.B, s.Hq, s.T)
		if !b.roundAttention(kernels.Sizes{D: s.D}, out.d, q.d, k.d, v.d) {
			t.Fatalf("%s: the default mode would not round to the tensor cores", name)
		}
		must(t, cpu.Attention(out.h, lse.h, q.h, k.h, v.h, ds.h, scale))
		must(t, b.Attention(out.d, lse.d, q.d, k.d, v.d, ds.d, scale))
		compare(t, b, name, out, tolFor(tolReduce, tensor.BF16))
		closeTo(t, b, name, out, tolOut, 0)
		closeTo(t, b, name+" lse", lse, 1e-2, 0)
		// The kernels' arithmetic on the rounded inputs.
		ref := tcAttentionFor(q.h, k.h, ds.h, scale)
		rq, rk, rv := roundedCopy(q.h).F32(), roundedCopy(k.h).F32(), roundedCopy(v.h).F32()
		rOut, _ := ref.forward(rq, rk, rv)
		compare(t, b, name+" against the kernel's arithmetic", refPair(t, out, rOut), tolTCRefOut)

		precise := output(t, b, f32, s.B, s.T, s.Hq, s.D)
		b.Precise = true
		must(t, b.Attention(precise.d, lse.d, q.d, k.d, v.d, ds.d, scale))
		b.Precise = false
		got, err := b.ToHost(out.d)
		must(t, err)
		exact, err := b.ToHost(precise.d)
		must(t, err)
		if slices.Equal(got.F32(), exact.F32()) {
			t.Errorf("%s: the default mode's output equals Precise mode's bit for bit: the rounded path did not run", name)
		}

		dout := input(t, b, rng, f32, s.B, s.T, s.Hq, s.D)
		dq := output(t, b, f32, s.B, s.T, s.Hq, s.D)
		dk, dv := output(t, b, f32, s.B, s.T, s.Hkv, s.D), output(t, b, f32, s.B, s.T, s.Hkv, s.D)
		outD, lseD := copyPair(t, b, pair{out.h, nil}), copyPair(t, b, pair{lse.h, nil})
		must(t, cpu.AttentionBackward(dq.h, dk.h, dv.h, dout.h, q.h, k.h, v.h, ds.h, out.h, lse.h, scale))
		must(t, b.AttentionBackward(dq.d, dk.d, dv.d, dout.d, q.d, k.d, v.d, ds.d, outD.d, lseD.d, scale))
		// The backward was given the CPU's out and lse: so is the
		// reference, out rounded as the backward rounds it.
		rdq, rdk, rdv := ref.backward(roundedCopy(dout.h).F32(), rq, rk, rv, roundedCopy(out.h).F32(), lse.h.F32())
		for _, g := range []struct {
			what string
			got  pair
			ref  []float32
		}{{" dq", dq, rdq}, {" dk", dk, rdk}, {" dv", dv, rdv}} {
			compare(t, b, name+g.what, g.got, tolFor(tolReduce, tensor.BF16))
			closeTo(t, b, name+g.what, g.got, tolGrad, 0)
			compare(t, b, name+g.what+" against the kernels' arithmetic", refPair(t, g.got, g.ref), tolTCRefGrad)
		}
		// dout rounded by the delta launch, which reads it anyway, gives
		// the bits of dout cast to bf16 before the backward.
		doutBF := output(t, b, tensor.BF16, s.B, s.T, s.Hq, s.D)
		must(t, b.Copy(doutBF.d, dout.d))
		dq2 := output(t, b, f32, s.B, s.T, s.Hq, s.D)
		dk2, dv2 := output(t, b, f32, s.B, s.T, s.Hkv, s.D), output(t, b, f32, s.B, s.T, s.Hkv, s.D)
		must(t, b.AttentionBackward(dq2.d, dk2.d, dv2.d, doutBF.d, q.d, k.d, v.d, ds.d, outD.d, lseD.d, scale))
		for _, g := range [][2]pair{{dq, dq2}, {dk, dk2}, {dv, dv2}} {
			if !sameBits(t, b, g[0].d, g[1].d) {
				t.Errorf("%s: the gradients with dout rounded by the delta launch differ from those with dout cast first", name)
			}
		}
	}
}
