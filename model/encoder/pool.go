package encoder

import (
	"fmt"
	"math"

	"github.com/compassml/compass/tensor"
)

// Pooling is how a text's token states become one vector.
type Pooling string

const (
	// PoolMean averages the states of the text's tokens, special tokens
	// included, padding excluded: e5's average_pool over the attention mask,
	// and sentence-transformers' mean pooling.
	PoolMean Pooling = "mean"
	// PoolCLS takes the state of the first token (<s> or [CLS]), as
	// sentence-transformers' CLS pooling (LaBSE) does; not BERT's pooler.
	PoolCLS Pooling = "cls"
)

// ParsePooling returns the Pooling named s ("mean" or "cls").
func ParsePooling(s string) (Pooling, error) {
	switch p := Pooling(s); p {
	case PoolMean, PoolCLS:
		return p, nil
	}
	return "", fmt.Errorf("encoder: pooling %q: want %q or %q", s, PoolMean, PoolCLS)
}

// Pool returns one vector per sequence from the hidden states F32
// [B, T, H] on the host that Forward returned for sequences of the given
// lengths, pooled by p and, with normalize, scaled to unit length (L2).
// Sums are in float64. A vector that cannot be normalised (zero, NaN or
// infinite) is an error naming its sequence.
func Pool(hidden *tensor.Tensor, lengths []int, p Pooling, normalize bool) ([][]float32, error) {
	if hidden == nil || hidden.DType() != tensor.F32 || hidden.Rank() != 3 || !hidden.OnHost() {
		return nil, fmt.Errorf("encoder: pool: hidden %v must be F32 [B, T, H] on the host", hidden)
	}
	B, T, H := hidden.Dim(0), hidden.Dim(1), hidden.Dim(2)
	if len(lengths) != B {
		return nil, fmt.Errorf("encoder: pool: %d lengths for %d sequences", len(lengths), B)
	}
	if p != PoolMean && p != PoolCLS {
		return nil, fmt.Errorf("encoder: pool: unknown pooling %q", p)
	}
	states := hidden.F32()
	out := make([][]float32, B)
	sum := make([]float64, H)
	for b, n := range lengths {
		if n < 1 || n > T {
			return nil, fmt.Errorf("encoder: pool: sequence %d: length %d outside [1, %d]", b, n, T)
		}
		clear(sum)
		rows := n
		if p == PoolCLS {
			rows = 1
		}
		for t := 0; t < rows; t++ {
			for j, x := range states[(b*T+t)*H : (b*T+t+1)*H] {
				sum[j] += float64(x)
			}
		}
		div := float64(rows)
		if normalize {
			norm := 0.0
			for _, s := range sum {
				norm += s * s
			}
			div = math.Sqrt(norm) // the 1/n of the mean cancels
			if div == 0 || math.IsNaN(div) || math.IsInf(div, 0) {
				return nil, fmt.Errorf("encoder: pool: sequence %d: the pooled state has norm %v", b, div)
			}
		}
		v := make([]float32, H)
		for j, s := range sum {
			v[j] = float32(s / div)
		}
		out[b] = v
	}
	return out, nil
}
