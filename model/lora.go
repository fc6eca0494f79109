package model

import (
	"fmt"
	"slices"

	"github.com/compassml/compass/lora"
	"github.com/compassml/compass/tensor"
)

// LoRAWeights is the adapter of one module: A [r, in] and B [out, r], F32,
// and its scaling (lora_alpha/r, or lora_alpha/sqrt(r) with rsLoRA).
type LoRAWeights struct {
	A, B    *tensor.Tensor
	Scaling float32
}

// LinearModules lists the linear modules an adapter can target, by HF
// name, in layer order. Phi-3's fused qkv_proj and gate_up_proj are one
// module each, as in PEFT; lm_head is not among them (PEFT's "all-linear"
// leaves the output layer out).
func (m *Model) LinearModules() []lora.Module {
	var out []lora.Module
	for i := range m.layers {
		for _, p := range m.Config.Projections() {
			out = append(out, lora.Module{Name: fmt.Sprintf("model.layers.%d.%s", i, p.Name), In: p.In, Out: p.Out})
		}
	}
	return out
}

// AttachAdapter attaches a PEFT adapter loaded or created by package lora.
func (m *Model) AttachAdapter(a *lora.Adapter) error {
	weights := map[string]LoRAWeights{}
	for _, name := range a.Modules {
		weights[name] = LoRAWeights{A: a.A[name], B: a.B[name], Scaling: float32(a.Config.Scaling(name))}
	}
	return m.AttachLoRA(weights)
}

// moduleLinears returns the projections of layer l that module (a suffix
// such as "self_attn.qkv_proj") consists of, and the module's full weight.
func (m *Model) moduleLinears(l *layer, module string) ([]*linear, *tensor.Tensor, error) {
	switch module {
	case "self_attn.q_proj":
		return []*linear{&l.q}, l.q.w, nil
	case "self_attn.k_proj":
		return []*linear{&l.k}, l.k.w, nil
	case "self_attn.v_proj":
		return []*linear{&l.v}, l.v.w, nil
	case "self_attn.o_proj":
		return []*linear{&l.o}, l.o.w, nil
	case "mlp.gate_proj":
		return []*linear{&l.gate}, l.gate.w, nil
	case "mlp.up_proj":
		return []*linear{&l.up}, l.up.w, nil
	case "mlp.down_proj":
		return []*linear{&l.down}, l.down.w, nil
	case "self_attn.qkv_proj":
		if l.qkv != nil {
			return []*linear{&l.q, &l.k, &l.v}, l.qkv, nil
		}
	case "mlp.gate_up_proj":
		if l.gateUp != nil {
			return []*linear{&l.gate, &l.up}, l.gateUp, nil
		}
	}
	return nil, nil, fmt.Errorf("model: no linear module %q", module)
}

// AttachLoRA puts the given adapters, keyed by full module name
// ("model.layers.0.self_attn.q_proj"), on the model, replacing any it had,
// and allocates their gradients. Every key must be one of LinearModules,
// with A [r, in] and B [out, r] in F32. The model works on its own copy of
// an A it stacks with others (loraGroup), even on the CPU backend, so the
// trained weights are LoRAParams', not necessarily the given tensors.
func (m *Model) AttachLoRA(adapters map[string]LoRAWeights) error {
	dims := map[string]lora.Module{}
	for _, lm := range m.LinearModules() {
		dims[lm.Name] = lm
	}
	names := make([]string, 0, len(adapters))
	for name := range adapters {
		if _, ok := dims[name]; !ok {
			return fmt.Errorf("model: LoRA module %q is not a linear module of this %s", name, m.Config.Architecture)
		}
		names = append(names, name)
	}
	slices.Sort(names)
	m.detachLoRA()
	for _, name := range names {
		a, d := adapters[name], dims[name]
		if a.A == nil || a.B == nil || a.A.DType() != tensor.F32 || a.B.DType() != tensor.F32 ||
			a.A.Rank() != 2 || a.B.Rank() != 2 || a.A.Dim(1) != d.In || a.B.Dim(0) != d.Out || a.A.Dim(0) != a.B.Dim(1) {
			m.detachLoRA()
			return fmt.Errorf("model: LoRA %s: want F32 A [r %d] and B [%d r], got %v and %v", name, d.In, d.Out, a.A, a.B)
		}
		var layerIndex int
		var module string
		var err error
		if _, err := fmt.Sscanf(name, "model.layers.%d.", &layerIndex); err != nil {
			return fmt.Errorf("model: LoRA module %q: %w", name, err)
		}
		module = name[len(fmt.Sprintf("model.layers.%d.", layerIndex)):]
		ps, w, err := m.moduleLinears(&m.layers[layerIndex], module)
		if err != nil {
			m.detachLoRA()
			return err
		}
		s := &loraSlot{module: name, weight: w, scaling: a.Scaling}
		m.slots = append(m.slots, s) // so that detachLoRA frees what this slot allocated
		if s.a, err = m.be.ToDevice(a.A); err == nil && s.a != a.A {
			s.owned = append(s.owned, s.a)
		}
		if err == nil {
			if s.b, err = m.be.ToDevice(a.B); err == nil && s.b != a.B {
				s.owned = append(s.owned, s.b)
			}
		}
		if err == nil {
			if s.da, err = m.be.Alloc(tensor.F32, a.A.Shape()...); err == nil {
				s.owned = append(s.owned, s.da)
			}
		}
		if err == nil {
			if s.db, err = m.be.Alloc(tensor.F32, a.B.Shape()...); err == nil {
				s.owned = append(s.owned, s.db)
			}
		}
		if err != nil {
			m.detachLoRA()
			return fmt.Errorf("model: LoRA %s: %w", name, err)
		}
		for _, p := range ps {
			p.slot = s
		}
	}
	if err := m.stackLoRA(); err != nil {
		m.detachLoRA()
		return err
	}
	return nil
}

// stackLoRA groups the adapters of each layer's modules that read the same
// input, q, k and v, and gate and up, when two or more of them are adapted
// as separate modules (loraGroup): their A and dA are moved into one
// buffer each, of which the slots' a and da become row views.
func (m *Model) stackLoRA() error {
	for i := range m.layers {
		l := &m.layers[i]
		for _, ps := range [][]*linear{{&l.q, &l.k, &l.v}, {&l.gate, &l.up}} {
			var slots []*loraSlot
			for _, p := range ps {
				if p.slot != nil && !slices.Contains(slots, p.slot) {
					slots = append(slots, p.slot)
				}
			}
			if len(slots) < 2 {
				continue
			}
			if err := m.stackSlots(slots); err != nil {
				return fmt.Errorf("model: LoRA stack of %s: %w", slots[0].module, err)
			}
		}
	}
	return nil
}

// stackSlots makes slots one loraGroup.
func (m *Model) stackSlots(slots []*loraSlot) error {
	rows, in := 0, slots[0].a.Dim(1)
	for _, s := range slots {
		rows += s.a.Dim(0)
	}
	g := &loraGroup{slots: slots}
	var err error
	if g.a, err = m.be.Alloc(tensor.F32, rows, in); err != nil {
		return err
	}
	m.stacks = append(m.stacks, g.a)
	if g.da, err = m.be.Alloc(tensor.F32, rows, in); err != nil {
		return err
	}
	m.stacks = append(m.stacks, g.da)
	r := 0
	for _, s := range slots {
		n := s.a.Dim(0)
		a, err := g.a.Slice(r, r+n)
		if err != nil {
			return err
		}
		da, err := g.da.Slice(r, r+n)
		if err != nil {
			return err
		}
		if err := m.be.Copy(a, s.a); err != nil {
			return err
		}
		// The slot's own A (when the backend copied it) and dA, zero as
		// the stacked dA is, are no longer used.
		s.owned = slices.DeleteFunc(s.owned, func(t *tensor.Tensor) bool {
			if t == s.a || t == s.da {
				m.be.Free(t)
				return true
			}
			return false
		})
		s.a, s.da, s.group = a, da, g
		r += n
	}
	return nil
}

// detachLoRA removes every adapter and frees what the backend allocated
// for them.
func (m *Model) detachLoRA() {
	for _, s := range m.slots {
		for _, t := range s.owned {
			m.be.Free(t)
		}
	}
	for _, t := range m.stacks {
		m.be.Free(t)
	}
	m.stacks = nil
	for i := range m.layers {
		l := &m.layers[i]
		for _, p := range []*linear{&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down} {
			p.slot = nil
		}
	}
	m.slots = nil
}

// LoRAParams returns the attached adapters' A [r, in] and B [out, r] by
// module name: the tensors the forward reads, which an optimizer updates
// in place.
func (m *Model) LoRAParams() map[string][2]*tensor.Tensor {
	p := map[string][2]*tensor.Tensor{}
	for _, s := range m.slots {
		p[s.module] = [2]*tensor.Tensor{s.a, s.b}
	}
	return p
}

// LoRAGrads returns the accumulated gradients by module name: dA [r, in]
// and dB [out, r], F32. They are the model's own buffers.
func (m *Model) LoRAGrads() map[string][2]*tensor.Tensor {
	g := map[string][2]*tensor.Tensor{}
	for _, s := range m.slots {
		g[s.module] = [2]*tensor.Tensor{s.da, s.db}
	}
	return g
}

// zeroer is a backend that clears device tensors, all of them in one
// launch (cgo's).
type zeroer interface {
	ZeroTensors(ts []*tensor.Tensor) error
}

// ZeroLoRAGrads clears the accumulated gradients: on the host in place, on
// a device in one ZeroTensors call (a memset each was 448 launches per
// Llama-3.1-8B step). Zeros written, not a Scale by 0: 0 x NaN is NaN, so
// one NaN step would otherwise poison every later one.
func (m *Model) ZeroLoRAGrads() error {
	var dev []*tensor.Tensor
	for _, s := range m.slots {
		for _, g := range []*tensor.Tensor{s.da, s.db} {
			if g.OnHost() {
				clear(g.F32())
			} else {
				dev = append(dev, g)
			}
		}
	}
	if len(dev) == 0 {
		return nil
	}
	z, ok := m.be.(zeroer)
	if !ok {
		return fmt.Errorf("model: zero the LoRA gradients: backend %s cannot clear device memory", m.be.Name())
	}
	if err := z.ZeroTensors(dev); err != nil {
		return fmt.Errorf("model: zero the LoRA gradients: %w", err)
	}
	return nil
}

// MergeLoRA folds every attached adapter into its base weight (W += scaling
// B A, rounded once to W's dtype) and detaches the adapters. Weights that
// are views of the mapped checkpoint are copied first: the file is never
// written.
func (m *Model) MergeLoRA() error {
	for _, s := range m.slots {
		merged, err := m.be.Alloc(s.weight.DType(), s.weight.Shape()...)
		if err != nil {
			return fmt.Errorf("model: merge %s: %w", s.module, err)
		}
		if err := m.be.Copy(merged, s.weight); err != nil {
			return err
		}
		// B A in float32 into a scratch, then added in float32 and rounded once.
		delta, err := m.be.Alloc(tensor.F32, s.weight.Shape()...)
		if err != nil {
			return fmt.Errorf("model: merge %s: %w", s.module, err)
		}
		err = m.be.MatMul(delta, s.b, s.a, false, false, s.scaling, 0)
		if err == nil {
			err = m.be.Add(merged, merged, delta)
		}
		m.be.Free(delta)
		if err != nil {
			return fmt.Errorf("model: merge %s: %w", s.module, err)
		}
		for i := range m.layers {
			l := &m.layers[i]
			if l.qkv == s.weight {
				l.qkv = merged
			}
			if l.gateUp == s.weight {
				l.gateUp = merged
			}
			for _, p := range []*linear{&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down} {
				if p.slot != s {
					continue
				}
				view, err := merged.Slice(p.rows, p.rows+p.w.Dim(0))
				if err != nil {
					return err
				}
				p.w = view
			}
		}
	}
	m.detachLoRA()
	return nil
}
