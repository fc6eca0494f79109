package tensor

import (
	"math/rand/v2"
	"testing"
)

// BenchmarkAttention runs one forward and one backward of causal GQA
// attention in the shape of the engine's training benchmark: 4 sequences of
// 256 tokens, 8 query heads of 64 sharing 2 kv heads.
func BenchmarkAttention(b *testing.B) {
	const B, T, Hq, Hkv, D = 4, 256, 8, 2, 64
	rng := rand.New(rand.NewPCG(1, 2))
	q := opRandom(rng, F32, B, T, Hq, D)
	k := opRandom(rng, F32, B, T, Hkv, D)
	v := opRandom(rng, F32, B, T, Hkv, D)
	dout := opRandom(rng, F32, B, T, Hq, D)
	out, lse := New(F32, B, T, Hq, D), New(F32, B, Hq, T)
	dq, dk, dv := New(F32, B, T, Hq, D), New(F32, B, T, Hkv, D), New(F32, B, T, Hkv, D)
	cpu := NewCPU()
	const scale = 0.125
	b.ResetTimer()
	for range b.N {
		if err := cpu.Attention(out, lse, q, k, v, nil, scale); err != nil {
			b.Fatal(err)
		}
		if err := cpu.AttentionBackward(dq, dk, dv, dout, q, k, v, nil, out, lse, scale); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCrossEntropy runs the fused loss with its gradient over the
// engine benchmark's 1024 tokens, hidden size 512 and a 32000-word
// float32 vocabulary.
func BenchmarkCrossEntropy(b *testing.B) {
	const N, H, V = 1024, 512, 32000
	rng := rand.New(rand.NewPCG(3, 4))
	h := opRandom(rng, F32, N, H)
	w := opRandom(rng, F32, V, H)
	lv := make([]int32, N)
	for i := range lv {
		lv[i] = int32(rng.IntN(V))
	}
	labels, _ := FromI32(lv, N)
	logprob, dh := New(F32, N), New(F32, N, H)
	cpu := NewCPU()
	b.ResetTimer()
	for range b.N {
		if err := cpu.CrossEntropy(logprob, dh, h, w, labels, 0, 1.0/N); err != nil {
			b.Fatal(err)
		}
	}
}
