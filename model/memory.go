package model

import (
	"fmt"
	"strings"
)

// Defaults of MemoryOptions.
const (
	DefaultWeightBytes = 2    // bfloat16 base weights
	DefaultLossChunk   = 8192 // vocabulary columns per chunk of the fused loss

	// WorkspaceBytes is the fixed allowance for the CUDA context, the
	// cuBLAS(Lt) workspace and allocator slack: 512 MiB.
	WorkspaceBytes = 512 << 20
)

// MemoryOptions describe one LoRA training step for EstimateLoRAMemory.
type MemoryOptions struct {
	SeqLen int // tokens per sequence
	Batch  int // sequences per step
	Rank   int // LoRA rank r

	// Targets are the projections that get a LoRA adapter: q, k, v, o,
	// gate, up, down, or HF module names (q_proj, self_attn.q_proj, ...,
	// and Phi-3's qkv_proj and gate_up_proj). Empty means all seven. On
	// Phi-3 the adapter sits on the fused module, so q, k or v selects
	// self_attn.qkv_proj and gate or up selects mlp.gate_up_proj.
	Targets []string

	WeightBytes int  // bytes per base weight element; 0 means DefaultWeightBytes
	Recompute   bool // keep only each layer's input and recompute the rest in backward
	LossChunk   int  // vocabulary chunk of the fused loss; 0 means DefaultLossChunk
}

// MemoryEstimate is the GPU memory of one LoRA training step, in bytes, by
// what holds it.
type MemoryEstimate struct {
	Weights     int64 // frozen base weights
	LoRAParams  int64 // LoRA A and B, float32
	LoRAGrads   int64 // their gradients, float32
	Optimizer   int64 // AdamW m and v, float32
	Activations int64 // what the backward keeps from the forward
	Logits      int64 // one chunk of logits and its gradient
	Workspace   int64 // WorkspaceBytes
	Total       int64 // the sum of the above

	LoRAParameters int64    // number of trainable LoRA parameters
	Targets        []string // the adapted modules, HF names, in layer order
}

// EstimateLoRAMemory estimates the GPU memory of one LoRA training step
// (forward, backward through the frozen model, AdamW update of the LoRA
// parameters) with a hand-written backward and flash-style attention.
//
// With T = SeqLen × Batch tokens, L layers, H hidden size, I intermediate
// size, Q = heads × head_dim, KV = kv_heads × head_dim, nh attention heads,
// V vocabulary, r rank, P = NumParameters, and for each adapted module m of
// a layer its in_m and out_m (n modules per layer):
//
//	Weights     = P × WeightBytes
//	N           = L × Σ_m r × (in_m + out_m)      (LoRAParameters)
//	LoRAParams  = N × 4
//	LoRAGrads   = N × 4
//	Optimizer   = N × 8                           (AdamW m and v)
//	PerLayer    = T × (2 × (4H + 2Q + 2KV + 3I) + 4 × (2 + nh + n × r))
//	Final       = T × (2 × 2H + 4)
//	Activations = L × PerLayer + Final            (without Recompute)
//	            = L × T × 2H + PerLayer + Final   (with Recompute)
//	Logits      = T × min(LossChunk, V) × 4 × 2
//	Workspace   = 512 MiB = 536,870,912
//	Total       = Weights + LoRAParams + LoRAGrads + Optimizer
//	              + Activations + Logits + Workspace
//
// PerLayer is what the backward of one layer needs. In bfloat16 (2 bytes):
// the layer input and the two RMSNorm outputs (3H), the residual after
// attention, which is the input of the second RMSNorm (H), q and the
// attention output (2Q), k and v after RoPE (2KV), the gate and up outputs
// and their SwiGLU product (3I). In float32 (4 bytes): the rstd of each
// RMSNorm (2), the logsumexp of every attention row (nh; no T × T matrix is
// kept), and x·Aᵀ of each adapter (n × r). Final is the input and output of
// the last RMSNorm and its rstd. With Recompute only each layer's input is
// kept, plus one layer's full set while that layer is recomputed. Logits
// are never materialised for the whole vocabulary: the fused loss holds one
// chunk of logits and of their gradient, in float32.
//
// Not counted: the transient gradient buffers of one layer's backward,
// which for large T can outgrow the Workspace allowance. The estimate is a
// floor for planning, not a measurement.
func EstimateLoRAMemory(c *Config, o MemoryOptions) (MemoryEstimate, error) {
	if o.SeqLen <= 0 || o.Batch <= 0 || o.Rank <= 0 {
		return MemoryEstimate{}, fmt.Errorf("model: estimate memory: seq len %d, batch %d and rank %d must be positive",
			o.SeqLen, o.Batch, o.Rank)
	}
	// Beyond these the byte counts below overflow int64 (tokens x hidden
	// x layers x bytes); no step of any published model comes near.
	if o.SeqLen > 1<<32 || o.Batch > 1<<32 || int64(o.SeqLen)*int64(o.Batch) > 1<<32 || o.Rank > 1<<16 {
		return MemoryEstimate{}, fmt.Errorf("model: estimate memory: %d x %d tokens or rank %d: beyond what the estimate covers (2^32 tokens, rank 2^16)",
			o.SeqLen, o.Batch, o.Rank)
	}
	if o.WeightBytes < 0 || o.LossChunk < 0 {
		return MemoryEstimate{}, fmt.Errorf("model: estimate memory: weight bytes %d and loss chunk %d must not be negative",
			o.WeightBytes, o.LossChunk)
	}
	weightBytes := int64(o.WeightBytes)
	if weightBytes == 0 {
		weightBytes = DefaultWeightBytes
	}
	chunk := int64(o.LossChunk)
	if chunk == 0 {
		chunk = DefaultLossChunk
	}
	chunk = min(chunk, int64(c.VocabSize))

	targets, err := c.resolveTargets(o.Targets)
	if err != nil {
		return MemoryEstimate{}, fmt.Errorf("model: estimate memory: %w", err)
	}

	var e MemoryEstimate
	r := int64(o.Rank)
	var perLayerLoRA int64
	for _, p := range targets {
		perLayerLoRA += r * int64(p.In+p.Out)
		e.Targets = append(e.Targets, p.Name)
	}
	L := int64(c.NumHiddenLayers)
	e.LoRAParameters = L * perLayerLoRA
	e.LoRAParams = e.LoRAParameters * 4
	e.LoRAGrads = e.LoRAParameters * 4
	e.Optimizer = e.LoRAParameters * 8
	e.Weights = c.NumParameters() * weightBytes

	T := int64(o.SeqLen) * int64(o.Batch)
	H := int64(c.HiddenSize)
	I := int64(c.IntermediateSize)
	Q := int64(c.NumAttentionHeads * c.HeadDim)
	KV := int64(c.NumKeyValueHeads * c.HeadDim)
	nh := int64(c.NumAttentionHeads)
	n := int64(len(targets))

	perLayer := T * (2*(4*H+2*Q+2*KV+3*I) + 4*(2+nh+n*r))
	final := T * (2*2*H + 4)
	if o.Recompute {
		e.Activations = L*T*2*H + perLayer + final
	} else {
		e.Activations = L*perLayer + final
	}

	e.Logits = T * chunk * 4 * 2
	e.Workspace = WorkspaceBytes
	e.Total = e.Weights + e.LoRAParams + e.LoRAGrads + e.Optimizer + e.Activations + e.Logits + e.Workspace
	return e, nil
}

// resolveTargets maps LoRA target names to the projections of a layer, in
// layer order and without duplicates. No names means all projections.
func (c *Config) resolveTargets(names []string) ([]Projection, error) {
	projections := c.Projections()
	if len(names) == 0 {
		return projections, nil
	}
	want := make(map[string]bool)
	for _, name := range names {
		module, err := c.targetModule(name)
		if err != nil {
			return nil, err
		}
		want[module] = true
	}
	var out []Projection
	for _, p := range projections {
		if want[p.Name] {
			out = append(out, p)
		}
	}
	return out, nil
}

// targetModule maps one target name ("q", "q_proj", "self_attn.q_proj",
// Phi-3's "qkv_proj", ...) to the name of a projection of c.
func (c *Config) targetModule(name string) (string, error) {
	base := strings.TrimPrefix(strings.TrimPrefix(name, "self_attn."), "mlp.")
	base = strings.TrimSuffix(base, "_proj")
	if c.Family == FamilyPhi3 {
		switch base {
		case "q", "k", "v", "qkv":
			return "self_attn.qkv_proj", nil
		case "o":
			return "self_attn.o_proj", nil
		case "gate", "up", "gate_up":
			return "mlp.gate_up_proj", nil
		case "down":
			return "mlp.down_proj", nil
		}
	} else {
		switch base {
		case "q", "k", "v", "o":
			return "self_attn." + base + "_proj", nil
		case "gate", "up", "down":
			return "mlp." + base + "_proj", nil
		}
	}
	return "", fmt.Errorf("unknown LoRA target %q for %s (want q, k, v, o, gate, up or down)", name, c.Architecture)
}
