package cgo

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/compassml/compass/tensor"
)

// tcTile is attention_tc.cu's TC_BQ and TC_BK: the forward's query rows
// per block and keys per tile.
const tcTile = 64

// tcAttention is the arithmetic of attention_tc.cu written out plainly, one
// query row and one key at a time: what the tensor-core kernels compute, up
// to the order of their float32 sums. With round set it rounds where they
// do: P to bf16 as the operand of P V and P^T dout (the forward's row sum
// and dS are taken from the unrounded P), dS to bf16 as the operand of
// dS k and dS^T q, and the outputs (out, dq, dk, dv) to bf16, lse staying
// float32. Without it, it is float32 throughout, which makes it
// tensor.CPU's Attention and AttentionBackward by another route
// (TestTCAttentionReference checks that).
//
// The forward takes the keys in the kernel's tiles (tcTile keys from the
// first its query tile sees), with the row's maximum running over them, so
// that P is rounded relative to the same maximum as there; the backward
// recomputes P from lse, as the kernels do.
//
// TestGPUAttentionTC holds the kernels to it at tolTCRefOut and
// tolTCRefGrad, a tenth and a third of their bound against the CPU's
// float32 attention (which their own roundings of P and dS need); the
// model's parity test uses it for roundingCPU's attention.
type tcAttention struct {
	B, T, Hq, Hkv, D int
	docStart         []int32 // [B*T], as tensor.Backend's docStart; nil: a document per row
	scale            float32
	round            bool
}

// rnd is the kernels' rounding to bf16 where round is set.
func (a tcAttention) rnd(x float32) float32 {
	if !a.round {
		return x
	}
	return tensor.BF16ToF32(tensor.F32ToBF16(x))
}

// first is the first key row t of batch b sees.
func (a tcAttention) first(b, t int) int {
	if a.docStart == nil {
		return 0
	}
	return min(max(int(a.docStart[b*a.T+t]), 0), t)
}

// row returns row t of head h of batch b of x [B, T, heads, D].
func (a tcAttention) row(x []float32, heads, b, t, h int) []float32 {
	at := ((b*a.T+t)*heads + h) * a.D
	return x[at : at+a.D]
}

func dot32(x, y []float32) float32 {
	var s float32
	for i, v := range x {
		s += v * y[i]
	}
	return s
}

// forward returns out [B, T, Hq, D] and lse [B, Hq, T] (natural log) for
// q [B, T, Hq, D], k and v [B, T, Hkv, D].
func (a tcAttention) forward(q, k, v []float32) (out, lse []float32) {
	out, lse = make([]float32, len(q)), make([]float32, a.B*a.Hq*a.T)
	scale2 := a.scale * math.Log2E // scores in the log2 domain, as the kernel keeps them
	x := make([]float32, a.T)
	o := make([]float32, a.D)
	for b := range a.B {
		for h := range a.Hq {
			g := h / (a.Hq / a.Hkv)
			for t := range a.T {
				qt, s0 := a.row(q, a.Hq, b, t, h), a.first(b, t)
				m := float32(math.Inf(-1))
				for s := s0; s <= t; s++ {
					x[s] = dot32(qt, a.row(k, a.Hkv, b, s, g)) * scale2
					m = max(m, x[s])
				}
				// Key tiles of tcTile from the first key the row's query
				// tile sees, the maximum running over them.
				q0 := t / tcTile * tcTile
				kfirst := q0
				for i := q0; i < min(q0+tcTile, a.T); i++ {
					kfirst = min(kfirst, a.first(b, i))
				}
				clear(o)
				var l float32
				mRun := float32(math.Inf(-1))
				for k0 := kfirst / tcTile * tcTile; k0 <= t; k0 += tcTile {
					lo, hi := max(k0, s0), min(k0+tcTile, t+1)
					mNew := mRun
					for s := lo; s < hi; s++ {
						mNew = max(mNew, x[s])
					}
					mRef := mNew
					if math.IsInf(float64(mNew), -1) {
						mRef = 0
					}
					corr := float32(math.Exp2(float64(mRun - mRef)))
					mRun = mNew
					l *= corr
					for d := range o {
						o[d] *= corr
					}
					for s := lo; s < hi; s++ {
						p := float32(math.Exp2(float64(x[s] - mRef)))
						l += p
						pr := a.rnd(p)
						for d, vd := range a.row(v, a.Hkv, b, s, g) {
							o[d] += pr * vd
						}
					}
				}
				m = mRun
				inv := 1 / l
				for d, od := range o {
					a.row(out, a.Hq, b, t, h)[d] = a.rnd(od * inv)
				}
				lse[(b*a.Hq+h)*a.T+t] = (m + float32(math.Log2(float64(l)))) * math.Ln2
			}
		}
	}
	return out, lse
}

// backward returns dq, dk and dv for dout and the forward's out and lse:
// delta = rowsum(dout * out), P = exp(scale q k^T - lse), dS = P (dout v^T
// - delta), dq = scale dS k, dk = scale dS^T q, dv = P^T dout, dk and dv
// summed over the kv group's query heads.
func (a tcAttention) backward(dout, q, k, v, out, lse []float32) (dq, dk, dv []float32) {
	dq, dk, dv = make([]float32, len(q)), make([]float32, len(k)), make([]float32, len(v))
	scale2 := a.scale * math.Log2E
	acc := make([]float32, a.D)
	for b := range a.B {
		for h := range a.Hq {
			g := h / (a.Hq / a.Hkv)
			for t := range a.T {
				qt, dot := a.row(q, a.Hq, b, t, h), a.row(dout, a.Hq, b, t, h)
				delta := dot32(dot, a.row(out, a.Hq, b, t, h))
				lse2 := lse[(b*a.Hq+h)*a.T+t] * math.Log2E
				clear(acc)
				for s := a.first(b, t); s <= t; s++ {
					ks, vs := a.row(k, a.Hkv, b, s, g), a.row(v, a.Hkv, b, s, g)
					p := float32(math.Exp2(float64(dot32(qt, ks)*scale2 - lse2)))
					dS := p * (dot32(dot, vs) - delta)
					pr, dSr := a.rnd(p), a.rnd(dS)
					dks, dvs := a.row(dk, a.Hkv, b, s, g), a.row(dv, a.Hkv, b, s, g)
					for d := range acc {
						acc[d] += dSr * ks[d]
						dks[d] += dSr * qt[d] // scaled and rounded below
						dvs[d] += pr * dot[d]
					}
				}
				for d, v := range acc {
					a.row(dq, a.Hq, b, t, h)[d] = a.rnd(a.scale * v)
				}
			}
		}
	}
	for i := range dk {
		dk[i] = a.rnd(a.scale * dk[i])
		dv[i] = a.rnd(dv[i])
	}
	return dq, dk, dv
}

// TestTCAttentionReference checks the reference itself: without rounding
// it is the CPU's Attention and AttentionBackward, which the GPU tests
// compare the float32 kernels with, on GQA groups of 1, 3 and 4, rows
// packing documents, and a length that fills no tile.
func TestTCAttentionReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	cpu := tensor.NewCPU()
	for _, c := range []struct {
		B, T, Hq, Hkv, D int
		docs             []int32
	}{
		{1, 1, 2, 1, 8, nil},
		{2, 45, 3, 3, 16, nil},
		{1, 70, 4, 1, 64, nil},
		{2, 33, 6, 2, 24, []int32{0, 0, 0, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 16, 17, 17, 17, 17, 17, 17, 17, 17, 17, 17, 17, 17, 17, 17, 17, 17,
			0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10}},
	} {
		name := fmt.Sprintf("B %d T %d Hq %d Hkv %d D %d docs %v", c.B, c.T, c.Hq, c.Hkv, c.D, c.docs != nil)
		random := func(shape ...int) *tensor.Tensor {
			x := tensor.New(tensor.F32, shape...)
			for i := range x.F32() {
				x.F32()[i] = float32(rng.NormFloat64())
			}
			return x
		}
		q, k, v := random(c.B, c.T, c.Hq, c.D), random(c.B, c.T, c.Hkv, c.D), random(c.B, c.T, c.Hkv, c.D)
		dout := random(c.B, c.T, c.Hq, c.D)
		var ds *tensor.Tensor
		if c.docs != nil {
			var err error
			if ds, err = tensor.FromI32(c.docs, c.B, c.T); err != nil {
				t.Fatal(err)
			}
		}
		out, lse := tensor.New(tensor.F32, c.B, c.T, c.Hq, c.D), tensor.New(tensor.F32, c.B, c.Hq, c.T)
		dq, dk, dv := tensor.New(tensor.F32, q.Shape()...), tensor.New(tensor.F32, k.Shape()...), tensor.New(tensor.F32, v.Shape()...)
		scale := float32(1 / math.Sqrt(float64(c.D)))
		if err := cpu.Attention(out, lse, q, k, v, ds, scale); err != nil {
			t.Fatal(err)
		}
		if err := cpu.AttentionBackward(dq, dk, dv, dout, q, k, v, ds, out, lse, scale); err != nil {
			t.Fatal(err)
		}
		ref := tcAttention{B: c.B, T: c.T, Hq: c.Hq, Hkv: c.Hkv, D: c.D, docStart: c.docs, scale: scale}
		rOut, rLse := ref.forward(q.F32(), k.F32(), v.F32())
		rdq, rdk, rdv := ref.backward(dout.F32(), q.F32(), k.F32(), v.F32(), out.F32(), lse.F32())
		for _, r := range []struct {
			what      string
			got, want []float32
		}{{"out", rOut, out.F32()}, {"lse", rLse, lse.F32()}, {"dq", rdq, dq.F32()}, {"dk", rdk, dk.F32()}, {"dv", rdv, dv.F32()}} {
			if c.T == 1 && (r.what == "dq" || r.what == "dk") {
				// A softmax over one key has no gradient: both are rounding
				// noise about 0.
				if maxAbs(r.got) > 1e-5 {
					t.Errorf("%s: %s: %v, want 0", name, r.what, r.got)
				}
				continue
			}
			if e := maxScaledErr(r.got, r.want); e > 1e-5 {
				t.Errorf("%s: %s: largest error %.3g of the rms > 1e-5", name, r.what, e)
			}
		}
	}
}

func maxAbs(x []float32) float64 {
	m := 0.0
	for _, v := range x {
		m = max(m, math.Abs(float64(v)))
	}
	return m
}

// maxScaledErr is the largest |got - want| / (|want| + rms(want)): the
// elementwise measure of the GPU tests' closeTo.
func maxScaledErr(got, want []float32) float64 {
	rms := 0.0
	for _, w := range want {
		rms += float64(w) * float64(w)
	}
	rms = math.Sqrt(rms / float64(max(len(want), 1)))
	worst := 0.0
	for i, w := range want {
		e := math.Abs(float64(got[i])-float64(w)) / (math.Abs(float64(w)) + rms)
		if math.IsNaN(e) {
			return math.Inf(1)
		}
		worst = max(worst, e)
	}
	return worst
}
