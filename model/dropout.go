package model

import (
	"fmt"

	"github.com/compassml/compass/tensor"
)

// LoRA dropout, as PEFT applies it: y = x W^T + b + scaling (dropout(x) A^T) B^T,
// with dropout on the adapter's input only and one dropout layer, so one
// mask, per adapted module. The mask is the backend's Dropout op, a hash of
// (seed, element index), so it needs no state: the backward and a
// recomputed layer (Model.Recompute) call the op again with the same seed
// and get the same mask, on any backend. dropout(x) lives only while it is
// used, in the forward (to compute t = dropout(x) A^T, which is kept) and in
// the backward (for dA); it is not kept between them.

// dropout is the LoRA dropout of one pass: p is 0 when it is off (Forward,
// or LoRADropout 0).
type dropout struct {
	p    float32
	seed uint64 // Model.DropoutSeed
}

// loraActs is what one layer's adapters keep between forward and backward:
// t = dropout(x) A^T per adapter, transposed (xa [r, N]), and the pass's dropout, which the
// backward needs to recreate each mask.
type loraActs struct {
	xa   map[*loraSlot]*tensor.Tensor
	drop dropout
}

// trainingDropout is the dropout of a ForwardBackward pass.
func (m *Model) trainingDropout() (dropout, error) {
	p := m.LoRADropout
	if !(p >= 0 && p < 1) {
		return dropout{}, fmt.Errorf("model: LoRADropout is %v, want a probability in [0, 1)", p)
	}
	return dropout{p: p, seed: m.DropoutSeed}, nil
}

// seedFor is the seed of module s's mask: SplitMix64 output number
// fnv1a(module name) of the stream seeded with the pass's seed. The name
// holds the layer index and the module ("model.layers.3.self_attn.q_proj"),
// so each module gets its own mask, and Phi-3's fused qkv_proj one mask
// shared by q, k and v, as PEFT's dropout layers do.
func (d dropout) seedFor(s *loraSlot) uint64 {
	h := uint64(14695981039346656037) // FNV-1a, 64-bit
	for i := 0; i < len(s.module); i++ {
		h = (h ^ uint64(s.module[i])) * 1099511628211
	}
	return tensor.DropoutHash(d.seed, h)
}

// adapterInput returns what the adapter s reads: x itself, or dropout(x)
// allocated in ar.
func (m *Model) adapterInput(ar *arena, x *tensor.Tensor, s *loraSlot, d dropout) (*tensor.Tensor, error) {
	if d.p == 0 {
		return x, nil
	}
	xd := ar.empty(x.Shape()...)
	if ar.err != nil {
		return nil, ar.err
	}
	if err := m.be.Dropout(xd, x, d.p, d.seedFor(s)); err != nil {
		return nil, fmt.Errorf("lora %s: dropout: %w", s.module, err)
	}
	return xd, nil
}

// adapterInputBackward ends an adapter's backward, from dt [r, N], the
// transposed gradient of t = dropout(x) A^T: dA += dt dropout(x) and
// dx += dropout'(dt^T A), where dropout' applies the forward's mask and
// 1/(1-p) (the op itself, with the same seed). Without dropout:
// dA += dt x and dx += dt^T A. With accumulate false, dx is set to its term
// instead (dx may hold anything before).
func (m *Model) adapterInputBackward(dx, dt, x *tensor.Tensor, s *loraSlot, d dropout, accumulate bool) error {
	if d.p == 0 {
		if err := m.gradMatMul(s.da, dt, x, false, 1, 1); err != nil {
			return fmt.Errorf("lora %s: dA: %w", s.module, err)
		}
		if err := m.expandMatMul(dx, dt, s.a, false, 1, boolBeta(accumulate)); err != nil {
			return fmt.Errorf("lora %s: dx: %w", s.module, err)
		}
		return nil
	}
	tmp := &arena{be: m.be}
	defer tmp.free()
	xd, err := m.adapterInput(tmp, x, s, d)
	if err != nil {
		return err
	}
	if err := m.gradMatMul(s.da, dt, xd, false, 1, 1); err != nil {
		return fmt.Errorf("lora %s: dA: %w", s.module, err)
	}
	g := xd // dropout(x) is used: its memory takes dt^T A
	if !accumulate {
		g = dx
	}
	if err := m.expandMatMul(g, dt, s.a, false, 1, 0); err != nil {
		return fmt.Errorf("lora %s: dx: %w", s.module, err)
	}
	if err := m.be.Dropout(g, g, d.p, d.seedFor(s)); err != nil {
		return fmt.Errorf("lora %s: dropout backward: %w", s.module, err)
	}
	if accumulate {
		if err := m.be.Add(dx, dx, g); err != nil {
			return fmt.Errorf("lora %s: dx: %w", s.module, err)
		}
	}
	return nil
}
