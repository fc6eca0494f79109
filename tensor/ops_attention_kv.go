package tensor

import "fmt"

// kvDims are the sizes of an AttentionKV call: q [B, Tq, Hq, D], the new
// keys and values [B, Tq, Hkv, D] and the cache [B, S, Hkv, D].
type kvDims struct {
	B, Tq, S, Hq, Hkv, D int
}

// kvCheck validates the operands of AttentionKV (not pos's values).
func kvCheck(out, q, k, v, kCache, vCache, pos *Tensor) (kvDims, error) {
	var a kvDims
	for _, t := range []*Tensor{out, q, k, v, kCache, vCache, pos} {
		if t == nil {
			return a, fmt.Errorf("tensor: attention kv: nil operand")
		}
	}
	if q.Rank() != 4 || k.Rank() != 4 || kCache.Rank() != 4 {
		return a, fmt.Errorf("tensor: attention kv: q %v, k %v and kCache %v must be [B, T, heads, D]", q, k, kCache)
	}
	for _, t := range []*Tensor{out, q, k, v, kCache, vCache} {
		if !t.dtype.IsFloat() {
			return a, fmt.Errorf("tensor: attention kv: %v is not a floating-point tensor", t)
		}
	}
	a = kvDims{B: q.Dim(0), Tq: q.Dim(1), S: kCache.Dim(1), Hq: q.Dim(2), Hkv: k.Dim(2), D: q.Dim(3)}
	if !out.SameShape(q) {
		return a, fmt.Errorf("tensor: attention kv: out %v must have the shape of q %v", out, q)
	}
	if k.Dim(0) != a.B || k.Dim(1) != a.Tq || k.Dim(3) != a.D || !v.SameShape(k) {
		return a, fmt.Errorf("tensor: attention kv: k %v and v %v must be [%d %d heads %d]", k, v, a.B, a.Tq, a.D)
	}
	if a.Hkv == 0 || a.Hq%a.Hkv != 0 {
		return a, fmt.Errorf("tensor: attention kv: %d query heads are not a multiple of %d kv heads", a.Hq, a.Hkv)
	}
	if kCache.Dim(0) != a.B || kCache.Dim(2) != a.Hkv || kCache.Dim(3) != a.D || !vCache.SameShape(kCache) {
		return a, fmt.Errorf("tensor: attention kv: kCache %v and vCache %v must be [%d S %d %d]", kCache, vCache, a.B, a.Hkv, a.D)
	}
	if pos.dtype != I32 || pos.NumElements() != a.B {
		return a, fmt.Errorf("tensor: attention kv: pos %v must be I32 [%d]", pos, a.B)
	}
	return a, nil
}

// AttentionKV implements Backend. The new keys and values are written into
// the cache row by row (rounded to its dtype); then each (batch, query head)
// is one task, and each of its query rows takes its scores against the
// cached keys up to its position, their float32 softmax (max subtracted,
// the sum in float64) and the weighted sum of the cached values, through
// the strided row loops of rowdot.go. The scratch of a task is one score
// per cached position: linear in S.
func (*CPU) AttentionKV(out, q, k, v, kCache, vCache, pos *Tensor, scale float32) error {
	a, err := kvCheck(out, q, k, v, kCache, vCache, pos)
	if err != nil {
		return err
	}
	if err := hostCheck("attention kv", out, q, k, v, kCache, vCache, pos); err != nil {
		return err
	}
	ps := pos.I32()
	for b, p := range ps {
		if p < 0 || int(p)+a.Tq > a.S {
			return fmt.Errorf("tensor: attention kv: pos[%d] = %d: %d new tokens do not fit in a cache of %d", b, p, a.Tq, a.S)
		}
	}
	rowLen := a.Hkv * a.D
	buf := make([]float32, rowLen)
	for b := 0; b < a.B; b++ {
		for t := 0; t < a.Tq; t++ {
			src, dst := (b*a.Tq+t)*rowLen, (b*a.S+int(ps[b])+t)*rowLen
			readF32(buf, k, src)
			writeF32(kCache, dst, buf)
			readF32(buf, v, src)
			writeF32(vCache, dst, buf)
		}
	}

	if a.Tq >= kvBlockedRows {
		attentionKVBlocked(out, q, kCache, vCache, ps, a, scale)
		return nil
	}
	D, group := a.D, a.Hq/a.Hkv
	parallelFor(a.B*a.Hq, 1, func(lo, hi int) {
		qr, o := make([]float32, D), make([]float32, D)
		scores := make([]float32, a.S)
		var kw, vw []float32
		if kCache.dtype != F32 {
			kw, vw = make([]float32, kvChunk*D), make([]float32, kvChunk*D)
		}
		// rows returns cache rows s0 up to s1 of batch b, kv head g, and
		// their stride: in place in an F32 cache, else widened into buf.
		rows := func(c *Tensor, buf []float32, b, g, s0, s1 int) ([]float32, int) {
			first := ((b*a.S+s0)*a.Hkv + g) * D
			if c.dtype == F32 {
				return c.F32()[first:], a.Hkv * D
			}
			for s := s0; s < s1; s++ {
				readF32(buf[(s-s0)*D:(s-s0+1)*D], c, first+(s-s0)*a.Hkv*D)
			}
			return buf, D
		}
		for task := lo; task < hi; task++ {
			b, h := task/a.Hq, task%a.Hq
			g := h / group
			for t := 0; t < a.Tq; t++ {
				n := int(ps[b]) + t + 1 // keys 0..position
				readF32(qr, q, ((b*a.Tq+t)*a.Hq+h)*D)
				for s0 := 0; s0 < n; s0 += kvChunk {
					s1 := min(n, s0+kvChunk)
					r, stride := rows(kCache, kw, b, g, s0, s1)
					rowDots(scores[s0:s1], qr, r, stride, scale)
				}
				p := scores[:n]
				sum := expSubSum(p, p, maxF32(p))
				clear(o)
				for s0 := 0; s0 < n; s0 += kvChunk {
					s1 := min(n, s0+kvChunk)
					r, stride := rows(vCache, vw, b, g, s0, s1)
					rowAxpy(o, p[s0:s1], r, stride)
				}
				inv := float32(1 / sum)
				for d := range o {
					o[d] *= inv
				}
				writeF32(out, ((b*a.Tq+t)*a.Hq+h)*D, o)
			}
		}
	})
	return nil
}

// kvChunk is how many cached rows AttentionKV widens at a time from a cache
// that is not F32: its scratch stays small however long the cache.
const kvChunk = 256

// kvBlockedRows is the number of new tokens from which AttentionKV takes
// its products through the micro-kernel, as Attention does: packing the
// cached keys and values costs about what a few query rows read, so it pays
// for chunks of a prompt, not for decoding one token.
const kvBlockedRows = 16

// attentionKVBlocked is AttentionKV's attention for many new tokens (after
// the cache write). Each (batch, kv head) is one task: the cached keys and
// values it can see are widened into contiguous copies and packed once for
// the query heads of its group; then, as in Attention, each block of
// attnBlock query rows takes S = scale q k^T against the keys up to its
// last row's position, the causal softmax of each row, and S v. The
// scratch of a task is linear in the cache's length.
func attentionKVBlocked(out, q, kCache, vCache *Tensor, ps []int32, a kvDims, scale float32) {
	D := a.D
	kern := gemmF32
	mr, nr := kern.mr, kern.nr
	parallelFor(a.B*a.Hkv, 1, func(lo, hi int) {
		for task := lo; task < hi; task++ {
			b, g := task/a.Hkv, task%a.Hkv
			p0 := int(ps[b])
			n := p0 + a.Tq // keys the last query sees
			K, V := make([]float32, n*D), make([]float32, n*D)
			for s := 0; s < n; s++ {
				readF32(K[s*D:(s+1)*D], kCache, ((b*a.S+s)*a.Hkv+g)*D)
				readF32(V[s*D:(s+1)*D], vCache, ((b*a.S+s)*a.Hkv+g)*D)
			}
			kp := make([]float32, packedLen(n, D, nr)) // k as B of q k^T
			vp := make([]float32, packedLen(D, n, nr)) // v as B of P v
			packSlivers(kp, K, D, 1, n, D, nr)
			packSlivers(vp, V, 1, D, D, n, nr)
			Q, O := make([]float32, a.Tq*D), make([]float32, a.Tq*D)
			ap := make([]float32, packedLen(attnBlock, max(D, n), mr))
			S := make([]float32, attnBlock*n)
			tile := make([]float32, mr*nr)
			var inv [attnBlock]float32
			for h := g * (a.Hq / a.Hkv); h < (g+1)*(a.Hq/a.Hkv); h++ {
				for t := 0; t < a.Tq; t++ {
					readF32(Q[t*D:(t+1)*D], q, ((b*a.Tq+t)*a.Hq+h)*D)
				}
				for i0 := 0; i0 < a.Tq; i0 += attnBlock {
					rows := min(attnBlock, a.Tq-i0)
					m := p0 + i0 + rows // keys this block sees
					Sb := S[:rows*m]
					packSlivers(ap, Q[i0*D:], D, 1, rows, D, mr)
					mulPacked(kern, Sb, m, rows, m, D, ap, D, kp, D, scale, false, tile)
					for r := 0; r < rows; r++ {
						row := Sb[r*m : (r+1)*m]
						end := p0 + i0 + r + 1 // row sees keys 0..its position
						mx := maxF32(row[:end])
						sum := expSubSum(row[:end], row[:end], mx)
						clear(row[end:])
						inv[r] = float32(1 / sum)
					}
					Ob := O[i0*D : (i0+rows)*D]
					packSlivers(ap, Sb, m, 1, rows, m, mr)
					mulPacked(kern, Ob, D, rows, D, m, ap, m, vp, n, 1, false, tile)
					for r := 0; r < rows; r++ {
						o := Ob[r*D : (r+1)*D]
						for i := range o {
							o[i] *= inv[r]
						}
					}
				}
				for t := 0; t < a.Tq; t++ {
					writeF32(out, ((b*a.Tq+t)*a.Hq+h)*D, O[t*D:(t+1)*D])
				}
			}
		}
	})
}
