package engine

import (
	"testing"

	"github.com/compassml/compass/lora"
	"github.com/compassml/compass/model"
	"github.com/compassml/compass/tensor"
)

// BenchmarkTrainStep times one LoRA step (forward, loss, backward, AdamW)
// on batch 4 x 256 of a 4-layer hidden-512 model, r = 16 on all seven
// projections; `compass bench --only train` puts it next to PyTorch.
func BenchmarkTrainStep(b *testing.B) {
	const config = `{"architectures":["LlamaForCausalLM"],"model_type":"llama","hidden_size":512,"intermediate_size":1536,
		"num_hidden_layers":4,"num_attention_heads":8,"num_key_value_heads":2,"vocab_size":32000,"max_position_embeddings":4096,
		"torch_dtype":"float32"}`
	dir := b.TempDir()
	if _, err := model.WriteRandomCheckpoint(dir, []byte(config), tensor.F32, 1); err != nil {
		b.Fatal(err)
	}
	m, err := model.Load(dir, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	cfg := lora.DefaultConfig()
	cfg.R, cfg.LoraAlpha = 16, 32
	cfg.TargetModules = lora.TargetString("all-linear")
	a, err := lora.New(cfg, m.LinearModules(), 1)
	if err != nil {
		b.Fatal(err)
	}
	if err := m.AttachAdapter(a); err != nil {
		b.Fatal(err)
	}
	tr, err := NewTrainer(m, DefaultAdamW())
	if err != nil {
		b.Fatal(err)
	}
	const B, T = 4, 256
	ids, labels := make([]int32, B*T), make([]int32, B*T)
	for i := range ids {
		ids[i] = int32(i * 7919 % 32000)
	}
	for i := range labels {
		labels[i] = model.IgnoreIndex
		if i%T != T-1 {
			labels[i] = ids[i+1]
		}
	}
	idT, _ := tensor.FromI32(ids, B, T)
	labT, _ := tensor.FromI32(labels, B, T)
	batch := model.Batch{IDs: idT, Labels: labT}
	for b.Loop() {
		if _, err := tr.Step(batch); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(B*T*b.N)/b.Elapsed().Seconds(), "tokens/s")
}
