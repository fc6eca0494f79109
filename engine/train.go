package engine

import (
	"fmt"
	"math"

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

// Trainer updates a model's LoRA parameters with AdamW, one optimizer step
// at a time, each over one or more micro-batches. The base weights stay
// frozen.
type Trainer struct {
	m   *model.Model
	cfg AdamWConfig
	// MaxGradNorm clips the gradient of a step to this global 2-norm, as
	// torch.nn.utils.clip_grad_norm_ does; 0 disables clipping.
	MaxGradNorm float64

	step int // optimizer steps taken (AdamW's bias correction counts from 1)
	// The parameters, their gradients and AdamW moments, in a fixed order:
	// by module name, A then B. names are the parameters' PEFT names.
	names                     []string
	params, grads, mom1, mom2 []*tensor.Tensor
	scratch, scalar           *tensor.Tensor // for the gradient norm on a device
	ewc                       *ewcState      // the EWC penalty (SetEWC); nil: none
}

// StepResult is what one optimizer step did.
type StepResult struct {
	Loss   float64 // mean -log p over the counted tokens of all micro-batches
	Tokens int     // counted (target) tokens
	// With replay (TrainStepReplay): the replay micro-batches' mean loss
	// and tokens, and the weight Objective gives their loss.
	ReplayLoss   float64
	ReplayTokens int
	ReplayWeight float64
	Penalty      float64 // the EWC penalty's value before the update (SetEWC); 0 without
	// Objective is what the step descended: Loss + ReplayWeight*ReplayLoss + Penalty.
	Objective float64
	GradNorm  float64 // global 2-norm of the gradient, before clipping
	LR        float64 // the learning rate used
}

// NewTrainer prepares AdamW state for every LoRA parameter attached to m;
// the trainer updates the adapters' A and B in place.
func NewTrainer(m *model.Model, cfg AdamWConfig) (*Trainer, error) {
	if len(m.LoRAGrads()) == 0 {
		return nil, fmt.Errorf("train: the model has no LoRA adapter attached")
	}
	t := &Trainer{m: m, cfg: cfg}
	t.names, t.params, t.grads = loraTables(m)
	be := m.Backend()
	largest := 0
	for i, p := range t.params {
		m1, err := be.Alloc(tensor.F32, p.Shape()...)
		if err != nil {
			return nil, fmt.Errorf("train: AdamW state of %s: %w", t.names[i], err)
		}
		m2, err := be.Alloc(tensor.F32, p.Shape()...)
		if err != nil {
			return nil, fmt.Errorf("train: AdamW state of %s: %w", t.names[i], err)
		}
		t.mom1 = append(t.mom1, m1)
		t.mom2 = append(t.mom2, m2)
		largest = max(largest, p.NumElements())
	}
	if !t.grads[0].OnHost() {
		var err error
		if t.scratch, err = be.Alloc(tensor.F32, largest); err != nil {
			return nil, fmt.Errorf("train: gradient norm scratch: %w", err)
		}
		if t.scalar, err = be.Alloc(tensor.F32, 1); err != nil {
			return nil, fmt.Errorf("train: gradient norm scratch: %w", err)
		}
	}
	return t, nil
}

// Close frees the optimizer state on the backend.
func (t *Trainer) Close() {
	be := t.m.Backend()
	for _, x := range append(append([]*tensor.Tensor{}, t.mom1...), t.mom2...) {
		be.Free(x)
	}
	if t.scratch != nil {
		be.Free(t.scratch)
		be.Free(t.scalar)
	}
	t.mom1, t.mom2, t.scratch, t.scalar = nil, nil, nil, nil
	t.freeEWC()
}

// Steps returns how many optimizer steps the trainer has taken.
func (t *Trainer) Steps() int { return t.step }

// Step runs forward and backward on b and applies one AdamW update at the
// configured learning rate. It returns the batch's loss before the update.
func (t *Trainer) Step(b model.Batch) (*model.Output, error) {
	r, err := t.TrainStep([]model.Batch{b}, nil, float64(t.cfg.LR))
	if err != nil {
		return nil, err
	}
	return &model.Output{Loss: r.Loss, Tokens: r.Tokens}, nil
}

// TrainStep is one optimizer step over the micro-batches of a global
// batch: their gradients are accumulated with the loss normalised over the
// counted tokens of all of them (the mean over the step's tokens, not a
// mean of per-micro-batch means), clipped to MaxGradNorm, and applied by
// AdamW at learning rate lr. seeds, when not nil, gives each micro-batch's
// LoRA dropout seed (Model.DropoutSeed). A loss or gradient that is not finite is an
// error before any parameter changes.
func (t *Trainer) TrainStep(micro []model.Batch, seeds []uint64, lr float64) (StepResult, error) {
	return t.TrainStepReplay(micro, nil, 0, seeds, lr)
}

// TrainStepReplay is TrainStep on the objective
//
//	mean loss of micro + replayWeight * mean loss of replay (+ the EWC penalty)
//
// for COMPASS-ECDA's updates: replay holds micro-batches of earlier rounds'
// data, each mean taken over its own counted tokens. seeds, when not nil,
// gives the dropout seeds of micro then replay.
func (t *Trainer) TrainStepReplay(micro, replay []model.Batch, replayWeight float64, seeds []uint64, lr float64) (StepResult, error) {
	res := StepResult{LR: lr, ReplayWeight: replayWeight}
	n := t.step + 1
	if len(micro) == 0 {
		return res, fmt.Errorf("train: step %d: no micro-batch", n)
	}
	if replayWeight < 0 || math.IsNaN(replayWeight) || math.IsInf(replayWeight, 0) {
		return res, fmt.Errorf("train: step %d: replay weight %v: want a finite number >= 0", n, replayWeight)
	}
	if seeds != nil && len(seeds) != len(micro)+len(replay) {
		return res, fmt.Errorf("train: step %d: %d dropout seeds for %d micro-batches", n, len(seeds), len(micro)+len(replay))
	}
	total := 0
	for _, b := range micro {
		total += countTargets(b)
	}
	if total == 0 {
		return res, fmt.Errorf("train: step %d: no token to learn from (every label is ignored)", n)
	}
	if err := t.m.ZeroLoRAGrads(); err != nil {
		return res, fmt.Errorf("train: step %d: %w", n, err)
	}
	// The replay part first: its gradient (of its own mean) is scaled by
	// the weight, then the new data's gradient is accumulated on top.
	be := t.m.Backend()
	if replayWeight > 0 && len(replay) > 0 {
		var seedsR []uint64
		if seeds != nil {
			seedsR = seeds[len(micro):]
		}
		loss, tokens, err := t.accumulate(n, replay, seedsR)
		if err != nil {
			return res, err
		}
		if tokens > 0 {
			for _, g := range t.grads {
				if err := be.Scale(g, g, float32(replayWeight)); err != nil {
					return res, fmt.Errorf("train: step %d: replay weight: %w", n, err)
				}
			}
		}
		res.ReplayLoss, res.ReplayTokens = loss, tokens
	}
	var seedsM []uint64
	if seeds != nil {
		seedsM = seeds[:len(micro)]
	}
	loss, tokens, err := t.accumulate(n, micro, seedsM)
	if err != nil {
		return res, err
	}
	res.Loss, res.Tokens = loss, tokens
	if math.IsNaN(res.Loss) || math.IsInf(res.Loss, 0) {
		return res, fmt.Errorf("train: step %d: loss is %v", n, res.Loss)
	}
	if t.ewc != nil {
		if res.Penalty, err = t.addEWC(); err != nil {
			return res, fmt.Errorf("train: step %d: EWC penalty: %w", n, err)
		}
	}
	res.Objective = res.Loss + res.ReplayWeight*res.ReplayLoss + res.Penalty
	norm, err := t.gradNorm()
	if err != nil {
		return res, fmt.Errorf("train: step %d: gradient norm: %w", n, err)
	}
	res.GradNorm = norm
	if math.IsNaN(norm) || math.IsInf(norm, 0) {
		return res, fmt.Errorf("train: step %d: gradient norm is %v (loss %.6g)", n, norm, res.Loss)
	}
	if t.MaxGradNorm > 0 {
		// torch.nn.utils.clip_grad_norm_: coefficient max/(norm+1e-6), at most 1.
		if coef := t.MaxGradNorm / (norm + 1e-6); coef < 1 {
			for _, g := range t.grads {
				if err := be.Scale(g, g, float32(coef)); err != nil {
					return res, fmt.Errorf("train: step %d: clip: %w", n, err)
				}
			}
		}
	}
	c := t.cfg
	if err := be.AdamW(t.params, t.grads, t.mom1, t.mom2, n, float32(lr), c.Beta1, c.Beta2, c.Eps, c.WeightDecay); err != nil {
		return res, fmt.Errorf("train: step %d: %w", n, err)
	}
	t.step = n
	return res, nil
}

// accumulate adds the gradient of the mean loss over the counted tokens
// of micro into the LoRA gradients and returns that mean and the count.
func (t *Trainer) accumulate(n int, micro []model.Batch, seeds []uint64) (float64, int, error) {
	total := 0
	for _, b := range micro {
		total += countTargets(b)
	}
	if total == 0 {
		return 0, 0, nil
	}
	sum := 0.0
	for i, b := range micro {
		if countTargets(b) == 0 {
			continue
		}
		b.GradDivisor = total
		if seeds != nil {
			t.m.DropoutSeed = seeds[i]
		}
		out, err := t.m.ForwardBackward(b)
		if err != nil {
			return 0, 0, fmt.Errorf("train: step %d, micro-batch %d: %w", n, i+1, err)
		}
		sum += out.Loss * float64(out.Tokens)
	}
	return sum / float64(total), total, nil
}

// countTargets counts the labels of b that are not ignored.
func countTargets(b model.Batch) int {
	n := 0
	for _, l := range b.Labels.I32() {
		if l != model.IgnoreIndex {
			n++
		}
	}
	return n
}

// dotSum returns sum(a * b) in float64, on the host for host tensors and
// through the trainer's scratch on a device.
func dotSum(be tensor.Backend, t *Trainer, a, b *tensor.Tensor) (float64, error) {
	if a.OnHost() {
		s := 0.0
		bv := b.F32()
		for j, v := range a.F32() {
			s += float64(v) * float64(bv[j])
		}
		return s, nil
	}
	sq, err := t.scratch.Slice(0, a.NumElements())
	if err == nil {
		sq, err = sq.Reshape(a.Shape()...)
	}
	if err != nil {
		return 0, err
	}
	if err := be.Mul(sq, a, b); err != nil {
		return 0, err
	}
	if err := be.Sum(t.scalar, sq); err != nil {
		return 0, err
	}
	h, err := be.ToHost(t.scalar)
	if err != nil {
		return 0, err
	}
	return float64(h.F32()[0]), nil
}

// gradNorm returns the global 2-norm of all LoRA gradients, summed in
// float64 (on a device: each tensor's sum of squares there, added here).
func (t *Trainer) gradNorm() (float64, error) {
	be := t.m.Backend()
	sum := 0.0
	for _, g := range t.grads {
		s, err := dotSum(be, t, g, g)
		if err != nil {
			return 0, err
		}
		sum += s
	}
	return math.Sqrt(sum), nil
}

// OptimizerState returns the AdamW moments in host memory, named
// "<PEFT parameter name>.exp_avg" and ".exp_avg_sq" as torch names them.
func (t *Trainer) OptimizerState() (map[string]*tensor.Tensor, error) {
	be := t.m.Backend()
	out := map[string]*tensor.Tensor{}
	for i, name := range t.names {
		for suffix, x := range map[string]*tensor.Tensor{".exp_avg": t.mom1[i], ".exp_avg_sq": t.mom2[i]} {
			h, err := be.ToHost(x)
			if err != nil {
				return nil, err
			}
			if h == x { // the CPU's own tensor: copy it, training goes on
				h = tensor.New(tensor.F32, x.Shape()...)
				copy(h.Bytes(), x.Bytes())
			}
			out[name+suffix] = h
		}
	}
	return out, nil
}

// SetOptimizerState restores the moments saved by OptimizerState and the
// number of steps taken. Every moment must be present with its shape.
func (t *Trainer) SetOptimizerState(state map[string]*tensor.Tensor, steps int) error {
	be := t.m.Backend()
	for i, name := range t.names {
		for suffix, x := range map[string]*tensor.Tensor{".exp_avg": t.mom1[i], ".exp_avg_sq": t.mom2[i]} {
			s, ok := state[name+suffix]
			if !ok {
				return fmt.Errorf("optimizer state has no %s", name+suffix)
			}
			if s.DType() != tensor.F32 || !s.SameShape(x) {
				return fmt.Errorf("optimizer state %s is %v, want F32 %v", name+suffix, s, x.Shape())
			}
			d, err := be.ToDevice(s)
			if err == nil {
				err = be.Copy(x, d)
				if d != s {
					be.Free(d)
				}
			}
			if err != nil {
				return fmt.Errorf("optimizer state %s: %w", name+suffix, err)
			}
		}
	}
	if len(state) != 2*len(t.names) {
		return fmt.Errorf("optimizer state has %d tensors, the adapter needs %d", len(state), 2*len(t.names))
	}
	t.step = steps
	return nil
}
