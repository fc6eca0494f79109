package kernels_test

import (
	"fmt"
	"math"
	"testing"

	"github.com/compassml/compass/kernels"
	"github.com/compassml/compass/tensor"
)

// TestAttentionKV checks kv_cache_write and attention_kv against
// tensor.CPU.AttentionKV: the cache after the write (bit for bit: both
// round the same values once) and the output. Decoding (one new token) and
// chunks of several, rows at different positions (one at 0, one filling
// the cache to its end), caches longer than one 128-key tile, GQA groups of
// 1, 2 and 4, head dimensions from 5 to 128, and bf16 caches and inputs.
func TestAttentionKV(t *testing.T) {
	rng := newRand(t)
	for _, c := range []struct {
		B, Tq, S, Hq, Hkv, D int
		pos                  []int32
		dtype, cache         tensor.DType
		tol                  tolerance
	}{
		{3, 1, 300, 4, 2, 24, []int32{0, 299, 130}, tensor.F32, tensor.F32, 1e-5},
		{2, 5, 40, 4, 1, 5, []int32{35, 7}, tensor.F32, tensor.F32, 1e-5},
		{1, 3, 260, 2, 2, 128, []int32{200}, tensor.F32, tensor.BF16, 1e-5},
		{2, 1, 129, 8, 2, 64, []int32{128, 127}, tensor.BF16, tensor.BF16, 1e-2},
		{2, 40, 150, 4, 2, 16, []int32{0, 93}, tensor.F32, tensor.F32, 1e-5}, // the CPU's blocked path
	} {
		name := fmt.Sprintf("B=%d Tq=%d S=%d Hq=%d Hkv=%d D=%d %v cache %v", c.B, c.Tq, c.S, c.Hq, c.Hkv, c.D, c.dtype, c.cache)
		q := randTensor(rng, c.dtype, 1, c.B, c.Tq, c.Hq, c.D)
		k := randTensor(rng, c.dtype, 1, c.B, c.Tq, c.Hkv, c.D)
		v := randTensor(rng, c.dtype, 1, c.B, c.Tq, c.Hkv, c.D)
		kc := randTensor(rng, c.cache, 1, c.B, c.S, c.Hkv, c.D)
		vc := randTensor(rng, c.cache, 1, c.B, c.S, c.Hkv, c.D)
		pos := i32s(c.pos, c.B)
		scale := float32(1 / math.Sqrt(float64(c.D)))
		sizes := kernels.Sizes{B: c.B, T: c.Tq, N: c.S, Hq: c.Hq, Hkv: c.Hkv, D: c.D}

		// The emulator gets the caches before the CPU op writes into them.
		e := newEmu(t, "attention_kv").in("q", q).in("k", k).in("v", v).in("k_cache", kc).in("v_cache", vc).
			in("pos", pos).set("scale", scale).set("out_dtype", c.dtype).
			launch("kv_cache_write", sizes).launch("attention_kv", sizes)
		wantK, wantV := like(kc, c.cache), like(vc, c.cache)
		copy(wantK.Bytes(), kc.Bytes())
		copy(wantV.Bytes(), vc.Bytes())
		out := like(q, c.dtype)
		if err := cpu.AttentionKV(out, q, k, v, wantK, wantV, pos, scale); err != nil {
			t.Fatal(err)
		}
		got := e.run()
		closeTo(t, name+" k_cache", got["k_cache"], wantK, 0)
		closeTo(t, name+" v_cache", got["v_cache"], wantV, 0)
		closeTo(t, name+" out", got["out"], out, c.tol)
	}
}
