package model

import (
	"math/rand/v2"
	"testing"

	"github.com/compassml/compass/tensor"
)

// tinyVariants are small configs that together exercise every variant the
// decoder supports: GQA ratios 1, 2 and 4, q/k/v biases, attention and MLP
// biases, tied and untied embeddings, Phi-3's fused projections, each rope
// type, partial rotary 0.75, head_dim != hidden/heads, and longrope's short
// and long factors (original context 16: sequences of 12 use the short
// factors, of 20 the long ones), and a sequence of 150 tokens.
var tinyVariants = []struct {
	name   string
	config string
	seqLen int
}{
	{"llama-gqa2", `{"architectures":["LlamaForCausalLM"],"model_type":"llama","hidden_size":32,"intermediate_size":48,
		"num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"vocab_size":61,"rms_norm_eps":1e-5,"max_position_embeddings":2048,
		"rope_theta":10000.0,"tie_word_embeddings":false,"torch_dtype":"float32"}`, 9},
	{"llama3-gqa4-headdim-bias", `{"architectures":["LlamaForCausalLM"],"model_type":"llama","hidden_size":32,"intermediate_size":40,
		"num_hidden_layers":2,"num_attention_heads":8,"num_key_value_heads":2,"head_dim":6,"vocab_size":53,"rms_norm_eps":1e-5,
		"rope_theta":500000.0,"attention_bias":true,"mlp_bias":true,"max_position_embeddings":131072,
		"rope_scaling":{"factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":8192,"rope_type":"llama3"},
		"torch_dtype":"float32"}`, 11},
	{"qwen2-gqa1-tied", `{"architectures":["Qwen2ForCausalLM"],"model_type":"qwen2","hidden_size":24,"intermediate_size":56,
		"num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":4,"vocab_size":67,"rms_norm_eps":1e-6,"max_position_embeddings":32768,
		"rope_theta":1000000.0,"tie_word_embeddings":true,"torch_dtype":"float32"}`, 8},
	{"phi3-longrope-short", phi3Tiny, 12},
	{"phi3-longrope-long", phi3Tiny, 20},
	// Long enough for the CPU attention's 64-row query blocks to be more
	// than one, with a partial last block.
	{"qwen2-gqa2-150-tokens", `{"architectures":["Qwen2ForCausalLM"],"model_type":"qwen2","hidden_size":32,"intermediate_size":40,
		"num_hidden_layers":1,"num_attention_heads":4,"num_key_value_heads":2,"vocab_size":59,"rms_norm_eps":1e-6,
		"max_position_embeddings":32768,"rope_theta":1000000.0,"tie_word_embeddings":false,"torch_dtype":"float32"}`, 150},
}

// phi3Tiny: 4 heads of 16 (12 rotary dims: 6 longrope factors), 2 kv heads.
const phi3Tiny = `{"architectures":["Phi3ForCausalLM"],"model_type":"phi3","hidden_size":64,"intermediate_size":48,
	"num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"vocab_size":71,"rms_norm_eps":1e-5,
	"rope_theta":10000.0,"partial_rotary_factor":0.75,"max_position_embeddings":64,"original_max_position_embeddings":16,
	"rope_scaling":{"type":"longrope","short_factor":[1.0,1.1,1.3,1.7,2.2,3.0],"long_factor":[1.5,2.5,4.0,6.5,9.0,12.0]},
	"tie_word_embeddings":true,"torch_dtype":"float32"}`

// tinyModel writes variant v as a float32 checkpoint and loads it, on the
// CPU backend with PoisonEmpty (a read of an Empty tensor before it is
// written comes out NaN, where zeroed memory would hide it).
func tinyModel(t *testing.T, config string, seed uint64) (*Model, string) {
	t.Helper()
	dir := t.TempDir()
	if _, err := WriteRandomCheckpoint(dir, []byte(config), tensor.F32, seed); err != nil {
		t.Fatal(err)
	}
	m, err := Load(dir, &tensor.CPU{PoisonEmpty: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m, dir
}

// randomLoRA attaches rank-r adapters to every linear module, with A and B
// both random (B is zero at PEFT's init, which would hide bugs in dA).
func randomLoRA(t *testing.T, m *Model, r int, seed uint64) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 7))
	adapters := map[string]LoRAWeights{}
	for _, lm := range m.LinearModules() {
		a, b := tensor.New(tensor.F32, r, lm.In), tensor.New(tensor.F32, lm.Out, r)
		for i := range a.F32() {
			a.F32()[i] = float32(rng.NormFloat64()) * 0.3
		}
		for i := range b.F32() {
			b.F32()[i] = float32(rng.NormFloat64()) * 0.3
		}
		adapters[lm.Name] = LoRAWeights{A: a, B: b, Scaling: 2}
	}
	if err := m.AttachLoRA(adapters); err != nil {
		t.Fatal(err)
	}
}

// randomBatch returns ids [B, T] and next-token labels with a few ignored.
func randomBatch(vocab, B, T int, seed uint64) Batch {
	rng := rand.New(rand.NewPCG(seed, 9))
	ids := make([]int32, B*T)
	labels := make([]int32, B*T)
	for i := range ids {
		ids[i] = int32(rng.IntN(vocab))
	}
	for i := range labels {
		labels[i] = IgnoreIndex
		if i%T != T-1 && rng.IntN(5) != 0 {
			labels[i] = ids[i+1]
		}
	}
	idT, _ := tensor.FromI32(ids, B, T)
	labT, _ := tensor.FromI32(labels, B, T)
	return Batch{IDs: idT, Labels: labT}
}
