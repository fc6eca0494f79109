package tensor

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestAttentionKVMatchesAttention: causal attention over a whole sequence,
// and the same sequence fed to a cache in chunks (a prefill of 7 tokens,
// then 1, then 4, then 90 and 160 through the blocked path, the last
// spanning three 64-row blocks, then 1 and 9 past the kvChunk rows a bf16
// cache is widened by), give the same outputs; with a bf16 cache, those of
// attention over keys and values rounded to bf16. Head dimension 6 takes
// the portable row loops, 16 the assembly's where the CPU has them.
func TestAttentionKVMatchesAttention(t *testing.T) {
	cpu := NewCPU()
	rng := rand.New(rand.NewPCG(1, 2))
	const B, T, Hq, Hkv, S = 2, 272, 4, 2, 280
	random := func(shape ...int) *Tensor {
		x := New(F32, shape...)
		for i := range x.F32() {
			x.F32()[i] = float32(rng.NormFloat64())
		}
		return x
	}
	for _, D := range []int{6, 16} {
		q, k, v := random(B, T, Hq, D), random(B, T, Hkv, D), random(B, T, Hkv, D)
		scale := float32(1 / math.Sqrt(float64(D)))
		for _, cache := range []DType{F32, BF16} {
			kr, vr := New(F32, B, T, Hkv, D), New(F32, B, T, Hkv, D)
			for _, p := range [][2]*Tensor{{kr, k}, {vr, v}} { // round as the cache does
				c := New(cache, B, T, Hkv, D)
				if err := cpu.Copy(c, p[1]); err != nil {
					t.Fatal(err)
				}
				if err := cpu.Copy(p[0], c); err != nil {
					t.Fatal(err)
				}
			}
			want, lse := New(F32, B, T, Hq, D), New(F32, B, Hq, T)
			if err := cpu.Attention(want, lse, q, kr, vr, nil, scale); err != nil {
				t.Fatal(err)
			}
			kc, vc := New(cache, B, S, Hkv, D), New(cache, B, S, Hkv, D)
			worst := 0.0
			for _, ch := range [][2]int{{0, 7}, {7, 8}, {8, 12}, {12, 102}, {102, 262}, {262, 263}, {263, 272}} {
				n := ch[1] - ch[0]
				part := func(x *Tensor, heads int) *Tensor {
					out := New(F32, B, n, heads, D)
					for b := 0; b < B; b++ {
						copy(out.F32()[b*n*heads*D:(b+1)*n*heads*D], x.F32()[(b*T+ch[0])*heads*D:(b*T+ch[1])*heads*D])
					}
					return out
				}
				out := New(F32, B, n, Hq, D)
				pos := must(FromI32([]int32{int32(ch[0]), int32(ch[0])}, B))
				if err := cpu.AttentionKV(out, part(q, Hq), part(k, Hkv), part(v, Hkv), kc, vc, pos, scale); err != nil {
					t.Fatal(err)
				}
				w := part(want, Hq)
				for i, x := range out.F32() {
					d := math.Abs(float64(x - w.F32()[i]))
					worst = max(worst, d)
					if d > 1e-5 {
						t.Fatalf("D=%d, cache %v, chunk %v: element %d is %v, attention gives %v", D, cache, ch, i, x, w.F32()[i])
					}
				}
			}
			t.Logf("D=%d, cache %v: largest difference %.3g", D, cache, worst)
		}
	}

	// A chunk that does not fit, and bad operands.
	const D = 6
	kc, vc := New(F32, B, S, Hkv, D), New(F32, B, S, Hkv, D)
	one := func(heads int) *Tensor { return New(F32, B, 1, heads, D) }
	for name, pos := range map[string]*Tensor{
		"past the end": must(FromI32([]int32{0, S}, B)),
		"negative":     must(FromI32([]int32{-1, 0}, B)),
		"wrong size":   must(FromI32([]int32{0}, 1)),
		"not I32":      New(F32, B),
	} {
		if err := cpu.AttentionKV(one(Hq), one(Hq), one(Hkv), one(Hkv), kc, vc, pos, 1); err == nil {
			t.Errorf("pos %s accepted", name)
		}
	}
	pos := must(FromI32([]int32{0, 0}, B))
	if err := cpu.AttentionKV(one(Hq), one(Hq), one(Hkv), one(Hkv), New(F32, B, S, Hkv+1, D), vc, pos, 1); err == nil {
		t.Error("a cache with other heads accepted")
	}
	if err := cpu.AttentionKV(one(Hq), one(3), one(Hkv), one(Hkv), kc, vc, pos, 1); err == nil {
		t.Error("out and q of different shapes accepted")
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
