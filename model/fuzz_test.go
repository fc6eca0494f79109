package model

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/compassml/compass/internal/fuzzguard"
)

// FuzzParseConfig parses a config.json of any content. A config that
// ParseConfig accepts must be one the rest of the package can work with:
// its tensors listed, its parameters counted and its memory estimated
// without a panic, an overflow or an absurd allocation.
func FuzzParseConfig(f *testing.F) {
	for _, name := range []string{"llama-3.1-8b.json", "qwen2.5-7b.json", "phi-4-mini-instruct.json"} {
		b, err := os.ReadFile(filepath.Join("..", "testdata", "configs", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	b, err := os.ReadFile(filepath.Join("..", "testdata", "demo", "model", "config.json"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add([]byte(`{"architectures":["Qwen2ForCausalLM"],"model_type":"qwen2","hidden_size":8,"intermediate_size":16,"num_hidden_layers":1,"num_attention_heads":2,"vocab_size":10,"rope_parameters":{"rope_type":"default","rope_theta":1e4,"partial_rotary_factor":0.5},"eos_token_id":[1,2]}`))
	// Found by reading the code, not by the fuzzer, which does not grow
	// numbers this far: ten million layers took NumParameters (compass
	// inspect) three minutes and 23 GB, and sizes of 4e9 overflowed its
	// count to a negative one.
	f.Add([]byte(`{"architectures":["LlamaForCausalLM"],"model_type":"llama","hidden_size":8,"intermediate_size":16,"num_hidden_layers":10000000,"num_attention_heads":2,"vocab_size":10}`))
	f.Add([]byte(`{"architectures":["LlamaForCausalLM"],"model_type":"llama","hidden_size":4000000000,"intermediate_size":4000000000,"num_hidden_layers":1,"num_attention_heads":2,"vocab_size":4000000000}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		defer fuzzguard.Start(t, 256<<20)()
		c, err := ParseConfig(data)
		if err != nil {
			return
		}
		if rot := c.RotaryDims(); rot < 2 || rot > c.HeadDim {
			t.Fatalf("rotary dims %d of head_dim %d", rot, c.HeadDim)
		}
		c.RopeAttentionFactor()
		for _, p := range c.Projections() {
			if p.In <= 0 || p.Out <= 0 {
				t.Fatalf("projection %+v", p)
			}
		}
		if n := c.NumParameters(); n <= 0 {
			t.Fatalf("%d parameters", n)
		}
		e, err := EstimateLoRAMemory(c, MemoryOptions{SeqLen: 1024, Batch: 1, Rank: 16})
		if err == nil && e.Total <= 0 {
			t.Fatalf("memory estimate %+v", e)
		}
	})
}
