package kernels_test

import (
	"fmt"
	"math"
	"testing"

	"github.com/compassml/compass/kernels"
	"github.com/compassml/compass/tensor"
)

// TestAttention checks attention_forward against tensor.CPU.Attention and
// the three backward launches against tensor.CPU.AttentionBackward (and
// delta against rowsum(dout * out)): GQA groups of 1, 2 and 4, sequences
// that do not fill the 16-row and 32-key tiles, a single token, head
// dimensions from 5 to the largest supported (128), bf16 inputs, and rows
// packing documents (docStart) that start inside tiles, on their edges,
// and hold one token.
func TestAttention(t *testing.T) {
	rng := newRand(t)
	for _, c := range []struct {
		B, T, Hq, Hkv, D int
		dtype            tensor.DType
		tol              tolerance
		floor            float64 // for dq and dk
		docs             [][]int // the documents' lengths in each row; nil: one per row
	}{
		{2, 37, 4, 2, 24, tensor.F32, 1e-5, 0, nil},
		// T = 1: P = 1 and out = v, so dS = dout.v - dout.out and dq, dk
		// are 0 up to rounding: held to 1e-5 of the inputs' scale.
		{1, 1, 2, 1, 8, tensor.F32, 1e-5, 1, nil},
		{1, 20, 4, 1, 5, tensor.F32, 1e-5, 0, nil},
		{1, 70, 2, 2, 128, tensor.BF16, 1e-2, 0, nil},
		{1, 33, 3, 3, 16, tensor.F16, 2e-3, 0, nil},
		{2, 140, 4, 2, 24, tensor.F32, 1e-5, 0, [][]int{{5, 1, 64, 70}, {15, 17, 1, 32, 75}}},
		{1, 50, 4, 1, 16, tensor.BF16, 1e-2, 0, [][]int{{16, 1, 33}}},
	} {
		name := fmt.Sprintf("B=%d T=%d Hq=%d Hkv=%d D=%d %v docs %v", c.B, c.T, c.Hq, c.Hkv, c.D, c.dtype, c.docs)
		q := randTensor(rng, c.dtype, 1, c.B, c.T, c.Hq, c.D)
		k := randTensor(rng, c.dtype, 1, c.B, c.T, c.Hkv, c.D)
		v := randTensor(rng, c.dtype, 1, c.B, c.T, c.Hkv, c.D)
		dout := randTensor(rng, c.dtype, 1, c.B, c.T, c.Hq, c.D)
		scale := float32(1 / math.Sqrt(float64(c.D)))
		sizes := kernels.Sizes{B: c.B, T: c.T, Hq: c.Hq, Hkv: c.Hkv, D: c.D}
		var docStart *tensor.Tensor
		if c.docs != nil {
			docStart = docStarts(t, c.T, c.docs)
		}
		// withDocs adds docStart to a run that has documents.
		withDocs := func(e *emu) *emu {
			if docStart != nil {
				e.in("doc_start", docStart)
			}
			return e
		}

		out, lse := like(q, c.dtype), tensor.New(tensor.F32, c.B, c.Hq, c.T)
		if err := cpu.Attention(out, lse, q, k, v, docStart, scale); err != nil {
			t.Fatal(err)
		}
		got := withDocs(newEmu(t, "attention_forward")).in("q", q).in("k", k).in("v", v).set("scale", scale).
			set("out_dtype", c.dtype).launch("attention_forward", sizes).run()
		closeTo(t, name+" out", got["out"], out, c.tol)
		closeTo(t, name+" lse", got["lse"], lse, 1e-5)

		// The backward takes the CPU's out and lse, as the model passes the
		// forward's.
		dq, dk, dv := like(q, c.dtype), like(k, c.dtype), like(v, c.dtype)
		if err := cpu.AttentionBackward(dq, dk, dv, dout, q, k, v, docStart, out, lse, scale); err != nil {
			t.Fatal(err)
		}
		got = withDocs(newEmu(t, "attention_backward")).in("dout", dout).in("q", q).in("k", k).in("v", v).in("out", out).
			in("lse", lse).set("scale", scale).set("dq_dtype", c.dtype).set("dk_dtype", c.dtype).set("dv_dtype", c.dtype).
			launch("attention_backward_delta", sizes).launch("attention_backward_dq", sizes).
			launch("attention_backward_dkdv", sizes).run()
		closeTo(t, name+" delta", got["delta"], rowDot(dout, out), 1e-5)
		closeWithin(t, name+" dq", got["dq"], dq, c.tol, c.floor)
		closeWithin(t, name+" dk", got["dk"], dk, c.tol, c.floor)
		closeTo(t, name+" dv", got["dv"], dv, c.tol)
	}
}

// docStarts returns docStart I32 [len(docs), T] for rows packing documents
// of the given lengths: each token's value is where its document begins.
func docStarts(t *testing.T, T int, docs [][]int) *tensor.Tensor {
	t.Helper()
	var ds []int32
	for _, lens := range docs {
		start := 0
		for _, n := range lens {
			for range n {
				ds = append(ds, int32(start))
			}
			start += n
		}
		if start != T {
			t.Fatalf("documents %v do not fill a row of %d", lens, T)
		}
	}
	return i32s(ds, len(docs), T)
}

// rowDot returns F32 [B, H, T] with the dot products of the rows of a and b
// [B, T, H, D], in float64.
func rowDot(a, b *tensor.Tensor) *tensor.Tensor {
	B, T, H, D := a.Dim(0), a.Dim(1), a.Dim(2), a.Dim(3)
	av, bv := a.ToF32(), b.ToF32()
	out := make([]float32, B*H*T)
	for bi := 0; bi < B; bi++ {
		for t := 0; t < T; t++ {
			for h := 0; h < H; h++ {
				s := 0.0
				for d := 0; d < D; d++ {
					i := ((bi*T+t)*H+h)*D + d
					s += float64(av[i]) * float64(bv[i])
				}
				out[(bi*H+h)*T+t] = float32(s)
			}
		}
	}
	return must(tensor.FromF32(out, B, H, T))
}
