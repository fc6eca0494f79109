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
	a, err := attnShapes(op, q, k, v, likeQ, likeKV)
	if err != nil {
		return a, err
	}
	if lse.dtype != F32 || lse.NumElements() != a.B*a.Hq*a.T {
		return a, fmt.Errorf("tensor: %s: lse %v must be F32 [%d %d %d]", op, lse, a.B, a.Hq, a.T)
	}
	return a, nil
}

// attnShapes is attnCheck without lse.
func attnShapes(op string, q, k, v *Tensor, likeQ, likeKV []*Tensor) (attnDims, error) {
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
	return a, nil
}

// docStarts validates docStart, nil or I32 [B, T] as Backend.Attention
// says, and returns its values (nil for plain causal attention).
func docStarts(op string, docStart *Tensor, a attnDims) ([]int32, error) {
	if docStart == nil {
		return nil, nil
	}
	if err := hostCheck(op, docStart); err != nil {
		return nil, err
	}
	if docStart.dtype != I32 || docStart.NumElements() != a.B*a.T {
		return nil, fmt.Errorf("tensor: %s: docStart %v must be I32 [%d %d]", op, docStart, a.B, a.T)
	}
	ds := docStart.I32()
	for b := 0; b < a.B; b++ {
		row := ds[b*a.T : (b+1)*a.T]
		for t, s := range row {
			switch {
			case t == 0 && s != 0:
				return nil, fmt.Errorf("tensor: %s: docStart[%d, 0] = %d: a row's first document starts at 0", op, b, s)
			case t > 0 && s != row[t-1] && s != int32(t):
				return nil, fmt.Errorf("tensor: %s: docStart[%d, %d] = %d: a token's document starts where the previous token's does (%d) or at the token itself",
					op, b, t, s, row[t-1])
			}
		}
	}
	return ds, nil
}

// docStartAt is where the document of token i of the flattened [B, T]
// docStart begins in its row: 0 without documents.
func docStartAt(ds []int32, i int) int {
	if ds == nil {
		return 0
	}
	return int(ds[i])
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

// attnBlock is how many query rows the attention ops take at a time: their
// scores against the keys up to the block's diagonal are one [attnBlock x T]
// matrix, so the scratch of a task grows with T, never with T x T.
const attnBlock = 64

// The products of attention run in the calling goroutine, which is already
// one of the parallel tasks, through the micro-kernel that MatMul uses, on
// operands packed here from contiguous float32 copies of a head.

// packSlivers packs a matrix as the micro-kernel reads an operand: element
// (f, p) of x, at x[f*fs + p*ps], for the free index f < nFree (a row of
// op(A), a column of op(B)) and the depth p < depth, goes to sliver f/width,
// which holds depth groups of width values, zero where f >= nFree.
func packSlivers(dst, x []float32, fs, ps, nFree, depth, width int) {
	for s := 0; s*width < nFree; s++ {
		out := dst[s*depth*width : (s+1)*depth*width]
		n := min(width, nFree-s*width)
		if n < width {
			clear(out)
		}
		if fs == 1 { // the free values at one depth are contiguous
			for p := 0; p < depth; p++ {
				src := x[p*ps+s*width:][:n]
				for q, v := range src {
					out[p*width+q] = v
				}
			}
			continue
		}
		for q := 0; q < n; q++ { // transpose
			row := x[(s*width+q)*fs:]
			for p := 0; p < depth; p++ {
				out[p*width+q] = row[p*ps]
			}
		}
	}
}

// packedLen is how many floats packSlivers writes.
func packedLen(nFree, depth, width int) int {
	return (nFree + width - 1) / width * width * depth
}

// mulPacked sets the m x n matrix c (rows ldc apart) to alpha * A B, or adds
// that into it when add is true, where A, m x d, and B, d x n, were packed by
// packSlivers for kernel k, with depths aDepth and bDepth of which the first
// d are used. Each kernel call goes at most k.kc deep, as in MatMul, so that
// the B sliver stays in L1. tile is scratch of k.mr*k.nr floats for the
// tiles at the edges of c.
func mulPacked(k *gemmKernel[float32], c []float32, ldc, m, n, d int, a []float32, aDepth int, b []float32, bDepth int, alpha float32, add bool, tile []float32) {
	mr, nr := k.mr, k.nr
	if d == 0 && !add {
		for i := 0; i < m; i++ {
			clear(c[i*ldc : i*ldc+n])
		}
	}
	for p0 := 0; p0 < d; p0 += k.kc {
		kc := min(k.kc, d-p0)
		add := add || p0 > 0 // later depth blocks add to the first
		for j := 0; j < n; j += nr {
			bp := &b[j*bDepth+p0*nr]
			nn := min(nr, n-j)
			for i := 0; i < m; i += mr {
				ap := &a[i*aDepth+p0*mr]
				mm := min(mr, m-i)
				if mm == mr && nn == nr {
					k.kern(kc, ap, bp, &c[i*ldc+j], ldc, alpha, add)
					continue
				}
				k.kern(kc, ap, bp, &tile[0], nr, alpha, false)
				for r := 0; r < mm; r++ {
					row := c[(i+r)*ldc+j : (i+r)*ldc+j+nn]
					for q := range row {
						if add {
							row[q] += tile[r*nr+q]
						} else {
							row[q] = tile[r*nr+q]
						}
					}
				}
			}
		}
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

// Attention implements Backend. Each (batch, query head) is one task: its
// q, k and v rows are widened into contiguous [T, D] copies and k and v
// packed once; then for each block of attnBlock query rows, S = scale q k^T
// against the keys the block sees (from the start of its first row's
// document, rounded down to a sliver of the packed k, up to the block's
// diagonal) is one product, each row of S becomes its softmax over keys
// start <= s <= t (0 elsewhere), and the block's output is the product of
// that with v.
func (*CPU) Attention(out, lse, q, k, v, docStart *Tensor, scale float32) error {
	a, err := attnCheck("attention", q, k, v, lse, []*Tensor{out}, nil)
	if err != nil {
		return err
	}
	ds, err := docStarts("attention", docStart, a)
	if err != nil {
		return err
	}
	T, D := a.T, a.D
	lv := lse.F32()
	kern := gemmF32
	mr, nr := kern.mr, kern.nr
	parallelFor(a.B*a.Hq, 1, func(lo, hi int) {
		Q, K, V := make([]float32, T*D), make([]float32, T*D), make([]float32, T*D)
		O := make([]float32, T*D)
		kp := make([]float32, packedLen(T, D, nr)) // k as B of q k^T
		vp := make([]float32, packedLen(D, T, nr)) // v as B of P v
		ap := make([]float32, packedLen(attnBlock, max(D, T), mr))
		S := make([]float32, attnBlock*T)
		tile := make([]float32, mr*nr)
		var inv [attnBlock]float32
		for task := lo; task < hi; task++ {
			b, h := task/a.Hq, task%a.Hq
			g := h / a.group()
			readHead(Q, q, b, h)
			readHead(K, k, b, g)
			readHead(V, v, b, g)
			packSlivers(kp, K, D, 1, T, D, nr)
			packSlivers(vp, V, 1, D, D, T, nr)
			for i0 := 0; i0 < T; i0 += attnBlock {
				rows := min(attnBlock, T-i0)
				// The block's rows see keys lo .. i0+rows-1: n of them. lo
				// starts a sliver of kp; docStart is non-decreasing, so the
				// first row's start is the block's smallest.
				lo := docStartAt(ds, b*T+i0) / nr * nr
				n := i0 + rows - lo
				Sb := S[:rows*n]
				packSlivers(ap, Q[i0*D:], D, 1, rows, D, mr)
				mulPacked(kern, Sb, n, rows, n, D, ap, D, kp[lo*D:], D, scale, false, tile)
				for r := 0; r < rows; r++ {
					t := i0 + r
					row := Sb[r*n : (r+1)*n]
					s0, s1 := docStartAt(ds, b*T+t)-lo, t-lo+1 // row t sees row[s0:s1]
					m := maxF32(row[s0:s1])
					sum := expSubSum(row[s0:s1], row[s0:s1], m)
					clear(row[:s0])
					clear(row[s1:])
					lv[(b*a.Hq+h)*T+t] = m + float32(math.Log(sum))
					inv[r] = float32(1 / sum)
				}
				Ob := O[i0*D : (i0+rows)*D]
				packSlivers(ap, Sb, n, 1, rows, n, mr)
				mulPacked(kern, Ob, D, rows, D, n, ap, n, vp[lo*nr:], T, 1, false, tile)
				for r := 0; r < rows; r++ {
					o := Ob[r*D : (r+1)*D]
					for i := range o {
						o[i] *= inv[r]
					}
				}
			}
			writeHead(out, b, h, O)
		}
	})
	return nil
}

// AttentionBackward implements Backend. Each (batch, kv head) is one task,
// so that the sums into dk and dv over the query heads of its group stay in
// one goroutine, in a fixed order. For each query head of the group and each
// block of attnBlock query rows against the keys it sees (as in Attention):
//
//	P  = exp(scale q k^T - lse), 0 outside start <= s <= t
//	dS = P (dout v^T - D)
//	dq = scale dS k, dk += scale dS^T q, dv += P^T dout
//
// each product in one call of the micro-kernel loop.
func (*CPU) AttentionBackward(dq, dk, dv, dout, q, k, v, docStart, out, lse *Tensor, scale float32) error {
	const op = "attention backward"
	a, err := attnCheck(op, q, k, v, lse, []*Tensor{dq, dout, out}, []*Tensor{dk, dv})
	if err != nil {
		return err
	}
	ds, err := docStarts(op, docStart, a)
	if err != nil {
		return err
	}
	T, D := a.T, a.D
	lv := lse.F32()
	kern := gemmF32
	mr, nr := kern.mr, kern.nr
	parallelFor(a.B*a.Hkv, 1, func(lo, hi int) {
		K, V := make([]float32, T*D), make([]float32, T*D)
		dK, dV := make([]float32, T*D), make([]float32, T*D)
		Q, O, dO := make([]float32, T*D), make([]float32, T*D), make([]float32, T*D)
		dQ := make([]float32, T*D)
		Dt := make([]float32, T)
		kp := make([]float32, packedLen(T, D, nr))  // k as B of q k^T
		vtp := make([]float32, packedLen(T, D, nr)) // v as B of dout v^T
		kdp := make([]float32, packedLen(D, T, nr)) // k as B of dS k
		ap := make([]float32, max(packedLen(attnBlock, max(D, T), mr), packedLen(T, attnBlock, mr)))
		bp := make([]float32, packedLen(D, attnBlock, nr))
		P, dS := make([]float32, attnBlock*T), make([]float32, attnBlock*T)
		tile := make([]float32, mr*nr)
		for task := lo; task < hi; task++ {
			b, g := task/a.Hkv, task%a.Hkv
			readHead(K, k, b, g)
			readHead(V, v, b, g)
			packSlivers(kp, K, D, 1, T, D, nr)
			packSlivers(vtp, V, D, 1, T, D, nr)
			packSlivers(kdp, K, 1, D, D, T, nr)
			clear(dK)
			clear(dV)
			for h := g * a.group(); h < (g+1)*a.group(); h++ {
				readHead(Q, q, b, h)
				readHead(O, out, b, h)
				readHead(dO, dout, b, h)
				for t := range Dt {
					Dt[t] = dot(dO[t*D:(t+1)*D], O[t*D:(t+1)*D])
				}
				for i0 := 0; i0 < T; i0 += attnBlock {
					rows := min(attnBlock, T-i0)
					end := i0 + rows
					lo := docStartAt(ds, b*T+i0) / nr * nr // keys lo..end-1, as in Attention
					n := end - lo
					Pb, dSb := P[:rows*n], dS[:rows*n]
					Qb, dOb := Q[i0*D:end*D], dO[i0*D:end*D]

					// P = exp(scale q k^T - lse), 0 outside start <= s <= t
					packSlivers(ap, Qb, D, 1, rows, D, mr)
					mulPacked(kern, Pb, n, rows, n, D, ap, D, kp[lo*D:], D, scale, false, tile)
					for r := 0; r < rows; r++ {
						t := i0 + r
						row := Pb[r*n : (r+1)*n]
						s0, s1 := docStartAt(ds, b*T+t)-lo, t-lo+1
						expSubSum(row[s0:s1], row[s0:s1], lv[(b*a.Hq+h)*T+t])
						clear(row[:s0])
						clear(row[s1:])
					}

					// dS = P (dout v^T - D)
					packSlivers(ap, dOb, D, 1, rows, D, mr)
					mulPacked(kern, dSb, n, rows, n, D, ap, D, vtp[lo*D:], D, 1, false, tile)
					for r := 0; r < rows; r++ {
						d := Dt[i0+r]
						for j, p := range Pb[r*n : (r+1)*n] {
							dSb[r*n+j] = p * (dSb[r*n+j] - d)
						}
					}

					// dq = scale dS k
					dQb := dQ[i0*D : end*D]
					packSlivers(ap, dSb, n, 1, rows, n, mr)
					mulPacked(kern, dQb, D, rows, D, n, ap, n, kdp[lo*nr:], T, scale, false, tile)

					// dk += scale dS^T q, into the rows of keys lo..end-1
					packSlivers(ap, dSb, 1, n, n, rows, mr)
					packSlivers(bp, Qb, 1, D, D, rows, nr)
					mulPacked(kern, dK[lo*D:], D, n, D, rows, ap, rows, bp, rows, scale, true, tile)

					// dv += P^T dout
					packSlivers(ap, Pb, 1, n, n, rows, mr)
					packSlivers(bp, dOb, 1, D, D, rows, nr)
					mulPacked(kern, dV[lo*D:], D, n, D, rows, ap, rows, bp, rows, 1, true, tile)
				}
				writeHead(dq, b, h, dQ)
			}
			writeHead(dk, b, g, dK)
			writeHead(dv, b, g, dV)
		}
	})
	return nil
}
