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
				for s := 0; s <= t; s++ {
					ks := k[((b*T+s)*Hkv+g)*D:][:D]
					dot := 0.0
					for i := range qt {
						dot += qt[i] * ks[i]
					}
					scores[s] = scale * dot
					m = max(m, scores[s])
				}
				sum := 0.0
				for s := 0; s <= t; s++ {
					sum += math.Exp(scores[s] - m)
				}
				ot := out[((b*T+t)*Hq+h)*D:][:D]
				for s := 0; s <= t; s++ {
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
			if err := cpu.Attention(out, lse, q, k, v, float32(scale)); err != nil {
				t.Fatal(err)
			}
			qs, ks, vs := opF64(q), opF64(k), opF64(v)
			wantOut, wantLSE := refAttention(qs, ks, vs, a, scale)
			opCheck(t, name+" out", out, wantOut, fwdTol)
			opCheck(t, name+" lse", lse, wantLSE, 1e-5)

			dout := opRandom(rng, dt, a.B, a.T, a.Hq, a.D)
			dq := New(F32, a.B, a.T, a.Hq, a.D)
			dk, dv := New(F32, a.B, a.T, a.Hkv, a.D), New(F32, a.B, a.T, a.Hkv, a.D)
			if err := cpu.AttentionBackward(dq, dk, dv, dout, q, k, v, out, lse, float32(scale)); err != nil {
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
				if err := cpu.Attention(out, lse, q, k, v, float32(scale)); err != nil {
					t.Fatal(err)
				}
				if err := cpu.AttentionBackward(dq, dk, dv, dout, q, k, v, out, lse, float32(scale)); err != nil {
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
		if err := cpu.Attention(out, lse, q, k, v, 0.25); err != nil {
			t.Fatal(err)
		}
		if err := cpu.AttentionBackward(dq, dk, dv, dout, q, k, v, out, lse, 0.25); err != nil {
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
	opWantErr(t, "rank", cpu.Attention(out, lse, New(F32, 10, 4, 8), k, v, 1), "[B, T, heads, D]")
	opWantErr(t, "heads", cpu.Attention(out, lse, q, New(F32, 2, 5, 3, 8), New(F32, 2, 5, 3, 8), 1), "multiple")
	opWantErr(t, "k length", cpu.Attention(out, lse, q, New(F32, 2, 6, 2, 8), v, 1), "does not match")
	opWantErr(t, "v", cpu.Attention(out, lse, q, k, New(F32, 2, 5, 2, 7), 1), "shape of k")
	opWantErr(t, "out", cpu.Attention(New(F32, 2, 5, 4, 7), lse, q, k, v, 1), "shape of q")
	opWantErr(t, "lse", cpu.Attention(out, New(F32, 2, 4, 4), q, k, v, 1), "lse")
	opWantErr(t, "lse dtype", cpu.Attention(out, New(BF16, 2, 4, 5), q, k, v, 1), "lse")
	opWantErr(t, "I32 q", cpu.Attention(out, lse, New(I32, 2, 5, 4, 8), k, v, 1), "floating-point")
	opWantErr(t, "backward dk", cpu.AttentionBackward(New(F32, 2, 5, 4, 8), New(F32, 2, 5, 4, 8), New(F32, 2, 5, 2, 8),
		out, q, k, v, out, lse, 1), "shape of k")
	opWantErr(t, "backward dout", cpu.AttentionBackward(New(F32, 2, 5, 4, 8), New(F32, 2, 5, 2, 8), New(F32, 2, 5, 2, 8),
		New(I32, 2, 5, 4, 8), q, k, v, out, lse, 1), "floating-point")
}
