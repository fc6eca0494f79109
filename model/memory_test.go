package model

import (
	"reflect"
	"strings"
	"testing"
)

// These tests check the estimate's arithmetic. Whether it describes real
// memory is checked against the CUDA allocator's peak on a GPU by
// TestGPUMemoryEstimate (cgo/memory_cuda_test.go, -tags cuda).

// smallLlama: H 64, I 160, L 3, 4 heads of 16 (Q 64), 2 kv heads (KV 32),
// V 1000, untied, no biases.
//
//	P = embed 64,000 + 3 × (q 4096 + k 2048 + v 2048 + o 4096
//	    + gate 10,240 + up 10,240 + down 10,240 + norms 128 = 43,136)
//	    + norm 64 + lm_head 64,000 = 257,472
func smallLlama(t *testing.T) *Config {
	t.Helper()
	return mustParse(t, `{"architectures":["LlamaForCausalLM"],"hidden_size":64,"intermediate_size":160,
		"num_hidden_layers":3,"num_attention_heads":4,"num_key_value_heads":2,"vocab_size":1000}`)
}

func TestEstimateLoRAMemorySmall(t *testing.T) {
	c := smallLlama(t)
	if c.NumParameters() != 257_472 {
		t.Fatalf("NumParameters = %d, want 257,472", c.NumParameters())
	}
	e, err := EstimateLoRAMemory(c, MemoryOptions{SeqLen: 8, Batch: 2, Rank: 4})
	if err != nil {
		t.Fatal(err)
	}
	// T = 16, r = 4, all 7 targets (n = 7), LossChunk min(8192, 1000) = 1000.
	//
	//	LoRA per layer: q 4×(64+64) = 512, k 4×(64+32) = 384, v 384, o 512,
	//	  gate 4×(64+160) = 896, up 896, down 4×(160+64) = 896: 4480
	//	N = 3 × 4480 = 13,440
	//	PerLayer = 16 × (2 × (4×64 + 2×64 + 2×32 + 3×160) + 4 × (2 + 4 + 7×4))
	//	         = 16 × (2 × 928 + 4 × 34) = 16 × 1992 = 31,872
	//	Final = 16 × (2×2×64 + 4) = 4160
	//	Activations = 3 × 31,872 + 4160 = 99,776
	//	Logits = 16 × 1000 × 4 × 2 = 128,000
	want := MemoryEstimate{
		Weights:        257_472 * 2,
		LoRAParams:     13_440 * 4,
		LoRAGrads:      13_440 * 4,
		Optimizer:      13_440 * 8,
		Activations:    99_776,
		Logits:         128_000,
		Workspace:      536_870_912,
		Total:          514_944 + 53_760 + 53_760 + 107_520 + 99_776 + 128_000 + 536_870_912,
		LoRAParameters: 13_440,
		Targets: []string{"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
			"mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"},
	}
	if !reflect.DeepEqual(e, want) {
		t.Errorf("got  %+v\nwant %+v", e, want)
	}
	if e.Total != 537_828_672 {
		t.Errorf("Total = %d, want 537,828,672", e.Total)
	}

	// Recompute: 3 × 16 × 2×64 + 31,872 + 4160 = 42,176.
	r, err := EstimateLoRAMemory(c, MemoryOptions{SeqLen: 8, Batch: 2, Rank: 4, Recompute: true})
	if err != nil {
		t.Fatal(err)
	}
	if r.Activations != 42_176 {
		t.Errorf("recompute activations = %d, want 42,176", r.Activations)
	}
	if r.Activations >= e.Activations {
		t.Errorf("recompute activations %d not below %d", r.Activations, e.Activations)
	}
	if r.Total != e.Total-e.Activations+r.Activations {
		t.Errorf("recompute total %d is not the sum of its terms", r.Total)
	}
}

func TestEstimateLoRAMemoryOptions(t *testing.T) {
	c := smallLlama(t)
	e, err := EstimateLoRAMemory(c, MemoryOptions{SeqLen: 10, Batch: 1, Rank: 8,
		Targets: []string{"v_proj", "q", "self_attn.q_proj"}, WeightBytes: 4, LossChunk: 256})
	if err != nil {
		t.Fatal(err)
	}
	// T = 10, r = 8, targets q and v (n = 2).
	//	N = 3 × (8×(64+64) + 8×(64+32)) = 3 × 1792 = 5376
	//	PerLayer = 10 × (2 × 928 + 4 × (2 + 4 + 2×8)) = 10 × 1944 = 19,440
	//	Activations = 3 × 19,440 + 10 × 260 = 60,920
	//	Logits = 10 × 256 × 8 = 20,480
	checks := []struct {
		name      string
		got, want int64
	}{
		{"LoRAParameters", e.LoRAParameters, 5376},
		{"Weights", e.Weights, 257_472 * 4},
		{"LoRAParams", e.LoRAParams, 5376 * 4},
		{"Optimizer", e.Optimizer, 5376 * 8},
		{"Activations", e.Activations, 60_920},
		{"Logits", e.Logits, 20_480},
		{"Total", e.Total, e.Weights + e.LoRAParams + e.LoRAGrads + e.Optimizer + e.Activations + e.Logits + e.Workspace},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s = %d, want %d", ch.name, ch.got, ch.want)
		}
	}
	if want := []string{"self_attn.q_proj", "self_attn.v_proj"}; !reflect.DeepEqual(e.Targets, want) {
		t.Errorf("targets %v, want %v", e.Targets, want)
	}
}

// On Phi-3 the adapters sit on the fused modules.
func TestEstimateLoRAMemoryPhi3Targets(t *testing.T) {
	c := loadTestConfig(t, "phi-4-mini-instruct.json")
	e, err := EstimateLoRAMemory(c, MemoryOptions{SeqLen: 1, Batch: 1, Rank: 1, Targets: []string{"q", "k", "up"}})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"self_attn.qkv_proj", "mlp.gate_up_proj"}; !reflect.DeepEqual(e.Targets, want) {
		t.Errorf("targets %v, want %v", e.Targets, want)
	}
	// 32 × ((3072 + 5120) + (3072 + 16384)) = 32 × 27,648
	if e.LoRAParameters != 32*27_648 {
		t.Errorf("LoRAParameters = %d, want %d", e.LoRAParameters, 32*27_648)
	}
}

// PEFT reports 41,943,040 trainable parameters for Llama-3-8B with r = 16
// on all seven projections.
func TestEstimateLoRAMemoryLlama8B(t *testing.T) {
	c := loadTestConfig(t, "llama-3.1-8b.json")
	e, err := EstimateLoRAMemory(c, MemoryOptions{SeqLen: 2048, Batch: 1, Rank: 16})
	if err != nil {
		t.Fatal(err)
	}
	if e.LoRAParameters != 41_943_040 {
		t.Errorf("LoRAParameters = %d, want 41,943,040", e.LoRAParameters)
	}
	if e.Weights != 2*8_030_261_248 {
		t.Errorf("Weights = %d", e.Weights)
	}
}

func TestEstimateLoRAMemoryErrors(t *testing.T) {
	llama := smallLlama(t)
	phi := loadTestConfig(t, "phi-4-mini-instruct.json")
	tests := []struct {
		name string
		c    *Config
		o    MemoryOptions
		want string
	}{
		{"zero rank", llama, MemoryOptions{SeqLen: 1, Batch: 1}, "rank 0"},
		{"negative seq len", llama, MemoryOptions{SeqLen: -1, Batch: 1, Rank: 1}, "seq len -1"},
		{"negative weight bytes", llama, MemoryOptions{SeqLen: 1, Batch: 1, Rank: 1, WeightBytes: -2}, "weight bytes -2"},
		{"unknown target", llama, MemoryOptions{SeqLen: 1, Batch: 1, Rank: 1, Targets: []string{"lm_head"}}, `"lm_head"`},
		{"fused target on llama", llama, MemoryOptions{SeqLen: 1, Batch: 1, Rank: 1, Targets: []string{"qkv_proj"}}, `"qkv_proj" for LlamaForCausalLM`},
		{"unknown target on phi3", phi, MemoryOptions{SeqLen: 1, Batch: 1, Rank: 1, Targets: []string{"fc1"}}, `"fc1"`},
		// Sizes whose byte counts would overflow (a negative or tiny total).
		{"huge seq len", llama, MemoryOptions{SeqLen: 200000000000000, Batch: 1, Rank: 16}, "beyond what the estimate covers"},
		{"seq len x batch wraps", llama, MemoryOptions{SeqLen: 1 << 62, Batch: 4, Rank: 16}, "beyond what the estimate covers"},
		{"huge rank", llama, MemoryOptions{SeqLen: 2048, Batch: 1, Rank: 1 << 62}, "beyond what the estimate covers"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := EstimateLoRAMemory(tt.c, tt.o)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want it to contain %q", err, tt.want)
			}
		})
	}
}
