package tensor

import (
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"testing"
)

// refAttention is causal GQA attention in float64, the textbook way: the
// softmax of each query row over keys s <= t. It returns out [B, T, Hq, D]
// and lse [B, Hq, T].
func refAttention(q, k, v []float64, a attnDims, scale float64) (out, lse []float64) {
	return refAttentionDocs(q, k, v, a, scale, nil)
}

// refAttentionDocs is refAttention over keys ds[b, t] <= s <= t, with ds
// [B, T] the start of each token's document (nil: 0).
func refAttentionDocs(q, k, v []float64, a attnDims, scale float64, ds []int32) (out, lse []float64) {
	B, T, Hq, Hkv, D := a.B, a.T, a.Hq, a.Hkv, a.D
	out = make([]float64, B*T*Hq*D)
	lse = make([]float64, B*Hq*T)
	scores := make([]float64, T)
	for b := 0; b < B; b++ {
		for h := 0; h < Hq; h++ {
			g := h / (Hq / Hkv)
			for t := 0; t < T; t++ {
				qt := q[((b*T+t)*Hq+h)*D:][:D]
				m := math.Inf(-1)
				s0 := docStartAt(ds, b*T+t)
				for s := s0; s <= t; s++ {
					ks := k[((b*T+s)*Hkv+g)*D:][:D]
					dot := 0.0
					for i := range qt {
						dot += qt[i] * ks[i]
					}
					scores[s] = scale * dot
					m = max(m, scores[s])
				}
				sum := 0.0
				for s := s0; s <= t; s++ {
					sum += math.Exp(scores[s] - m)
				}
				ot := out[((b*T+t)*Hq+h)*D:][:D]
				for s := s0; s <= t; s++ {
					p := math.Exp(scores[s]-m) / sum
					vs := v[((b*T+s)*Hkv+g)*D:][:D]
					for i := range ot {
						ot[i] += p * vs[i]
					}
				}
				lse[(b*Hq+h)*T+t] = m + math.Log(sum)
			}
		}
	}
	return out, lse
}

var attnCases = []attnDims{
	{B: 1, T: 1, Hq: 1, Hkv: 1, D: 1},
	{B: 2, T: 5, Hq: 3, Hkv: 3, D: 4},  // MHA, ratio 1
	{B: 1, T: 7, Hq: 4, Hkv: 2, D: 5},  // ratio 2, odd D
	{B: 2, T: 6, Hq: 8, Hkv: 2, D: 9},  // ratio 4
	{B: 1, T: 1, Hq: 4, Hkv: 1, D: 8},  // one token, ratio 4
	{B: 1, T: 17, Hq: 2, Hkv: 1, D: 3}, // a longer sequence
}

func TestAttentionForwardBackward(t *testing.T) {
	cpu := NewCPU()
	rng := rand.New(rand.NewPCG(9, 10))
	for _, dt := range []DType{F32, BF16} {
		// The backward of bf16 tensors uses the bf16-rounded out in D =
		// rowsum(dout * out), as flash attention does: 2^-8 relative.
		fwdTol, bwdTol := 1e-5, 1e-4
		if dt == BF16 {
			fwdTol, bwdTol = 1e-2, 1e-2
		}
		for _, a := range attnCases {
			name := fmt.Sprintf("%v B%d T%d Hq%d Hkv%d D%d", dt, a.B, a.T, a.Hq, a.Hkv, a.D)
			scale := 1 / math.Sqrt(float64(a.D))
			q := opRandom(rng, dt, a.B, a.T, a.Hq, a.D)
			k := opRandom(rng, dt, a.B, a.T, a.Hkv, a.D)
			v := opRandom(rng, dt, a.B, a.T, a.Hkv, a.D)
			out, lse := New(dt, a.B, a.T, a.Hq, a.D), New(F32, a.B, a.Hq, a.T)
			if err := cpu.Attention(out, lse, q, k, v, nil, float32(scale)); err != nil {
				t.Fatal(err)
			}
			qs, ks, vs := opF64(q), opF64(k), opF64(v)
			wantOut, wantLSE := refAttention(qs, ks, vs, a, scale)
			opCheck(t, name+" out", out, wantOut, fwdTol)
			opCheck(t, name+" lse", lse, wantLSE, 1e-5)

			dout := opRandom(rng, dt, a.B, a.T, a.Hq, a.D)
			dq := New(F32, a.B, a.T, a.Hq, a.D)
			dk, dv := New(F32, a.B, a.T, a.Hkv, a.D), New(F32, a.B, a.T, a.Hkv, a.D)
			if err := cpu.AttentionBackward(dq, dk, dv, dout, q, k, v, nil, out, lse, float32(scale)); err != nil {
				t.Fatal(err)
			}
			cot := opF64(dout)
			loss := func() float64 {
				o, _ := refAttention(qs, ks, vs, a, scale)
				return opDot(o, cot)
			}
			opCheck(t, name+" dq", dq, opNumGrad(loss, qs), bwdTol)
			opCheck(t, name+" dk", dk, opNumGrad(loss, ks), bwdTol)
			opCheck(t, name+" dv", dv, opNumGrad(loss, vs), bwdTol)
		}
	}
}

// refAttentionBackward is the backward of refAttention in float64, written
// out: per query row, P = softmax of the scores, dP = dout v^T,
// dS = P (dP - sum_s P dP), and dq = scale dS k, dk = scale dS^T q,
// dv = P^T dout.
func refAttentionBackward(q, k, v, dout []float64, a attnDims, scale float64) (dq, dk, dv []float64) {
	B, T, Hq, Hkv, D := a.B, a.T, a.Hq, a.Hkv, a.D
	dq, dk, dv = make([]float64, len(q)), make([]float64, len(k)), make([]float64, len(v))
	p, dp := make([]float64, T), make([]float64, T)
	for b := 0; b < B; b++ {
		for h := 0; h < Hq; h++ {
			g := h / (Hq / Hkv)
			row := func(x []float64, t, heads, h int) []float64 { return x[((b*T+t)*heads+h)*D:][:D] }
			for t := 0; t < T; t++ {
				qt, dot := row(q, t, Hq, h), row(dout, t, Hq, h)
				m := math.Inf(-1)
				for s := 0; s <= t; s++ {
					p[s] = scale * opDot(qt, row(k, s, Hkv, g))
					m = max(m, p[s])
				}
				sum := 0.0
				for s := 0; s <= t; s++ {
					p[s] = math.Exp(p[s] - m)
					sum += p[s]
				}
				pdp := 0.0
				for s := 0; s <= t; s++ {
					p[s] /= sum
					dp[s] = opDot(dot, row(v, s, Hkv, g))
					pdp += p[s] * dp[s]
				}
				dqt := row(dq, t, Hq, h)
				for s := 0; s <= t; s++ {
					ds := p[s] * (dp[s] - pdp)
					ks, dks, dvs := row(k, s, Hkv, g), row(dk, s, Hkv, g), row(dv, s, Hkv, g)
					for i := 0; i < D; i++ {
						dqt[i] += scale * ds * ks[i]
						dks[i] += scale * ds * qt[i]
						dvs[i] += p[s] * dot[i]
					}
				}
			}
		}
	}
	return dq, dk, dv
}

// TestAttentionBlocks checks sequences of several query blocks, with a
// partial last one, head sizes that are not a multiple of the micro-kernel's
// tile and products deeper than its kc, with every micro-kernel and exp this CPU has,
// against the float64 forward and the written-out backward (itself checked
// against finite differences first).
func TestAttentionBlocks(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 14))
	small := attnDims{B: 1, T: 6, Hq: 4, Hkv: 2, D: 3}
	{
		q, k, v, dout := make([]float64, 72), make([]float64, 36), make([]float64, 36), make([]float64, 72)
		for _, x := range [][]float64{q, k, v, dout} {
			for i := range x {
				x[i] = rng.NormFloat64()
			}
		}
		loss := func() float64 {
			o, _ := refAttention(q, k, v, small, 0.7)
			return opDot(o, dout)
		}
		dq, dk, dv := refAttentionBackward(q, k, v, dout, small, 0.7)
		for _, c := range []struct {
			name    string
			got     []float64
			against []float64
		}{{"dq", dq, q}, {"dk", dk, k}, {"dv", dv, v}} {
			if e := opRelErr(toF32(c.got), opNumGrad(loss, c.against)); e > 1e-6 {
				t.Fatalf("reference %s against finite differences: %.3g", c.name, e)
			}
		}
	}

	f32, _ := gemmKernels()
	savedGEMM, savedExp := gemmF32, expImpl
	defer func() { gemmF32, expImpl = savedGEMM, savedExp }()
	cpu := NewCPU()
	for _, a := range []attnDims{
		{B: 2, T: 2*attnBlock + 22, Hq: 4, Hkv: 2, D: 40},
		{B: 1, T: 2 * attnBlock, Hq: 2, Hkv: 1, D: 64},
		{B: 1, T: attnBlock + 1, Hq: 3, Hkv: 1, D: 7},
		{B: 1, T: 300, Hq: 2, Hkv: 1, D: 8}, // products deeper than a kernel's kc
	} {
		scale := 1 / math.Sqrt(float64(a.D))
		q := opRandom(rng, F32, a.B, a.T, a.Hq, a.D)
		k := opRandom(rng, F32, a.B, a.T, a.Hkv, a.D)
		v := opRandom(rng, F32, a.B, a.T, a.Hkv, a.D)
		dout := opRandom(rng, F32, a.B, a.T, a.Hq, a.D)
		wantOut, wantLSE := refAttention(opF64(q), opF64(k), opF64(v), a, scale)
		wantDQ, wantDK, wantDV := refAttentionBackward(opF64(q), opF64(k), opF64(v), opF64(dout), a, scale)
		for _, gk := range f32 {
			for _, ek := range expKernels() {
				gemmF32, expImpl = gk, ek
				name := fmt.Sprintf("%s %s T%d Hq%d Hkv%d D%d", gk.name, ek.name, a.T, a.Hq, a.Hkv, a.D)
				out, lse := New(F32, a.B, a.T, a.Hq, a.D), New(F32, a.B, a.Hq, a.T)
				dq := New(F32, a.B, a.T, a.Hq, a.D)
				dk, dv := New(F32, a.B, a.T, a.Hkv, a.D), New(F32, a.B, a.T, a.Hkv, a.D)
				for _, x := range []*Tensor{out, lse, dq, dk, dv} {
					poison(x)
				}
				if err := cpu.Attention(out, lse, q, k, v, nil, float32(scale)); err != nil {
					t.Fatal(err)
				}
				if err := cpu.AttentionBackward(dq, dk, dv, dout, q, k, v, nil, out, lse, float32(scale)); err != nil {
					t.Fatal(err)
				}
				opCheck(t, name+" out", out, wantOut, 1e-5)
				opCheck(t, name+" lse", lse, wantLSE, 1e-5)
				opCheck(t, name+" dq", dq, wantDQ, 1e-4)
				opCheck(t, name+" dk", dk, wantDK, 1e-4)
				opCheck(t, name+" dv", dv, wantDV, 1e-4)
			}
		}
	}
}

// TestAttentionThreadsAgree checks that results do not depend on the number
// of threads: bit for bit at GOMAXPROCS 1 and 4.
func TestAttentionThreadsAgree(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	for _, a := range []attnDims{{B: 2, T: 33, Hq: 4, Hkv: 2, D: 16}, {B: 2, T: 2*attnBlock + 7, Hq: 4, Hkv: 2, D: 16}} {
		attnThreadsAgree(t, rng, a)
	}
}

func attnThreadsAgree(t *testing.T, rng *rand.Rand, a attnDims) {
	q := opRandom(rng, BF16, a.B, a.T, a.Hq, a.D)
	k := opRandom(rng, BF16, a.B, a.T, a.Hkv, a.D)
	v := opRandom(rng, BF16, a.B, a.T, a.Hkv, a.D)
	dout := opRandom(rng, BF16, a.B, a.T, a.Hq, a.D)
	run := func(procs int) [][]byte {
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(procs))
		cpu := NewCPU()
		out, lse := New(BF16, a.B, a.T, a.Hq, a.D), New(F32, a.B, a.Hq, a.T)
		dq := New(F32, a.B, a.T, a.Hq, a.D)
		dk, dv := New(F32, a.B, a.T, a.Hkv, a.D), New(F32, a.B, a.T, a.Hkv, a.D)
		if err := cpu.Attention(out, lse, q, k, v, nil, 0.25); err != nil {
			t.Fatal(err)
		}
		if err := cpu.AttentionBackward(dq, dk, dv, dout, q, k, v, nil, out, lse, 0.25); err != nil {
			t.Fatal(err)
		}
		return [][]byte{out.Bytes(), lse.Bytes(), dq.Bytes(), dk.Bytes(), dv.Bytes()}
	}
	one, four := run(1), run(4)
	for i, name := range []string{"out", "lse", "dq", "dk", "dv"} {
		if string(one[i]) != string(four[i]) {
			t.Errorf("T=%d: %s differs between 1 and 4 threads", a.T, name)
		}
	}
}

func TestAttentionErrors(t *testing.T) {
	cpu := NewCPU()
	q, k, v := New(F32, 2, 5, 4, 8), New(F32, 2, 5, 2, 8), New(F32, 2, 5, 2, 8)
	out, lse := New(F32, 2, 5, 4, 8), New(F32, 2, 4, 5)
	opWantErr(t, "rank", cpu.Attention(out, lse, New(F32, 10, 4, 8), k, v, nil, 1), "[B, T, heads, D]")
	opWantErr(t, "heads", cpu.Attention(out, lse, q, New(F32, 2, 5, 3, 8), New(F32, 2, 5, 3, 8), nil, 1), "multiple")
	opWantErr(t, "k length", cpu.Attention(out, lse, q, New(F32, 2, 6, 2, 8), v, nil, 1), "does not match")
	opWantErr(t, "v", cpu.Attention(out, lse, q, k, New(F32, 2, 5, 2, 7), nil, 1), "shape of k")
	opWantErr(t, "out", cpu.Attention(New(F32, 2, 5, 4, 7), lse, q, k, v, nil, 1), "shape of q")
	opWantErr(t, "lse", cpu.Attention(out, New(F32, 2, 4, 4), q, k, v, nil, 1), "lse")
	opWantErr(t, "lse dtype", cpu.Attention(out, New(BF16, 2, 4, 5), q, k, v, nil, 1), "lse")
	opWantErr(t, "I32 q", cpu.Attention(out, lse, New(I32, 2, 5, 4, 8), k, v, nil, 1), "floating-point")
	opWantErr(t, "backward dk", cpu.AttentionBackward(New(F32, 2, 5, 4, 8), New(F32, 2, 5, 4, 8), New(F32, 2, 5, 2, 8),
		out, q, k, v, nil, out, lse, 1), "shape of k")
	opWantErr(t, "backward dout", cpu.AttentionBackward(New(F32, 2, 5, 4, 8), New(F32, 2, 5, 2, 8), New(F32, 2, 5, 2, 8),
		New(I32, 2, 5, 4, 8), q, k, v, nil, out, lse, 1), "floating-point")
}

// docStartTensor returns docStart I32 [B, T] for rows that pack documents of
// the given lengths, in order.
func docStartTensor(t *testing.T, T int, rows ...[]int) *Tensor {
	t.Helper()
	ds := make([]int32, 0, len(rows)*T)
	for _, lens := range rows {
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
	x, err := FromI32(ds, len(rows), T)
	if err != nil {
		t.Fatal(err)
	}
	return x
}

// sliceRows returns rows t0..t0+n-1 of row b of x [B, T, heads, D] as a new
// [1, n, heads, D] tensor.
func sliceRows(x *Tensor, b, t0, n int) *Tensor {
	T, heads, D := x.Dim(1), x.Dim(2), x.Dim(3)
	v := make([]float32, n*heads*D)
	readF32(v, x, (b*T+t0)*heads*D)
	out := New(x.dtype, 1, n, heads, D)
	writeF32(out, 0, v)
	return out
}

// sliceLSE returns lse[b, :, t0:t0+n] of lse [B, H, T] as [1, H, n].
func sliceLSE(lse *Tensor, b, t0, n int) *Tensor {
	H, T := lse.Dim(1), lse.Dim(2)
	v := lse.F32()
	out := New(F32, 1, H, n)
	for h := 0; h < H; h++ {
		copy(out.F32()[h*n:(h+1)*n], v[(b*H+h)*T+t0:][:n])
	}
	return out
}

// TestAttentionDocuments checks that attention over rows packing several
// documents equals attention over each document alone, forward (out, lse)
// and backward (dq, dk, dv): documents of 5, 1, 64 and 70 tokens (across
// the 64-row query blocks, with one of a single token) and 64, 1, 75 (one
// starting on a block's edge), GQA, F32 with every micro-kernel this CPU
// has (the key range a block skips is rounded to the kernel's sliver) and
// BF16.
func TestAttentionDocuments(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 22))
	docs := [][]int{{5, 1, 64, 70}, {64, 1, 75}}
	a := attnDims{B: 2, T: 140, Hq: 4, Hkv: 2, D: 16}
	f32, _ := gemmKernels()
	saved := gemmF32
	defer func() { gemmF32 = saved }()
	cpu := NewCPU()
	ds := docStartTensor(t, a.T, docs...)
	for _, dt := range []DType{F32, BF16} {
		// The packed and the separate runs sum dk and dv over query blocks
		// grouped differently (2e-7 seen; out, lse and dq came out
		// identical). For BF16, a float32 out that rounded the other way
		// would also feed D = rowsum(dout * out) of the backward.
		tol, gradTol := 1e-6, 1e-6
		if dt == BF16 {
			tol, gradTol = 1e-2, 1e-2
		}
		q := opRandom(rng, dt, a.B, a.T, a.Hq, a.D)
		k := opRandom(rng, dt, a.B, a.T, a.Hkv, a.D)
		v := opRandom(rng, dt, a.B, a.T, a.Hkv, a.D)
		dout := opRandom(rng, dt, a.B, a.T, a.Hq, a.D)
		kernels := f32
		if dt == BF16 {
			kernels = kernels[:1]
		}
		for _, gk := range kernels {
			gemmF32 = gk
			out, lse := New(dt, a.B, a.T, a.Hq, a.D), New(F32, a.B, a.Hq, a.T)
			dq := New(F32, a.B, a.T, a.Hq, a.D)
			dk, dv := New(F32, a.B, a.T, a.Hkv, a.D), New(F32, a.B, a.T, a.Hkv, a.D)
			for _, x := range []*Tensor{out, lse, dq, dk, dv} {
				poison(x)
			}
			if err := cpu.Attention(out, lse, q, k, v, ds, 0.25); err != nil {
				t.Fatal(err)
			}
			if err := cpu.AttentionBackward(dq, dk, dv, dout, q, k, v, ds, out, lse, 0.25); err != nil {
				t.Fatal(err)
			}
			for b, lens := range docs {
				t0 := 0
				for _, n := range lens {
					name := fmt.Sprintf("%v %s row %d document %d..%d", dt, gk.name, b, t0, t0+n-1)
					dq1 := New(F32, 1, n, a.Hq, a.D)
					dk1, dv1 := New(F32, 1, n, a.Hkv, a.D), New(F32, 1, n, a.Hkv, a.D)
					q1, k1, v1 := sliceRows(q, b, t0, n), sliceRows(k, b, t0, n), sliceRows(v, b, t0, n)
					out1, lse1 := New(dt, 1, n, a.Hq, a.D), New(F32, 1, a.Hq, n)
					if err := cpu.Attention(out1, lse1, q1, k1, v1, nil, 0.25); err != nil {
						t.Fatal(err)
					}
					if err := cpu.AttentionBackward(dq1, dk1, dv1, sliceRows(dout, b, t0, n), q1, k1, v1, nil, out1, lse1, 0.25); err != nil {
						t.Fatal(err)
					}
					docCheck(t, name+" out", sliceRows(out, b, t0, n), out1, tol)
					docCheck(t, name+" lse", sliceLSE(lse, b, t0, n), lse1, 1e-6)
					docCheck(t, name+" dq", sliceRows(dq, b, t0, n), dq1, gradTol)
					docCheck(t, name+" dk", sliceRows(dk, b, t0, n), dk1, gradTol)
					docCheck(t, name+" dv", sliceRows(dv, b, t0, n), dv1, gradTol)
					t0 += n
				}
			}
		}
	}
}

// docCheck compares a document's part of a packed result with the result of
// running it alone.
func docCheck(t *testing.T, what string, packed, alone *Tensor, tol float64) {
	t.Helper()
	want := make([]float64, alone.NumElements())
	for i, x := range alone.ToF32() {
		want[i] = float64(x)
	}
	if e := opRelErr(packed.ToF32(), want); e > tol {
		t.Errorf("%s: packed differs from alone by %.3g (relative) > %.3g", what, e, tol)
	}
}

// TestAttentionDocumentsGradient checks attention with docStart against the
// float64 reference forward and the backward against its finite
// differences, with a row of documents 3, 1 and 5 tokens long next to a row
// of one document.
func TestAttentionDocumentsGradient(t *testing.T) {
	rng := rand.New(rand.NewPCG(23, 24))
	cpu := NewCPU()
	a := attnDims{B: 2, T: 9, Hq: 4, Hkv: 2, D: 3}
	docStart := docStartTensor(t, a.T, []int{3, 1, 5}, []int{9})
	ds := docStart.I32()
	const scale = 0.6
	q := opRandom(rng, F32, a.B, a.T, a.Hq, a.D)
	k := opRandom(rng, F32, a.B, a.T, a.Hkv, a.D)
	v := opRandom(rng, F32, a.B, a.T, a.Hkv, a.D)
	dout := opRandom(rng, F32, a.B, a.T, a.Hq, a.D)
	out, lse := New(F32, a.B, a.T, a.Hq, a.D), New(F32, a.B, a.Hq, a.T)
	if err := cpu.Attention(out, lse, q, k, v, docStart, scale); err != nil {
		t.Fatal(err)
	}
	qs, ks, vs, cot := opF64(q), opF64(k), opF64(v), opF64(dout)
	wantOut, wantLSE := refAttentionDocs(qs, ks, vs, a, scale, ds)
	opCheck(t, "out", out, wantOut, 1e-5)
	opCheck(t, "lse", lse, wantLSE, 1e-5)
	dq := New(F32, a.B, a.T, a.Hq, a.D)
	dk, dv := New(F32, a.B, a.T, a.Hkv, a.D), New(F32, a.B, a.T, a.Hkv, a.D)
	if err := cpu.AttentionBackward(dq, dk, dv, dout, q, k, v, docStart, out, lse, scale); err != nil {
		t.Fatal(err)
	}
	loss := func() float64 {
		o, _ := refAttentionDocs(qs, ks, vs, a, scale, ds)
		return opDot(o, cot)
	}
	opCheck(t, "dq", dq, opNumGrad(loss, qs), 1e-4)
	opCheck(t, "dk", dk, opNumGrad(loss, ks), 1e-4)
	opCheck(t, "dv", dv, opNumGrad(loss, vs), 1e-4)
}

func TestAttentionDocStartErrors(t *testing.T) {
	cpu := NewCPU()
	q, k, v := New(F32, 2, 5, 4, 8), New(F32, 2, 5, 2, 8), New(F32, 2, 5, 2, 8)
	out, lse := New(F32, 2, 5, 4, 8), New(F32, 2, 4, 5)
	ds := func(v ...int32) *Tensor {
		x, err := FromI32(v, 2, 5)
		if err != nil {
			t.Fatal(err)
		}
		return x
	}
	good := ds(0, 0, 2, 2, 4, 0, 1, 1, 1, 1)
	if err := cpu.Attention(out, lse, q, k, v, good, 1); err != nil {
		t.Fatalf("valid docStart: %v", err)
	}
	for _, c := range []struct {
		name     string
		docStart *Tensor
		want     string
	}{
		{"dtype", New(F32, 2, 5), "must be I32 [2 5]"},
		{"size", New(I32, 2, 4), "must be I32 [2 5]"},
		{"first", ds(0, 0, 0, 0, 0, 1, 1, 1, 1, 1), "docStart[1, 0] = 1"},
		{"negative", ds(0, 0, -1, 0, 0, 0, 0, 0, 0, 0), "docStart[0, 2] = -1"},
		{"after the token", ds(0, 0, 0, 4, 4, 0, 0, 0, 0, 0), "docStart[0, 3] = 4"},
		{"back", ds(0, 0, 2, 2, 0, 0, 0, 0, 0, 0), "docStart[0, 4] = 0"},
		{"not a document", ds(0, 0, 0, 0, 0, 0, 1, 1, 2, 2), "docStart[1, 3] = 2"},
	} {
		opWantErr(t, c.name, cpu.Attention(out, lse, q, k, v, c.docStart, 1), c.want)
		opWantErr(t, "backward "+c.name, cpu.AttentionBackward(New(F32, 2, 5, 4, 8), New(F32, 2, 5, 2, 8), New(F32, 2, 5, 2, 8),
			out, q, k, v, c.docStart, out, lse, 1), c.want)
	}
}
