package tensor

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

// Tests of the encoders' operations: LayerNorm, GELU and
// BidirectionalAttention, against float64 references written the textbook
// way.

func TestLayerNorm(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	cpu := NewCPU()
	for _, c := range []struct {
		dtype   DType
		rows, H int
		bias    bool
		tol     float64
	}{
		{F32, 7, 33, true, 2e-6},
		{F32, 3, 768, false, 2e-6},
		{BF16, 5, 64, true, 1e-2},
	} {
		x := opRandom(rng, c.dtype, c.rows, c.H)
		// A large common offset: the two-pass variance must not cancel it away.
		xv := x.ToF32()
		for i := range xv {
			xv[i] += 30
		}
		writeF32(x, 0, xv)
		w, b := opRandom(rng, c.dtype, c.H), opRandom(rng, c.dtype, c.H)
		var bias *Tensor
		if c.bias {
			bias = b
		}
		out := New(c.dtype, c.rows, c.H)
		const eps = 1e-5
		if err := cpu.LayerNorm(out, x, w, bias, eps); err != nil {
			t.Fatal(err)
		}
		xs, ws, bs := opF64(x), opF64(w), opF64(b)
		want := make([]float64, len(xs))
		for r := 0; r < c.rows; r++ {
			row := xs[r*c.H : (r+1)*c.H]
			mean, ss := 0.0, 0.0
			for _, v := range row {
				mean += v
			}
			mean /= float64(c.H)
			for _, v := range row {
				ss += (v - mean) * (v - mean)
			}
			rstd := 1 / math.Sqrt(ss/float64(c.H)+eps)
			for i, v := range row {
				want[r*c.H+i] = (v - mean) * rstd * ws[i]
				if c.bias {
					want[r*c.H+i] += bs[i]
				}
			}
		}
		opCheck(t, c.dtype.String()+" layernorm", out, want, c.tol)
	}
}

func TestLayerNormBadInput(t *testing.T) {
	cpu := NewCPU()
	x := New(F32, 2, 4)
	for _, c := range []struct {
		name         string
		out, w, bias *Tensor
		want         string
	}{
		{"weight size", New(F32, 2, 4), New(F32, 3), nil, "weight"},
		{"bias size", New(F32, 2, 4), New(F32, 4), New(F32, 5), "bias"},
		{"out shape", New(F32, 4, 2), New(F32, 4), nil, "out"},
		{"int weight", New(F32, 2, 4), New(I32, 4), nil, "I32"},
	} {
		err := cpu.LayerNorm(c.out, x, c.w, c.bias, 1e-5)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one mentioning %q", c.name, err, c.want)
		}
	}
}

func TestGELU(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	cpu := NewCPU()
	for _, dtype := range []DType{F32, BF16} {
		x := opRandom(rng, dtype, 5000)
		xv := x.ToF32()
		xv[0], xv[1], xv[2] = 0, -8, 8 // gelu(0) = 0, gelu(-8) ~ 0, gelu(8) ~ 8
		writeF32(x, 0, xv)
		out := New(dtype, 5000)
		if err := cpu.GELU(out, x); err != nil {
			t.Fatal(err)
		}
		want := make([]float64, 5000)
		for i, v := range opF64(x) {
			// Phi(v) by the complementary error function: a different
			// formula from the op's erf.
			want[i] = v * 0.5 * math.Erfc(-v/math.Sqrt2)
		}
		tol := 1e-6
		if dtype == BF16 {
			tol = 8e-3
		}
		opCheck(t, dtype.String()+" gelu", out, want, tol)
	}
	if err := cpu.GELU(New(F32, 3), New(F32, 4)); err == nil {
		t.Error("gelu of mismatched shapes: no error")
	}
}

// refBidirAttention is attention without a causal mask over keys
// s < keyLen[b], in float64.
func refBidirAttention(q, k, v []float64, a attnDims, scale float64, keyLen []int32) []float64 {
	B, T, Hq, Hkv, D := a.B, a.T, a.Hq, a.Hkv, a.D
	out := make([]float64, B*T*Hq*D)
	for b := 0; b < B; b++ {
		n := int(keyLen[b])
		for h := 0; h < Hq; h++ {
			g := h / (Hq / Hkv)
			for t := 0; t < T; t++ {
				qt := q[((b*T+t)*Hq+h)*D:][:D]
				p := make([]float64, n)
				m := math.Inf(-1)
				for s := range p {
					ks := k[((b*T+s)*Hkv+g)*D:][:D]
					for i := range qt {
						p[s] += qt[i] * ks[i]
					}
					p[s] *= scale
					m = max(m, p[s])
				}
				sum := 0.0
				for s := range p {
					p[s] = math.Exp(p[s] - m)
					sum += p[s]
				}
				ot := out[((b*T+t)*Hq+h)*D:][:D]
				for s := range p {
					vs := v[((b*T+s)*Hkv+g)*D:][:D]
					for i := range ot {
						ot[i] += p[s] / sum * vs[i]
					}
				}
			}
		}
	}
	return out
}

func TestBidirectionalAttention(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	cpu := NewCPU()
	for _, c := range []struct {
		a      attnDims
		keyLen []int32
		dtype  DType
		tol    float64
	}{
		{attnDims{B: 1, T: 1, Hq: 1, Hkv: 1, D: 4}, []int32{1}, F32, 2e-6},
		{attnDims{B: 3, T: 37, Hq: 4, Hkv: 4, D: 16}, []int32{37, 20, 1}, F32, 2e-6},
		{attnDims{B: 2, T: 150, Hq: 6, Hkv: 2, D: 64}, []int32{150, 71}, F32, 2e-6}, // several query blocks, GQA
		{attnDims{B: 2, T: 9, Hq: 2, Hkv: 1, D: 8}, []int32{9, 4}, BF16, 1e-2},
	} {
		a := c.a
		q := opRandom(rng, c.dtype, a.B, a.T, a.Hq, a.D)
		k := opRandom(rng, c.dtype, a.B, a.T, a.Hkv, a.D)
		v := opRandom(rng, c.dtype, a.B, a.T, a.Hkv, a.D)
		out := New(c.dtype, a.B, a.T, a.Hq, a.D)
		kl, _ := FromI32(c.keyLen, a.B)
		scale := 1 / math.Sqrt(float64(a.D))
		if err := cpu.BidirectionalAttention(out, q, k, v, kl, float32(scale)); err != nil {
			t.Fatal(err)
		}
		want := refBidirAttention(opF64(q), opF64(k), opF64(v), a, scale, c.keyLen)
		opCheck(t, c.dtype.String()+" bidirectional attention", out, want, c.tol)

		// What lies in the padded keys and values does not matter.
		for b := 0; b < a.B; b++ {
			for s := int(c.keyLen[b]); s < a.T; s++ {
				off := (b*a.T + s) * a.Hkv * a.D
				junk := make([]float32, a.Hkv*a.D)
				for i := range junk {
					junk[i] = 1e4 * float32(rng.NormFloat64())
				}
				writeF32(k, off, junk)
				writeF32(v, off, junk)
			}
		}
		again := New(c.dtype, a.B, a.T, a.Hq, a.D)
		if err := cpu.BidirectionalAttention(again, q, k, v, kl, float32(scale)); err != nil {
			t.Fatal(err)
		}
		first := out.ToF32()
		for i, x := range again.ToF32() {
			if x != first[i] {
				t.Fatalf("%v: padded keys changed output element %d: %v != %v", a, i, x, first[i])
			}
		}
	}
}

func TestBidirectionalAttentionBadInput(t *testing.T) {
	cpu := NewCPU()
	q, kv := New(F32, 2, 5, 2, 4), New(F32, 2, 5, 1, 4)
	for _, c := range []struct {
		name   string
		keyLen *Tensor
		want   string
	}{
		{"nil", nil, "keyLen is required"},
		{"zero", mustI32(t, []int32{5, 0}, 2), "keyLen[1] = 0"},
		{"past T", mustI32(t, []int32{6, 1}, 2), "keyLen[0] = 6"},
		{"size", mustI32(t, []int32{5}, 1), "must be I32 [2]"},
		{"dtype", New(F32, 2), "must be I32 [2]"},
	} {
		err := cpu.BidirectionalAttention(New(F32, 2, 5, 2, 4), q, kv, kv, c.keyLen, 0.5)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one mentioning %q", c.name, err, c.want)
		}
	}
}

func mustI32(t *testing.T, v []int32, shape ...int) *Tensor {
	t.Helper()
	x, err := FromI32(v, shape...)
	if err != nil {
		t.Fatal(err)
	}
	return x
}
