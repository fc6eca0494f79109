package tensor

import (
	"fmt"
	"math"
)

// IgnoreIndex is the label of a position that does not count in the loss,
// as in PyTorch's cross_entropy.
const IgnoreIndex = -100

// defaultLossChunk is the number of vocabulary columns CrossEntropy takes at
// a time when the caller does not say.
const defaultLossChunk = 8192

// CrossEntropy implements Backend. For each row it keeps the running max m
// of the logits seen so far, the sum s of exp(logit - m) (float64: it runs
// over the whole vocabulary) and, for dh, acc = sum exp(logit - m) w[j];
// when m grows, s and acc are multiplied by exp(m_old - m_new), so that
// after the last chunk s is the softmax denominator and acc/s = softmax w.
func (c *CPU) CrossEntropy(logprob, dh, h, w, labels *Tensor, chunkSize int, gradScale float32) error {
	if err := floatCheck("cross entropy", h, w); err != nil {
		return err
	}
	if h.Rank() < 2 || w.Rank() != 2 || w.Dim(1) != h.Dim(-1) {
		return fmt.Errorf("tensor: cross entropy: h %v must be [N, H] and w %v [V, H]", h, w)
	}
	V, H := w.Dim(0), w.Dim(1)
	N := 1
	for _, d := range h.shape[:h.Rank()-1] {
		N *= d
	}
	if labels.dtype != I32 || labels.NumElements() != N {
		return fmt.Errorf("tensor: cross entropy: labels %v must be I32 with %d elements, one per row of h %v", labels, N, h)
	}
	if logprob.dtype != F32 || logprob.NumElements() != N {
		return fmt.Errorf("tensor: cross entropy: logprob %v must be F32 with %d elements, one per row of h %v", logprob, N, h)
	}
	if dh != nil {
		if err := floatCheck("cross entropy", dh); err != nil {
			return err
		}
		if !dh.SameShape(h) {
			return fmt.Errorf("tensor: cross entropy: dh %v must have the shape of h %v", dh, h)
		}
	}
	lab := labels.I32()
	for i, l := range lab {
		if l != IgnoreIndex && (l < 0 || int(l) >= V) {
			return fmt.Errorf("tensor: cross entropy: label %d at position %d is outside the vocabulary [0, %d)", l, i, V)
		}
	}
	if c.BF16Products {
		h = roundForBF16(h, w) // once, not once per chunk's product
	}
	if chunkSize <= 0 {
		chunkSize = defaultLossChunk
	}
	chunkSize = min(chunkSize, V)

	// The accumulator is dh itself when dh is F32, a float32 copy otherwise.
	var acc *Tensor
	var accF []float32
	if dh != nil {
		acc = dh
		if dh.dtype != F32 {
			acc = New(F32, N, H)
		}
		accF = acc.F32()
		clear(accF)
	}
	m := make([]float32, N)
	for i := range m {
		m[i] = float32(math.Inf(-1))
	}
	s := make([]float64, N)
	target := make([]float32, N) // the logit of the label, caught in its chunk
	buf := make([]float32, N*chunkSize)
	rowGrain := max(1, (1<<13)/max(chunkSize, 1))

	for c0 := 0; c0 < V; c0 += chunkSize {
		c1 := min(c0+chunkSize, V)
		n := c1 - c0
		wc, err := w.Slice(c0, c1)
		if err != nil {
			return fmt.Errorf("tensor: cross entropy: vocabulary chunk [%d, %d): %w", c0, c1, err)
		}
		logits, err := FromF32(buf[:N*n], N, n)
		if err != nil {
			return fmt.Errorf("tensor: cross entropy: logits of chunk [%d, %d): %w", c0, c1, err)
		}
		if err := c.MatMul(logits, h, wc, false, true, 1, 0); err != nil {
			return fmt.Errorf("tensor: cross entropy: logits of chunk [%d, %d): %w", c0, c1, err)
		}
		// Fold the chunk into each row's running max and sum, turning the
		// logits into exp(logit - m) in place: the weights of this chunk's
		// rows of w in acc.
		parallelFor(N, rowGrain, func(lo, hi int) {
			for i := lo; i < hi; i++ {
				row := buf[i*n : (i+1)*n]
				if lab[i] == IgnoreIndex {
					clear(row) // adds nothing to acc, which stays 0
					continue
				}
				if l := int(lab[i]); l >= c0 && l < c1 {
					target[i] = row[l-c0]
				}
				if mc := maxF32(row); mc > m[i] {
					r := math.Exp(float64(m[i] - mc))
					s[i] *= r
					if acc != nil {
						a := accF[i*H : (i+1)*H]
						for j := range a {
							a[j] *= float32(r)
						}
					}
					m[i] = mc
				}
				s[i] += expSubSum(row, row, m[i])
			}
		})
		if acc != nil {
			if err := c.MatMul(acc, logits, wc, false, false, 1, 1); err != nil {
				return fmt.Errorf("tensor: cross entropy: gradient of chunk [%d, %d): %w", c0, c1, err)
			}
		}
	}

	lp := logprob.F32()
	parallelFor(N, max(1, (1<<13)/max(H, 1)), func(lo, hi int) {
		wl := make([]float32, H)
		for i := lo; i < hi; i++ {
			if lab[i] == IgnoreIndex {
				lp[i] = 0
				if dh != nil {
					clear(wl)
					writeF32(dh, i*H, wl)
				}
				continue
			}
			lp[i] = float32(float64(target[i]) - float64(m[i]) - math.Log(s[i]))
			if dh == nil {
				continue
			}
			// dh = gradScale * (softmax w - w[label])
			a := accF[i*H : (i+1)*H]
			readF32(wl, w, int(lab[i])*H)
			inv := float32(1 / s[i])
			for j := range wl {
				wl[j] = gradScale * (a[j]*inv - wl[j])
			}
			writeF32(dh, i*H, wl)
		}
	})
	return nil
}
