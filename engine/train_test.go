package engine

import (
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/compassml/compass/lora"
	"github.com/compassml/compass/model"
	"github.com/compassml/compass/tensor"
)

const tinyLlama = `{"architectures":["LlamaForCausalLM"],"model_type":"llama","hidden_size":32,"intermediate_size":48,
	"num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"vocab_size":40,"max_position_embeddings":64,
	"torch_dtype":"float32"}`

func tinyModel(t *testing.T) (*model.Model, string) {
	t.Helper()
	dir := t.TempDir()
	if _, err := model.WriteRandomCheckpoint(dir, []byte(tinyLlama), tensor.F32, 1); err != nil {
		t.Fatal(err)
	}
	m, err := model.Load(dir, &tensor.CPU{PoisonEmpty: true}) // a read before a write shows as NaN
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m, dir
}

// A fixed batch of a repeating pattern: a LoRA adapter can learn it, so
// training must lower the loss; and the trained adapter, saved in the PEFT
// format and loaded again, must give the trained model's loss.
func TestTrainerLowersLossAndSaves(t *testing.T) {
	m, _ := tinyModel(t)
	cfg := lora.DefaultConfig()
	cfg.R, cfg.LoraAlpha = 8, 16
	cfg.TargetModules = lora.TargetString("all-linear")
	adapter, err := lora.New(cfg, m.LinearModules(), 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.AttachAdapter(adapter); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	const B, T = 4, 16
	ids, labels := make([]int32, B*T), make([]int32, B*T)
	for b := range B {
		start := rng.IntN(5)
		for i := range T {
			ids[b*T+i] = int32((start + 3*i) % 40)
		}
		for i := range T {
			labels[b*T+i] = model.IgnoreIndex
			if i+1 < T {
				labels[b*T+i] = ids[b*T+i+1]
			}
		}
	}
	idT, _ := tensor.FromI32(ids, B, T)
	labT, _ := tensor.FromI32(labels, B, T)
	batch := model.Batch{IDs: idT, Labels: labT}

	opt := DefaultAdamW()
	opt.LR = 1e-2
	tr, err := NewTrainer(m, opt)
	if err != nil {
		t.Fatal(err)
	}
	first, err := tr.Step(batch)
	if err != nil {
		t.Fatal(err)
	}
	var last *model.Output
	for range 30 {
		if last, err = tr.Step(batch); err != nil {
			t.Fatal(err)
		}
	}
	if !(last.Loss < 0.5*first.Loss) {
		t.Fatalf("loss %.4f after 30 steps, started at %.4f: not learning", last.Loss, first.Loss)
	}
	trained, err := m.Forward(batch)
	if err != nil {
		t.Fatal(err)
	}

	// The trained weights are the model's (AttachLoRA may copy A).
	for name, p := range m.LoRAParams() {
		copy(adapter.A[name].F32(), p[0].F32())
		copy(adapter.B[name].F32(), p[1].F32())
	}
	dir := filepath.Join(t.TempDir(), "adapter")
	if err := adapter.Save(dir); err != nil {
		t.Fatal(err)
	}
	m2, _ := tinyModel(t)
	loaded, err := lora.Load(dir, m2.LinearModules())
	if err != nil {
		t.Fatal(err)
	}
	if err := m2.AttachAdapter(loaded); err != nil {
		t.Fatal(err)
	}
	again, err := m2.Forward(batch)
	if err != nil {
		t.Fatal(err)
	}
	if again.Loss != trained.Loss {
		t.Errorf("loss with the saved adapter %v, trained model %v", again.Loss, trained.Loss)
	}
}

func TestTrainerNeedsAdapter(t *testing.T) {
	m, _ := tinyModel(t)
	if _, err := NewTrainer(m, DefaultAdamW()); err == nil {
		t.Error("no adapter: no error")
	}
}
