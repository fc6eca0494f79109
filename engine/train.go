package engine

import (
	"fmt"
	"math"
	"sort"

	"github.com/compassml/compass/model"
	"github.com/compassml/compass/tensor"
)

// AdamWConfig are the optimizer's settings; the defaults are
// torch.optim.AdamW's, with PEFT examples' learning rate.
type AdamWConfig struct {
	LR, Beta1, Beta2, Eps, WeightDecay float32
}

// DefaultAdamW returns lr 1e-4, betas (0.9, 0.999), eps 1e-8, weight decay 0.01.
func DefaultAdamW() AdamWConfig {
	return AdamWConfig{LR: 1e-4, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.01}
}

// Trainer updates a model's LoRA parameters with AdamW, one batch a step.
// The base weights stay frozen.
type Trainer struct {
	m    *model.Model
	cfg  AdamWConfig
	step int
	// params, grads and the AdamW moments, in a fixed (module name) order.
	params, grads, mom1, mom2 []*tensor.Tensor
}

// NewTrainer prepares AdamW state for every LoRA parameter attached to m;
// the trainer updates the adapters' A and B in place.
func NewTrainer(m *model.Model, cfg AdamWConfig) (*Trainer, error) {
	grads, params := m.LoRAGrads(), m.LoRAParams()
	if len(grads) == 0 {
		return nil, fmt.Errorf("train: the model has no LoRA adapter attached")
	}
	names := make([]string, 0, len(grads))
	for name := range grads {
		names = append(names, name)
	}
	sort.Strings(names)
	t := &Trainer{m: m, cfg: cfg}
	for _, name := range names {
		g := grads[name]
		for k, p := range params[name] {
			m1, err := m.Backend().Alloc(tensor.F32, p.Shape()...)
			if err != nil {
				return nil, fmt.Errorf("train: AdamW state of %s: %w", name, err)
			}
			m2, err := m.Backend().Alloc(tensor.F32, p.Shape()...)
			if err != nil {
				return nil, fmt.Errorf("train: AdamW state of %s: %w", name, err)
			}
			t.params = append(t.params, p)
			t.grads = append(t.grads, g[k])
			t.mom1 = append(t.mom1, m1)
			t.mom2 = append(t.mom2, m2)
		}
	}
	return t, nil
}

// Step runs forward and backward on b and applies one AdamW update. It
// returns the batch's loss before the update.
func (t *Trainer) Step(b model.Batch) (*model.Output, error) {
	if err := t.m.ZeroLoRAGrads(); err != nil {
		return nil, err
	}
	out, err := t.m.ForwardBackward(b)
	if err != nil {
		return nil, err
	}
	if math.IsNaN(out.Loss) || math.IsInf(out.Loss, 0) {
		return nil, fmt.Errorf("train: step %d: loss is %v", t.step+1, out.Loss)
	}
	t.step++
	c := t.cfg
	if err := t.m.Backend().AdamW(t.params, t.grads, t.mom1, t.mom2, t.step, c.LR, c.Beta1, c.Beta2, c.Eps, c.WeightDecay); err != nil {
		return nil, fmt.Errorf("train: step %d: %w", t.step, err)
	}
	return out, nil
}
