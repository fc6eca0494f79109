package model

import (
	"fmt"
	"path/filepath"
	"slices"

	"github.com/compassml/compass/tensor"
	"github.com/compassml/compass/tensor/safetensors"
)

// Model is a decoder of the llama, qwen2 or phi3 family with its frozen
// base weights (in their checkpoint dtype, usually views into the mapped
// safetensors) and, optionally, LoRA adapters on its linear modules.
type Model struct {
	Config *Config
	be     tensor.Backend
	ckpt   *safetensors.Checkpoint // keeps the mapped weights alive; nil for in-memory models

	embed  *tensor.Tensor // [V, H]
	norm   *tensor.Tensor // [H]
	lmHead *tensor.Tensor // [V, H]; the embedding when tied
	layers []layer

	slots  []*loraSlot      // the adapted modules, in module order
	stacks []*tensor.Tensor // the loraGroups' buffers, freed by detachLoRA
	owned  []*tensor.Tensor // backend copies of the weights, freed by Close

	// Recompute keeps only each layer's input during ForwardBackward and
	// recomputes the layer's activations in the backward: less memory, one
	// more forward.
	Recompute bool
	// LossChunk is how many vocabulary columns the fused loss computes at a
	// time; 0 means the backend's default (8192).
	LossChunk int
	// LoRADropout is the probability that an adapter input element is
	// zeroed during ForwardBackward (PEFT's lora_dropout); 0 disables it.
	// Forward (evaluation) never drops.
	LoRADropout float32
	// DropoutSeed seeds the masks; the trainer sets a new value every
	// micro-batch. Each adapted module's mask comes from it and the
	// module's name (dropout.go).
	DropoutSeed uint64
}

// layer holds one decoder layer's weights.
type layer struct {
	inputNorm, postNorm        *tensor.Tensor // [H]
	q, k, v, o, gate, up, down linear

	// Phi-3's fused weights, of which q/k/v and gate/up are row views.
	qkv, gateUp *tensor.Tensor
}

// linear is one projection y = x W^T + b. For Phi-3's fused modules, q, k
// and v (and gate and up) are row ranges of one weight: rows is where this
// projection starts in the fused module's output, which is also where its
// part of a LoRA B matrix starts.
type linear struct {
	w, b *tensor.Tensor // w [out, in]; b nil when absent
	slot *loraSlot      // the LoRA adapter on the (fused) module; nil when none
	rows int
}

// loraSlot is the adapter of one HF module: A [r, in], B [outTotal, r],
// both F32, their gradients, and the scaling (alpha/r or alpha/sqrt(r)).
type loraSlot struct {
	module  string         // e.g. "model.layers.0.self_attn.qkv_proj"
	weight  *tensor.Tensor // the module's whole weight, for merging
	a, b    *tensor.Tensor
	da, db  *tensor.Tensor
	scaling float32
	owned   []*tensor.Tensor // what the backend allocated for this slot
	group   *loraGroup       // the adapters sharing this one's input; nil when alone
}

// loraGroup is the adapters of a layer's modules that read the same input
// (q, k and v; gate and up) with their A and dA stacked in one buffer
// each, [sum of ranks, in], of which the slots' a and da are row views.
// The forward's x A^T and the backward's dA += dt^T x and dx += dt A are
// then one product each for the whole group instead of one per adapter:
// x is read once, dx written once. Dropout gives each module its own mask,
// so a pass with dropout goes adapter by adapter (dropout.go).
type loraGroup struct {
	slots []*loraSlot
	a, da *tensor.Tensor
}

// Load opens a checkpoint directory (config.json and model.safetensors or a
// sharded index) and binds every weight the config implies, in its stored
// dtype, without copying. A missing or mis-shaped tensor is an error naming
// it. be runs the computation; nil means the CPU backend.
func Load(dir string, be tensor.Backend) (*Model, error) {
	cfg, err := LoadConfig(filepath.Join(dir, "config.json"))
	if err != nil {
		return nil, err
	}
	ckpt, err := safetensors.OpenDir(dir)
	if err != nil {
		return nil, fmt.Errorf("model: %w", err)
	}
	m, err := New(cfg, be, ckpt.Tensor)
	if err != nil {
		ckpt.Close()
		return nil, fmt.Errorf("model: %s: %w", dir, err)
	}
	m.ckpt = ckpt
	return m, nil
}

// New builds a model from cfg, taking each tensor by its HF name from get.
func New(cfg *Config, be tensor.Backend, get func(name string) (*tensor.Tensor, error)) (*Model, error) {
	if be == nil {
		be = tensor.NewCPU()
	}
	want := map[string][]int{}
	for _, s := range cfg.Tensors() {
		want[s.Name] = s.Shape
	}
	m := &Model{Config: cfg, be: be}
	load := func(name string) (*tensor.Tensor, error) {
		shape, ok := want[name]
		if !ok {
			return nil, fmt.Errorf("tensor %s is not part of a %s model", name, cfg.Architecture)
		}
		t, err := get(name)
		if err != nil {
			return nil, err
		}
		if !t.DType().IsFloat() {
			return nil, fmt.Errorf("%s: dtype %s, want F32, BF16 or F16", name, t.DType())
		}
		if !slices.Equal(t.Shape(), shape) {
			return nil, fmt.Errorf("%s: shape %v != %v", name, t.Shape(), shape)
		}
		dev, err := be.ToDevice(t) // the mapped tensor itself on the CPU, a copy on a GPU
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		if dev != t {
			m.owned = append(m.owned, dev)
		}
		return dev, nil
	}
	var err error
	if m.embed, err = load("model.embed_tokens.weight"); err != nil {
		return nil, err
	}
	if m.norm, err = load("model.norm.weight"); err != nil {
		return nil, err
	}
	m.lmHead = m.embed
	if !cfg.TieWordEmbeddings {
		if m.lmHead, err = load("lm_head.weight"); err != nil {
			return nil, err
		}
	}
	for i := 0; i < cfg.NumHiddenLayers; i++ {
		l, err := loadLayer(cfg, fmt.Sprintf("model.layers.%d.", i), load)
		if err != nil {
			return nil, err
		}
		m.layers = append(m.layers, l)
	}
	return m, nil
}

func loadLayer(cfg *Config, prefix string, load func(string) (*tensor.Tensor, error)) (layer, error) {
	var l layer
	var err error
	if l.inputNorm, err = load(prefix + "input_layernorm.weight"); err != nil {
		return l, err
	}
	if l.postNorm, err = load(prefix + "post_attention_layernorm.weight"); err != nil {
		return l, err
	}
	proj := func(name string, bias bool) (linear, error) {
		var p linear
		if p.w, err = load(prefix + name + ".weight"); err != nil {
			return p, err
		}
		if bias {
			if p.b, err = load(prefix + name + ".bias"); err != nil {
				return p, err
			}
		}
		return p, nil
	}
	if l.o, err = proj("self_attn.o_proj", cfg.OutputBias); err != nil {
		return l, err
	}
	if l.down, err = proj("mlp.down_proj", cfg.MLPBias); err != nil {
		return l, err
	}
	if cfg.Family != FamilyPhi3 {
		for _, p := range []struct {
			dst  *linear
			name string
			bias bool
		}{
			{&l.q, "self_attn.q_proj", cfg.QKVBias}, {&l.k, "self_attn.k_proj", cfg.QKVBias},
			{&l.v, "self_attn.v_proj", cfg.QKVBias}, {&l.gate, "mlp.gate_proj", cfg.MLPBias},
			{&l.up, "mlp.up_proj", cfg.MLPBias},
		} {
			if *p.dst, err = proj(p.name, p.bias); err != nil {
				return l, err
			}
		}
		return l, nil
	}
	// Phi-3: q, k, v are row ranges of qkv_proj, gate and up of gate_up_proj.
	qkv, err := proj("self_attn.qkv_proj", false)
	if err != nil {
		return l, err
	}
	l.qkv = qkv.w
	q, kv := cfg.NumAttentionHeads*cfg.HeadDim, cfg.NumKeyValueHeads*cfg.HeadDim
	if l.q, err = rowRange(qkv.w, 0, q); err != nil {
		return l, err
	}
	if l.k, err = rowRange(qkv.w, q, q+kv); err != nil {
		return l, err
	}
	if l.v, err = rowRange(qkv.w, q+kv, q+2*kv); err != nil {
		return l, err
	}
	gateUp, err := proj("mlp.gate_up_proj", false)
	if err != nil {
		return l, err
	}
	l.gateUp = gateUp.w
	inter := cfg.IntermediateSize
	if l.gate, err = rowRange(gateUp.w, 0, inter); err != nil {
		return l, err
	}
	l.up, err = rowRange(gateUp.w, inter, 2*inter)
	return l, err
}

// rowRange is the projection made of rows [start, end) of a fused weight.
func rowRange(w *tensor.Tensor, start, end int) (linear, error) {
	v, err := w.Slice(start, end)
	return linear{w: v, rows: start}, err
}

// Close frees the weights' device copies and the adapters' gradients and
// releases the mapped checkpoint. The model must not be used after.
func (m *Model) Close() error {
	for _, t := range m.owned {
		m.be.Free(t)
	}
	m.owned = nil
	m.detachLoRA()
	if m.ckpt == nil {
		return nil
	}
	return m.ckpt.Close()
}

// Backend returns the backend the model computes on.
func (m *Model) Backend() tensor.Backend { return m.be }
