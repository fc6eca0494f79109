package tensor

import (
	"fmt"
	"math"
)

// attnDims are the sizes of an attention call: q [B, T, Hq, D] and k, v
// [B, T, Hkv, D].
type attnDims struct {
	B, T, Hq, Hkv, D int
}

// group is how many query heads share one kv head.
func (a attnDims) group() int { return a.Hq / a.Hkv }

// attnCheck validates q, k, v and lse, and that every tensor of likeQ has q's
// shape and every tensor of likeKV has k's.
func attnCheck(op string, q, k, v, lse *Tensor, likeQ, likeKV []*Tensor) (attnDims, error) {
	var a attnDims
	all := append(append([]*Tensor{q, k, v}, likeQ...), likeKV...)
	if err := floatCheck(op, all...); err != nil {
		return a, err
	}
	if q.Rank() != 4 || k.Rank() != 4 {
		return a, fmt.Errorf("tensor: %s: q %v and k %v must be [B, T, heads, D]", op, q, k)
	}
	a = attnDims{B: q.Dim(0), T: q.Dim(1), Hq: q.Dim(2), Hkv: k.Dim(2), D: q.Dim(3)}
	if k.Dim(0) != a.B || k.Dim(1) != a.T || k.Dim(3) != a.D {
		return a, fmt.Errorf("tensor: %s: k %v does not match q %v", op, k, q)
	}
	if a.Hkv == 0 || a.Hq%a.Hkv != 0 {
		return a, fmt.Errorf("tensor: %s: %d query heads are not a multiple of %d kv heads", op, a.Hq, a.Hkv)
	}
	for _, t := range append([]*Tensor{v}, likeKV...) {
		if !t.SameShape(k) {
			return a, fmt.Errorf("tensor: %s: %v must have the shape of k %v", op, t, k)
		}
	}
	for _, t := range likeQ {
		if !t.SameShape(q) {
			return a, fmt.Errorf("tensor: %s: %v must have the shape of q %v", op, t, q)
		}
	}
	if lse.dtype != F32 || lse.NumElements() != a.B*a.Hq*a.T {
		return a, fmt.Errorf("tensor: %s: lse %v must be F32 [%d %d %d]", op, lse, a.B, a.Hq, a.T)
	}
	return a, nil
}

// readHead widens head h of batch b of x [B, T, heads, D] into dst [T*D].
func readHead(dst []float32, x *Tensor, b, h int) {
	T, heads, D := x.Dim(1), x.Dim(2), x.Dim(3)
	for t := 0; t < T; t++ {
		readF32(dst[t*D:(t+1)*D], x, ((b*T+t)*heads+h)*D)
	}
}

// writeHead is the inverse of readHead.
func writeHead(x *Tensor, b, h int, src []float32) {
	T, heads, D := x.Dim(1), x.Dim(2), x.Dim(3)
	for t := 0; t < T; t++ {
		writeF32(x, ((b*T+t)*heads+h)*D, src[t*D:(t+1)*D])
	}
}

// dot is the inner product of x and y. Four partial sums break the chain of
// dependent additions (about four times faster); the order is fixed, so the
// result is still the same on every run.
func dot(x, y []float32) float32 {
	y = y[:len(x)]
	var s0, s1, s2, s3 float32
	i := 0
	for ; i+4 <= len(x); i += 4 {
		s0 += x[i] * y[i]
		s1 += x[i+1] * y[i+1]
		s2 += x[i+2] * y[i+2]
		s3 += x[i+3] * y[i+3]
	}
	for ; i < len(x); i++ {
		s0 += x[i] * y[i]
	}
	return (s0 + s1) + (s2 + s3)
}

// axpy adds a*x to y.
func axpy(y []float32, a float32, x []float32) {
	x = x[:len(y)]
	for i := range y {
		y[i] += a * x[i]
	}
}

// Attention implements Backend. Each (batch, query head) is one task: its
// q, k and v rows are widened once, then each query row is one pass of a
// softmax over a scores buffer of length T.
func (*CPU) Attention(out, lse, q, k, v *Tensor, scale float32) error {
	a, err := attnCheck("attention", q, k, v, lse, []*Tensor{out}, nil)
	if err != nil {
		return err
	}
	T, D := a.T, a.D
	lv := lse.F32()
	parallelFor(a.B*a.Hq, 1, func(lo, hi int) {
		Q, K, V := make([]float32, T*D), make([]float32, T*D), make([]float32, T*D)
		O := make([]float32, T*D)
		scores := make([]float32, T)
		for task := lo; task < hi; task++ {
			b, h := task/a.Hq, task%a.Hq
			g := h / a.group()
			readHead(Q, q, b, h)
			readHead(K, k, b, g)
			readHead(V, v, b, g)
			for t := 0; t < T; t++ {
				qt := Q[t*D : (t+1)*D]
				m := float32(math.Inf(-1))
				for s := 0; s <= t; s++ {
					scores[s] = scale * dot(qt, K[s*D:(s+1)*D])
					m = max(m, scores[s])
				}
				ot := O[t*D : (t+1)*D]
				clear(ot)
				sum := 0.0
				for s := 0; s <= t; s++ {
					p := float32(math.Exp(float64(scores[s] - m)))
					sum += float64(p)
					axpy(ot, p, V[s*D:(s+1)*D])
				}
				inv := float32(1 / sum)
				for i := range ot {
					ot[i] *= inv
				}
				lv[(b*a.Hq+h)*T+t] = m + float32(math.Log(sum))
			}
			writeHead(out, b, h, O)
		}
	})
	return nil
}

// AttentionBackward implements Backend. Each (batch, kv head) is one task,
// so that the sums into dk and dv over the query heads of its group stay in
// one goroutine, in a fixed order.
func (*CPU) AttentionBackward(dq, dk, dv, dout, q, k, v, out, lse *Tensor, scale float32) error {
	a, err := attnCheck("attention backward", q, k, v, lse, []*Tensor{dq, dout, out}, []*Tensor{dk, dv})
	if err != nil {
		return err
	}
	T, D := a.T, a.D
	lv := lse.F32()
	parallelFor(a.B*a.Hkv, 1, func(lo, hi int) {
		K, V := make([]float32, T*D), make([]float32, T*D)
		dK, dV := make([]float32, T*D), make([]float32, T*D)
		Q, O, dO := make([]float32, T*D), make([]float32, T*D), make([]float32, T*D)
		dQ := make([]float32, T*D)
		for task := lo; task < hi; task++ {
			b, g := task/a.Hkv, task%a.Hkv
			readHead(K, k, b, g)
			readHead(V, v, b, g)
			clear(dK)
			clear(dV)
			for h := g * a.group(); h < (g+1)*a.group(); h++ {
				readHead(Q, q, b, h)
				readHead(O, out, b, h)
				readHead(dO, dout, b, h)
				clear(dQ)
				for t := 0; t < T; t++ {
					qt, dOt, dqt := Q[t*D:(t+1)*D], dO[t*D:(t+1)*D], dQ[t*D:(t+1)*D]
					Dt := dot(dOt, O[t*D:(t+1)*D])
					l := lv[(b*a.Hq+h)*T+t]
					for s := 0; s <= t; s++ {
						ks, vs := K[s*D:(s+1)*D], V[s*D:(s+1)*D]
						p := float32(math.Exp(float64(scale*dot(qt, ks) - l)))
						ds := p * (dot(dOt, vs) - Dt)
						axpy(dqt, scale*ds, ks)
						axpy(dK[s*D:(s+1)*D], scale*ds, qt)
						axpy(dV[s*D:(s+1)*D], p, dOt)
					}
				}
				writeHead(dq, b, h, dQ)
			}
			writeHead(dk, b, g, dK)
			writeHead(dv, b, g, dV)
		}
	})
	return nil
}
