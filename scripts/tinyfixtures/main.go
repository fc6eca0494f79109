// Command tinyfixtures writes the tiny checkpoints, PEFT adapters and
// inputs that scripts/hf_goldens.py runs through Hugging Face transformers
// and PEFT on the device machine. The same seeds write the same bytes, so
// the goldens it produces can be checked against fixtures regenerated
// anywhere:
//
//	go run ./scripts/tinyfixtures DIR
//
// For each variant, DIR/NAME/ holds model/ (config.json, model.safetensors),
// adapter/ (adapter_config.json, adapter_model.safetensors: r 4, alpha 8,
// all-linear, A and B both random) and inputs.json ({"input_ids": [[...]],
// "labels": [[...]]}, labels aligned with positions: labels[b][t] is the
// token predicted at t, -100 ignored).
package main

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"

	"github.com/compassml/compass/lora"
	"github.com/compassml/compass/model"
	"github.com/compassml/compass/tensor"
)

// variants cover GQA ratios 1, 2 and 4, biases, tied embeddings,
// head_dim != hidden/heads, llama3 rope, Phi-3's fused projections with
// longrope (short factors at 12 tokens, long at 20: the original context is
// 16) and partial rotary, and a bf16 checkpoint.
var variants = []struct {
	name   string
	config string
	dtype  tensor.DType
	seqLen int
}{
	{"llama-gqa2", llama, tensor.F32, 9},
	{"llama-gqa2-bf16", llama, tensor.BF16, 9},
	{"llama3-gqa4-headdim-bias", `{"architectures":["LlamaForCausalLM"],"model_type":"llama","hidden_size":32,"intermediate_size":40,
		"num_hidden_layers":2,"num_attention_heads":8,"num_key_value_heads":2,"head_dim":6,"vocab_size":53,"rms_norm_eps":1e-5,
		"rope_theta":500000.0,"attention_bias":true,"mlp_bias":true,"max_position_embeddings":131072,
		"rope_scaling":{"factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":8192,"rope_type":"llama3"},
		"torch_dtype":"float32"}`, tensor.F32, 11},
	{"qwen2-gqa1-tied", `{"architectures":["Qwen2ForCausalLM"],"model_type":"qwen2","hidden_size":24,"intermediate_size":56,
		"num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":4,"vocab_size":67,"rms_norm_eps":1e-6,"max_position_embeddings":32768,
		"rope_theta":1000000.0,"tie_word_embeddings":true,"torch_dtype":"float32"}`, tensor.F32, 8},
	{"phi3-longrope-short", phi3, tensor.F32, 12},
	{"phi3-longrope-long", phi3, tensor.F32, 20},
}

const llama = `{"architectures":["LlamaForCausalLM"],"model_type":"llama","hidden_size":32,"intermediate_size":48,
	"num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"vocab_size":61,"rms_norm_eps":1e-5,"max_position_embeddings":2048,
	"rope_theta":10000.0,"tie_word_embeddings":false,"torch_dtype":"float32"}`

// pad_token_id: transformers 5's Phi3Config defaults it to 32000, past this
// vocabulary, and nn.Embedding refuses a padding index outside the table.
const phi3 = `{"architectures":["Phi3ForCausalLM"],"model_type":"phi3","hidden_size":64,"intermediate_size":48,
	"num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"vocab_size":71,"rms_norm_eps":1e-5,
	"rope_theta":10000.0,"partial_rotary_factor":0.75,"max_position_embeddings":64,"original_max_position_embeddings":16,
	"rope_scaling":{"type":"longrope","short_factor":[1.0,1.1,1.3,1.7,2.2,3.0],"long_factor":[1.5,2.5,4.0,6.5,9.0,12.0]},
	"tie_word_embeddings":true,"pad_token_id":0,"torch_dtype":"float32"}`

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: tinyfixtures DIR")
		os.Exit(2)
	}
	for i, v := range variants {
		if err := write(filepath.Join(os.Args[1], v.name), v.config, v.dtype, v.seqLen, uint64(100+i)); err != nil {
			fmt.Fprintf(os.Stderr, "tinyfixtures: %s: %v\n", v.name, err)
			os.Exit(1)
		}
	}
}

func write(dir, config string, dtype tensor.DType, seqLen int, seed uint64) error {
	cfg, err := model.WriteRandomCheckpoint(filepath.Join(dir, "model"), []byte(config), dtype, seed)
	if err != nil {
		return err
	}
	m, err := model.Load(filepath.Join(dir, "model"), nil)
	if err != nil {
		return err
	}
	defer m.Close()
	lc := lora.DefaultConfig()
	lc.R, lc.LoraAlpha = 4, 8
	lc.TargetModules = lora.TargetString("all-linear")
	lc.InitLoraWeights = false // B random too: B = 0 would leave dA zero
	a, err := lora.New(lc, m.LinearModules(), seed)
	if err != nil {
		return err
	}
	if err := a.Save(filepath.Join(dir, "adapter")); err != nil {
		return err
	}

	const batch = 2
	rng := rand.New(rand.NewPCG(seed, 9))
	ids, labels := make([][]int, batch), make([][]int, batch)
	for b := range ids {
		ids[b], labels[b] = make([]int, seqLen), make([]int, seqLen)
		for t := range ids[b] {
			ids[b][t] = rng.IntN(cfg.VocabSize)
		}
		for t := range labels[b] {
			labels[b][t] = model.IgnoreIndex
			if t < seqLen-1 && rng.IntN(5) != 0 {
				labels[b][t] = ids[b][t+1]
			}
		}
	}
	data, err := json.Marshal(map[string]any{"input_ids": ids, "labels": labels})
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "inputs.json"), append(data, '\n'), 0o644)
}
