package encoder

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
// model.safetensors in dtype, every tensor of Tensors, the pooler included,
// named with prefix: "" as XLMRobertaModel saves them, or "roberta."/"bert."
// as the masked-LM checkpoints do) with random weights for configJSON. Tests
// use it for tiny encoders and the benchmarks for their shapes; the same seed
// writes the same bytes. Linear weights are N(0, 1/in), embeddings N(0, 1),
// LayerNorm weights 1 + N(0, 0.1), biases N(0, 0.1).
func WriteRandomCheckpoint(dir string, configJSON []byte, dtype tensor.DType, seed uint64, prefix string) (*Config, error) {
	cfg, err := ParseConfig(configJSON)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	rng := rand.New(rand.NewPCG(seed, 0xe5))
	be := tensor.NewCPU()
	var entries []safetensors.Entry
	for _, s := range cfg.Tensors() {
		v := make([]float32, s.Numel())
		std, mean := float32(0.1), float32(0)
		switch {
		case strings.HasSuffix(s.Name, "LayerNorm.weight"):
			mean = 1
		case strings.HasPrefix(s.Name, "embeddings.") && len(s.Shape) == 2:
			std = 1
		case len(s.Shape) == 2: // a linear weight [out, in]
			std = float32(1 / math.Sqrt(float64(s.Shape[1])))
		}
		for i := range v {
			v[i] = mean + std*float32(rng.NormFloat64())
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
		entries = append(entries, safetensors.EntryFromTensor(prefix+s.Name, t))
	}
	if err := atomicfile.WriteBytes(filepath.Join(dir, "config.json"), configJSON); err != nil {
		return nil, err
	}
	if err := safetensors.Write(filepath.Join(dir, safetensors.SingleFileName), entries, map[string]string{"format": "pt"}); err != nil {
		return nil, fmt.Errorf("encoder: write random checkpoint: %w", err)
	}
	return cfg, nil
}
