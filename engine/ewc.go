package engine

import (
	"fmt"
	"math"
	"sort"

	"github.com/compassml/compass/model"
	"github.com/compassml/compass/tensor"
)

// Elastic weight consolidation (Kirkpatrick et al. 2017) on the LoRA
// parameters, for COMPASS-ECDA's updates: training on newly selected data
// adds the penalty
//
//	lambda/2 * sum_i F_i (theta_i - theta*_i)^2
//
// where theta* are the adapter's parameters at the end of the previous
// round and F the diagonal of the Fisher information there, estimated as
// the mean of squared per-example gradients of the model's own training
// loss (the "empirical" Fisher). Its gradient, lambda F_i (theta_i -
// theta*_i), is added to the data gradient before clipping and AdamW.

// DefaultEWCLambda is lambda's default, the value COMPASS-ECDA is reported
// to use.
const DefaultEWCLambda = 2.0

// DefaultReplayWeight is the replay loss's default weight, and
// DefaultReplayShare the share of earlier training data the replay buffer
// keeps: COMPASS-ECDA's reported defaults.
const (
	DefaultReplayWeight = 0.1
	DefaultReplayShare  = 0.05
)

// ewcState is the penalty as a Trainer applies it: per parameter, in the
// trainer's order, F and -theta* on the backend.
type ewcState struct {
	lambda       float64
	fisher, negA []*tensor.Tensor
	diff, fd     []*tensor.Tensor // scratch shaped like each parameter
}

// SetEWC makes every later TrainStep add the EWC penalty with weight
// lambda around anchor (theta*), weighted by fisher. Both are keyed by the
// parameters' PEFT names ("<module>.lora_A.weight", as FisherNames and the
// adapter files name them) and must cover every parameter with its shape.
// lambda 0 removes the penalty.
func (t *Trainer) SetEWC(lambda float64, fisher, anchor map[string]*tensor.Tensor) error {
	t.freeEWC()
	if lambda == 0 {
		return nil
	}
	if lambda < 0 || math.IsNaN(lambda) || math.IsInf(lambda, 0) {
		return fmt.Errorf("train: EWC lambda %v: want a finite number >= 0", lambda)
	}
	be := t.m.Backend()
	e := &ewcState{lambda: lambda}
	t.ewc = e
	for i, name := range t.names {
		p := t.params[i]
		f, a := fisher[name], anchor[name]
		if f == nil || a == nil {
			t.freeEWC()
			return fmt.Errorf("train: EWC: no Fisher or anchor value for %s", name)
		}
		if !f.SameShape(p) || !a.SameShape(p) {
			t.freeEWC()
			return fmt.Errorf("train: EWC: %s: Fisher %v and anchor %v, want the parameter's %v", name, f, a, p.Shape())
		}
		fd, err := toF32Device(be, f, 1)
		if err != nil {
			t.freeEWC()
			return fmt.Errorf("train: EWC: Fisher of %s: %w", name, err)
		}
		e.fisher = append(e.fisher, fd)
		na, err := toF32Device(be, a, -1)
		if err != nil {
			t.freeEWC()
			return fmt.Errorf("train: EWC: anchor of %s: %w", name, err)
		}
		e.negA = append(e.negA, na)
		for _, dst := range []*[]*tensor.Tensor{&e.diff, &e.fd} {
			s, err := be.Alloc(tensor.F32, p.Shape()...)
			if err != nil {
				t.freeEWC()
				return fmt.Errorf("train: EWC scratch: %w", err)
			}
			*dst = append(*dst, s)
		}
	}
	return nil
}

// toF32Device returns a fresh F32 copy of h, times s, on the backend.
func toF32Device(be tensor.Backend, h *tensor.Tensor, s float32) (*tensor.Tensor, error) {
	src := h
	if h.DType() != tensor.F32 {
		var err error
		if src, err = tensor.FromF32(h.ToF32(), h.Shape()...); err != nil {
			return nil, err
		}
	}
	out, err := be.Alloc(tensor.F32, h.Shape()...)
	if err != nil {
		return nil, err
	}
	d, err := be.ToDevice(src)
	if err == nil {
		err = be.Scale(out, d, s)
		if d != src {
			be.Free(d)
		}
	}
	if err != nil {
		be.Free(out)
		return nil, err
	}
	return out, nil
}

func (t *Trainer) freeEWC() {
	if t.ewc == nil {
		return
	}
	be := t.m.Backend()
	for _, list := range [][]*tensor.Tensor{t.ewc.fisher, t.ewc.negA, t.ewc.diff, t.ewc.fd} {
		for _, x := range list {
			be.Free(x)
		}
	}
	t.ewc = nil
}

// addEWC adds the penalty's gradient to the LoRA gradients and returns its
// value, lambda/2 sum F (theta - theta*)^2, summed in float64.
func (t *Trainer) addEWC() (float64, error) {
	e := t.ewc
	be := t.m.Backend()
	sum := 0.0
	for i, p := range t.params {
		diff, fd := e.diff[i], e.fd[i]
		if err := be.Add(diff, p, e.negA[i]); err != nil { // theta - theta*
			return 0, err
		}
		if err := be.Mul(fd, diff, e.fisher[i]); err != nil { // F (theta - theta*)
			return 0, err
		}
		s, err := dotSum(be, t, fd, diff)
		if err != nil {
			return 0, err
		}
		sum += s
		if err := be.Scale(fd, fd, float32(e.lambda)); err != nil {
			return 0, err
		}
		if err := be.Add(t.grads[i], t.grads[i], fd); err != nil {
			return 0, err
		}
	}
	return e.lambda / 2 * sum, nil
}

// FisherNames returns the PEFT names of the model's LoRA parameters, in the
// order a Trainer keeps them ("<module>.lora_A.weight", then lora_B).
func FisherNames(m *model.Model) []string {
	t := &Trainer{m: m}
	t.names, t.params, t.grads = loraTables(m)
	return t.names
}

// EstimateFisher returns the diagonal empirical Fisher of the model's LoRA
// parameters: the mean over examples of the squared gradient of each
// example's loss (the mean -log p over its counted tokens), keyed by PEFT
// parameter name, F32 on the host. Each batch is one example: a single row
// (several rows would give the gradient of their joint mean, not
// per-example gradients). The model's gradient buffers are left zeroed;
// progress, when not nil, is called after each example.
func EstimateFisher(m *model.Model, examples []model.Batch, progress func(done, total int)) (map[string]*tensor.Tensor, error) {
	if len(examples) == 0 {
		return nil, fmt.Errorf("fisher: no example")
	}
	names, _, grads := loraTables(m)
	if len(grads) == 0 {
		return nil, fmt.Errorf("fisher: the model has no LoRA adapter attached")
	}
	be := m.Backend()
	acc := make([]*tensor.Tensor, len(grads))
	sq := make([]*tensor.Tensor, len(grads))
	defer func() {
		for i := range acc {
			if acc[i] != nil {
				be.Free(acc[i])
			}
			if sq[i] != nil {
				be.Free(sq[i])
			}
		}
	}()
	if err := m.ZeroLoRAGrads(); err != nil {
		return nil, fmt.Errorf("fisher: %w", err)
	}
	for i, g := range grads {
		var err error
		if acc[i], err = be.Alloc(tensor.F32, g.Shape()...); err == nil {
			if err = be.Scale(acc[i], g, 0); err == nil { // zero: g was just zeroed, so no 0 x NaN
				sq[i], err = be.Alloc(tensor.F32, g.Shape()...)
			}
		}
		if err != nil {
			return nil, fmt.Errorf("fisher: %w", err)
		}
	}
	used := 0
	for n, b := range examples {
		if b.IDs == nil || b.IDs.Rank() != 2 || b.IDs.Dim(0) != 1 {
			return nil, fmt.Errorf("fisher: example %d: want one row, ids %v", n+1, b.IDs)
		}
		if countTargets(b) == 0 {
			continue
		}
		b.GradDivisor = 0
		if _, err := m.ForwardBackward(b); err != nil {
			return nil, fmt.Errorf("fisher: example %d: %w", n+1, err)
		}
		for i, g := range grads {
			if err := be.Mul(sq[i], g, g); err != nil {
				return nil, fmt.Errorf("fisher: %w", err)
			}
			if err := be.Add(acc[i], acc[i], sq[i]); err != nil {
				return nil, fmt.Errorf("fisher: %w", err)
			}
		}
		if err := m.ZeroLoRAGrads(); err != nil {
			return nil, fmt.Errorf("fisher: %w", err)
		}
		used++
		if progress != nil {
			progress(n+1, len(examples))
		}
	}
	if used == 0 {
		return nil, fmt.Errorf("fisher: no example has a token to learn from")
	}
	out := map[string]*tensor.Tensor{}
	for i, name := range names {
		if err := be.Scale(acc[i], acc[i], float32(1/float64(used))); err != nil {
			return nil, fmt.Errorf("fisher: %w", err)
		}
		h, err := be.ToHost(acc[i])
		if err != nil {
			return nil, fmt.Errorf("fisher: %w", err)
		}
		if h == acc[i] { // the CPU's own tensor: keep it, and do not free it below
			acc[i] = nil
		}
		out[name] = h
	}
	return out, nil
}

// loraTables lists the model's LoRA parameters and gradients in the
// trainer's order: by module name, A then B.
func loraTables(m *model.Model) (names []string, params, grads []*tensor.Tensor) {
	ps, gs := m.LoRAParams(), m.LoRAGrads()
	modules := make([]string, 0, len(ps))
	for name := range ps {
		modules = append(modules, name)
	}
	sort.Strings(modules)
	for _, name := range modules {
		for k := range 2 {
			names = append(names, name+[]string{".lora_A.weight", ".lora_B.weight"}[k])
			params = append(params, ps[name][k])
			grads = append(grads, gs[name][k])
		}
	}
	return names, params, grads
}
