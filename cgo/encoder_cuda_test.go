//go:build cuda

package cgo

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/compassml/compass/kernels"
	"github.com/compassml/compass/model/encoder"
	"github.com/compassml/compass/tensor"
)

// The encoders' operations (LayerNorm, GELU, BidirectionalAttention) and
// a whole encoder forward, GPU against CPU on random inputs, outputs
// poisoned with NaN.

func TestGPULayerNorm(t *testing.T) {
	b := gpuBackend(t)
	rng := newRNG(t)
	f32, bf16, f16 := tensor.F32, tensor.BF16, tensor.F16
	oneWarp := withShape(t, b, "layernorm_forward", func(l kernels.Launch) kernels.Launch {
		l.Block[0] = 32
		return l
	})
	for _, c := range []struct {
		rows, H   int
		x, w, out tensor.DType
		bias      bool
		offset    float64 // added to x: the variance must survive a large mean
	}{
		{13, 100, f32, f32, f32, true, 0}, {3, 768, f32, f32, f32, true, 30}, {5, 384, bf16, bf16, bf16, true, 0},
		{4, 77, f32, bf16, f32, false, 0}, {2, 50, f16, f32, f16, true, 0}, {1, 1, f32, f32, f32, true, 0},
		{7, 4096, f32, f32, f32, true, 0},
	} {
		xh := randHost(rng, f32, 1, c.rows, c.H)
		for i := range xh.F32() {
			xh.F32()[i] += float32(c.offset)
		}
		if c.x != f32 {
			r := tensor.New(c.x, c.rows, c.H)
			must(t, cpu.Copy(r, xh))
			xh = r
		}
		x, w, bias := pair{xh, toDev(t, b, xh)}, input(t, b, rng, c.w, c.H), input(t, b, rng, c.w, c.H)
		if !c.bias {
			bias = pair{}
		}
		for _, blk := range []struct {
			name string
			be   *Backend
		}{{"block 128", b}, {"block 32", oneWarp}} {
			name := fmt.Sprintf("layernorm %dx%d x %s w %s -> %s bias %v offset %v, %s", c.rows, c.H, c.x, c.w, c.out, c.bias, c.offset, blk.name)
			out := output(t, b, c.out, c.rows, c.H)
			must(t, cpu.LayerNorm(out.h, x.h, w.h, bias.h, 1e-5))
			must(t, blk.be.LayerNorm(out.d, x.d, w.d, bias.d, 1e-5))
			if c.H == 1 {
				// One element: x - mean is 0, the output is the bias alone.
				compare(t, b, name, out, 0)
				continue
			}
			closeTo(t, b, name, out, elemTol(c.out, 1e-5), 0)
		}
	}
	// In place, as a caller may do.
	x, w, bias := input(t, b, rng, f32, 6, 200), input(t, b, rng, f32, 200), input(t, b, rng, f32, 200)
	must(t, cpu.LayerNorm(x.h, x.h, w.h, bias.h, 1e-12))
	must(t, b.LayerNorm(x.d, x.d, w.d, bias.d, 1e-12))
	closeTo(t, b, "layernorm in place", x, 1e-5, 0)

	for _, bad := range []struct {
		out, x, w, bias *tensor.Tensor
	}{
		{output(t, b, f32, 2, 4).d, x.h, output(t, b, f32, 4).d, nil},                        // host x
		{output(t, b, f32, 6, 200).d, x.d, output(t, b, f32, 199).d, nil},                    // weight size
		{output(t, b, f32, 6, 200).d, x.d, w.d, output(t, b, f32, 3).d},                      // bias size
		{output(t, b, f32, 200, 6).d, x.d, w.d, nil},                                         // out shape
		{output(t, b, f32, 6, 200).d, x.d, toDev(t, b, tensor.New(tensor.I32, 200)), bias.d}, // int weight
	} {
		if err := b.LayerNorm(bad.out, bad.x, bad.w, bad.bias, 1e-5); err == nil {
			t.Errorf("layernorm out %v x %v w %v bias %v: no error", bad.out, bad.x, bad.w, bad.bias)
		}
	}
}

func TestGPUGELU(t *testing.T) {
	b := gpuBackend(t)
	rng := newRNG(t)
	threeBlocks := withShape(t, b, "gelu_forward", gridX(3))
	for _, dt := range dtypes {
		for _, n := range []int{1, 4099, 3 << 20} {
			name := fmt.Sprintf("gelu %s[%d]", dt, n)
			xh := randHost(rng, dt, 3, n) // out to |x| ~ 10: both tails
			x, out := pair{xh, toDev(t, b, xh)}, output(t, b, dt, n)
			must(t, cpu.GELU(out.h, x.h))
			must(t, b.GELU(out.d, x.d))
			// erff and float64 erf differ in the last bit or so; near the
			// zero of gelu (x ~ -0.75 is not one: gelu < 0 only) the
			// absolute error is what counts, so a floor of 1e-6.
			closeTo(t, b, name, out, elemTol(dt, 1e-6), 1e-6)
			if n == 4099 {
				out3 := output(t, b, dt, n)
				must(t, threeBlocks.GELU(out3.d, x.d))
				out3.h = out.h
				closeTo(t, b, name+", 3 blocks", out3, elemTol(dt, 1e-6), 1e-6)
				must(t, cpu.GELU(x.h, x.h))
				must(t, b.GELU(x.d, x.d))
				closeTo(t, b, name+" in place", x, elemTol(dt, 1e-6), 1e-6)
			}
		}
	}
	x := input(t, b, rng, tensor.F32, 4, 5)
	if err := b.GELU(output(t, b, tensor.F32, 5, 4).d, x.d); err == nil {
		t.Error("gelu into another shape: no error")
	}
	if err := b.GELU(output(t, b, tensor.F32, 4, 5).d, x.h); err == nil {
		t.Error("gelu of a host tensor: no error")
	}
}

func TestGPUBidirectionalAttention(t *testing.T) {
	b := gpuBackend(t)
	rng := newRNG(t)
	f32, bf16, f16 := tensor.F32, tensor.BF16, tensor.F16
	for _, s := range []struct {
		B, T, Hq, Hkv, D int
		keyLen           []int32
		dt               tensor.DType
	}{
		{1, 1, 1, 1, 8, []int32{1}, f32},
		{3, 37, 4, 4, 16, []int32{37, 20, 1}, f32},  // one key alone; rows shorter than a tile
		{2, 150, 6, 2, 64, []int32{150, 71}, f32},   // several key tiles, GQA
		{2, 67, 12, 12, 32, []int32{33, 67}, f32},   // e5-small's head dimension
		{2, 130, 12, 12, 64, []int32{129, 5}, bf16}, // e5-base's, bf16
		{1, 40, 4, 4, 128, []int32{40}, bf16},       // the largest head dimension
		{2, 33, 3, 3, 24, []int32{32, 17}, f16},
	} {
		scale := float32(1 / math.Sqrt(float64(s.D)))
		q := input(t, b, rng, s.dt, s.B, s.T, s.Hq, s.D)
		k, v := input(t, b, rng, s.dt, s.B, s.T, s.Hkv, s.D), input(t, b, rng, s.dt, s.B, s.T, s.Hkv, s.D)
		klh, _ := tensor.FromI32(s.keyLen, s.B)
		kl := pair{klh, toDev(t, b, klh)}
		out := output(t, b, s.dt, s.B, s.T, s.Hq, s.D)
		must(t, cpu.BidirectionalAttention(out.h, q.h, k.h, v.h, kl.h, scale))
		must(t, b.BidirectionalAttention(out.d, q.d, k.d, v.d, kl.d, scale))
		name := fmt.Sprintf("bidirectional attention B %d T %d Hq %d Hkv %d D %d keyLen %v %s", s.B, s.T, s.Hq, s.Hkv, s.D, s.keyLen, s.dt)
		compare(t, b, name, out, tolFor(tolReduce, s.dt))
		closeTo(t, b, name, out, elemTol(s.dt, 1e-5), 0)
	}

	// A keyLen outside [1, T] is clamped on the device (no read past T).
	q, kv := input(t, b, rng, f32, 2, 9, 2, 8), input(t, b, rng, f32, 2, 9, 2, 8)
	klh, _ := tensor.FromI32([]int32{100, -3}, 2)
	out := output(t, b, f32, 2, 9, 2, 8)
	must(t, b.BidirectionalAttention(out.d, q.d, kv.d, kv.d, toDev(t, b, klh), 0.3))
	clamped, _ := tensor.FromI32([]int32{9, 1}, 2)
	must(t, cpu.BidirectionalAttention(out.h, q.h, kv.h, kv.h, clamped, 0.3))
	closeTo(t, b, "bidirectional attention, keyLen clamped", out, 1e-5, 0)

	for _, bad := range []*tensor.Tensor{nil, klh, toDev(t, b, tensor.New(tensor.I32, 3)), toDev(t, b, tensor.New(tensor.F32, 2))} {
		if err := b.BidirectionalAttention(out.d, q.d, kv.d, kv.d, bad, 0.3); err == nil {
			t.Errorf("bidirectional attention with keyLen %v: no error", bad)
		}
	}
}

// TestGPUEncoder runs a tiny XLM-R and a tiny BERT encoder on both backends:
// the last hidden states and the pooled embeddings agree.
func TestGPUEncoder(t *testing.T) {
	b := gpuBackend(t)
	for _, c := range []struct {
		name   string
		config string
	}{
		{"xlm-roberta", `{"architectures": ["XLMRobertaModel"], "model_type": "xlm-roberta", "hidden_size": 64,
			"num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128, "vocab_size": 70,
			"max_position_embeddings": 80, "type_vocab_size": 1, "layer_norm_eps": 1e-05, "pad_token_id": 1}`},
		{"bert", `{"architectures": ["BertModel"], "model_type": "bert", "hidden_size": 48,
			"num_hidden_layers": 2, "num_attention_heads": 3, "intermediate_size": 96, "vocab_size": 60,
			"max_position_embeddings": 64, "type_vocab_size": 2, "layer_norm_eps": 1e-12, "pad_token_id": 0}`},
	} {
		dir := t.TempDir()
		cfg, err := encoder.WriteRandomCheckpoint(dir, []byte(c.config), tensor.F32, 5, "")
		must(t, err)
		mc, err := encoder.Load(dir, nil)
		must(t, err)
		mg, err := encoder.Load(dir, b)
		must(t, err)
		rng := rand.New(rand.NewPCG(3, 4))
		seqs := make([][]int, 5)
		lengths := make([]int, len(seqs))
		for i := range seqs {
			n := 1 + rng.IntN(cfg.MaxTokens())
			if i == 0 {
				n = cfg.MaxTokens()
			}
			for range n {
				seqs[i] = append(seqs[i], rng.IntN(cfg.VocabSize))
			}
			lengths[i] = n
		}
		hc, err := mc.Forward(seqs)
		must(t, err)
		hg, err := mg.Forward(seqs)
		must(t, err)
		got := pair{h: hc, d: toDev(t, b, hg)}
		closeTo(t, b, c.name+" hidden states", got, 1e-4, 0)
		pc, err := encoder.Pool(hc, lengths, encoder.PoolMean, true)
		must(t, err)
		pg, err := encoder.Pool(hg, lengths, encoder.PoolMean, true)
		must(t, err)
		for i := range pc {
			for j := range pc[i] {
				if d := math.Abs(float64(pc[i][j] - pg[i][j])); d > 1e-5 || math.IsNaN(d) {
					t.Fatalf("%s: text %d: pooled element %d: GPU %g, CPU %g", c.name, i, j, pg[i][j], pc[i][j])
				}
			}
		}
		mc.Close()
		mg.Close()
	}
}
