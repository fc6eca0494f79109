//go:build cuda

package cgo

import (
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/compassml/compass/model"
	"github.com/compassml/compass/tensor"
)

// TestGPUAttentionKV compares AttentionKV with the CPU's: the caches after
// the write and the output, for decoding (one new token) and chunks, rows
// at different positions (0 and the cache's last row), caches of several
// 128-key tiles and one key past a tile, GQA groups of 1 to 4, head
// dimensions from 5 to 128, f32 and bf16 caches.
func TestGPUAttentionKV(t *testing.T) {
	b := gpuBackend(t)
	rng := newRNG(t)
	for _, s := range []struct {
		B, Tq, S, Hq, Hkv, D int
		pos                  []int32
		elementwise          bool // also held element by element (1e-5, bf16 1e-2)
	}{
		{3, 1, 1000, 8, 2, 64, []int32{0, 999, 517}, false},
		{2, 7, 300, 4, 4, 128, []int32{100, 293}, false},
		{1, 1, 5000, 32, 8, 128, []int32{4321}, false},
		{2, 64, 200, 6, 2, 96, []int32{0, 136}, false},
		{2, 5, 40, 4, 1, 5, []int32{35, 7}, true},      // a head dimension of 5, a group of 4
		{2, 1, 129, 8, 2, 64, []int32{128, 127}, true}, // one key past a 128-key tile, the cache filled to its end
		{2, 40, 150, 4, 2, 16, []int32{0, 93}, true},   // the CPU's blocked path
	} {
		for _, dt := range []tensor.DType{tensor.F32, tensor.BF16} {
			for _, cache := range []tensor.DType{tensor.F32, tensor.BF16} {
				name := fmt.Sprintf("attention kv %+v %s cache %s", s, dt, cache)
				scale := float32(1 / math.Sqrt(float64(s.D)))
				q := input(t, b, rng, dt, s.B, s.Tq, s.Hq, s.D)
				k, v := input(t, b, rng, dt, s.B, s.Tq, s.Hkv, s.D), input(t, b, rng, dt, s.B, s.Tq, s.Hkv, s.D)
				kc := copyPair(t, b, pair{randHost(rng, cache, 1, s.B, s.S, s.Hkv, s.D), nil})
				vc := copyPair(t, b, pair{randHost(rng, cache, 1, s.B, s.S, s.Hkv, s.D), nil})
				posH, err := tensor.FromI32(s.pos, s.B)
				must(t, err)
				pos := pair{posH, toDev(t, b, posH)}
				out := output(t, b, dt, s.B, s.Tq, s.Hq, s.D)
				must(t, cpu.AttentionKV(out.h, q.h, k.h, v.h, kc.h, vc.h, pos.h, scale))
				must(t, b.AttentionKV(out.d, q.d, k.d, v.d, kc.d, vc.d, pos.d, scale))
				compare(t, b, name+" k cache", kc, 0)
				compare(t, b, name+" v cache", vc, 0)
				compare(t, b, name, out, tolFor(tolReduce, dt))
				if s.elementwise {
					closeTo(t, b, name, out, elemTol(dt, 1e-5), 0)
				}
			}
		}
	}
}

// TestGPUGenerate runs cached greedy decoding of a batch of prompts of
// different lengths on the GPU and on the CPU, with the same adapters,
// and compares the logits of every step and the chosen tokens (both with
// an f32 cache, so that only the backends differ), then checks that the
// bf16 cache (the GPU's default) gives logits close to those. It runs in
// Precise mode: the default mode's LoRA products on the tensor cores
// (about 2^-16 each) move these random adapters' logits by up to 4.4e-4
// over 12 steps on the emulated device, which would make the tokens'
// argmax a matter of near-ties; TestGPUModelParity bounds the default
// mode's logits.
func TestGPUGenerate(t *testing.T) {
	b := gpuBackend(t)
	b.Precise = true
	defer func() { b.Precise = false }()
	for i, c := range tinyConfigs {
		t.Run(c.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "model")
			cfg, err := model.WriteRandomCheckpoint(dir, []byte(c.config), tensor.F32, uint64(60+i))
			must(t, err)
			onCPU, onGPU := loadPair(t, b, dir, uint64(i))
			rng := rand.New(rand.NewPCG(uint64(i), 5))
			prompts := make([][]int, 3)
			for j, n := range []int{c.seqLen, 1, c.seqLen/2 + 1} {
				for range n {
					prompts[j] = append(prompts[j], rng.IntN(cfg.VocabSize))
				}
			}
			const steps = 12
			caches := map[string]*model.KVCache{}
			for name, m := range map[string]*model.Model{"cpu": onCPU, "gpu": onGPU, "gpu-bf16": onGPU} {
				dtype := tensor.F32
				if name == "gpu-bf16" {
					dtype = tensor.BF16
				}
				kv, err := m.NewKVCache(len(prompts), c.seqLen+steps+1, dtype)
				must(t, err)
				t.Cleanup(kv.Close)
				caches[name] = kv
			}
			want, err := onCPU.Prefill(caches["cpu"], prompts)
			must(t, err)
			got, err := onGPU.Prefill(caches["gpu"], prompts)
			must(t, err)
			gotBF, err := onGPU.Prefill(caches["gpu-bf16"], prompts)
			must(t, err)
			V := cfg.VocabSize
			worst := 0.0
			defer func() { t.Logf("largest logits relative error %.3g", worst) }()
			for step := 0; ; step++ {
				e := relErr(got.F32(), want.F32())
				worst = max(worst, e)
				if e > 1e-4 {
					t.Fatalf("step %d: logits relative error %.3g > 1e-4", step, e)
				}
				if e := relErr(gotBF.F32(), want.F32()); e > 3e-2 {
					t.Fatalf("step %d: bf16 cache: logits relative error %.3g > 3e-2", step, e)
				}
				if step == steps {
					break
				}
				next := make([]int, len(prompts))
				for j := range next {
					next[j] = argmax(want.F32()[j*V : (j+1)*V])
					if g := argmax(got.F32()[j*V : (j+1)*V]); g != next[j] {
						t.Fatalf("step %d request %d: GPU chose %d, CPU %d", step, j, g, next[j])
					}
				}
				want, err = onCPU.Decode(caches["cpu"], next)
				must(t, err)
				got, err = onGPU.Decode(caches["gpu"], next)
				must(t, err)
				gotBF, err = onGPU.Decode(caches["gpu-bf16"], next)
				must(t, err)
			}
		})
	}
}

func argmax(x []float32) int {
	best := 0
	for i, v := range x {
		if v > x[best] {
			best = i
		}
	}
	return best
}
