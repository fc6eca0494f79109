package model

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"

	"github.com/compassml/compass/internal/atomicfile"
	"github.com/compassml/compass/tensor"
	"github.com/compassml/compass/tensor/safetensors"
)

// WriteRandomCheckpoint writes a checkpoint directory (config.json and
// model.safetensors in dtype) with random weights for configJSON, the way a
// Hugging Face model directory looks. Tests use it for tiny models of every
// variant and the benchmarks for full-size shapes; the same seed writes the
// same bytes. Linear weights are N(0, 1/in) so that activations stay O(1) at
// any width, embeddings N(0, 1), norm weights 1 + N(0, 0.1), biases N(0, 0.02).
func WriteRandomCheckpoint(dir string, configJSON []byte, dtype tensor.DType, seed uint64) (*Config, error) {
	cfg, err := ParseConfig(configJSON)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	be := tensor.NewCPU()
	var entries []safetensors.Entry
	for _, s := range cfg.Tensors() {
		v := make([]float32, s.Numel())
		switch {
		case strings.HasSuffix(s.Name, "norm.weight"):
			for i := range v {
				v[i] = 1 + 0.1*float32(rng.NormFloat64())
			}
		case strings.HasSuffix(s.Name, ".bias"):
			for i := range v {
				v[i] = 0.02 * float32(rng.NormFloat64())
			}
		case s.Name == "model.embed_tokens.weight" || s.Name == "lm_head.weight":
			for i := range v {
				v[i] = float32(rng.NormFloat64())
			}
		default: // a linear weight [out, in]
			std := float32(1 / math.Sqrt(float64(s.Shape[1])))
			for i := range v {
				v[i] = std * float32(rng.NormFloat64())
			}
		}
		t, err := tensor.FromF32(v, s.Shape...)
		if err != nil {
			return nil, err
		}
		if dtype != tensor.F32 {
			c := tensor.New(dtype, s.Shape...)
			if err := be.Copy(c, t); err != nil {
				return nil, err
			}
			t = c
		}
		entries = append(entries, safetensors.EntryFromTensor(s.Name, t))
	}
	if err := atomicfile.WriteBytes(filepath.Join(dir, "config.json"), configJSON); err != nil {
		return nil, err
	}
	if err := safetensors.Write(filepath.Join(dir, "model.safetensors"), entries, map[string]string{"format": "pt"}); err != nil {
		return nil, fmt.Errorf("model: write random checkpoint: %w", err)
	}
	return cfg, nil
}
