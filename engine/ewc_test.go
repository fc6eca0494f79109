package engine

import (
	"math"
	"math/rand/v2"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/compassml/compass/lora"
	"github.com/compassml/compass/model"
	"github.com/compassml/compass/model/tokenizer"
	"github.com/compassml/compass/tensor"
	"github.com/compassml/compass/tensor/safetensors"
)

// ewcModel loads the tiny byte-level llama with a random adapter (B not
// zero, so that every gradient is), and returns it with its directories.
func ewcModel(t *testing.T) (m *model.Model, modelDir, adapterDir string) {
	t.Helper()
	modelDir = writeTinyByteModel(t, tinyByteLlama, 5)
	m, err := model.Load(modelDir, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	lc := lora.DefaultConfig()
	lc.R, lc.LoraAlpha = 4, 8
	lc.TargetModules = lora.TargetString("all-linear")
	lc.InitLoraWeights = false
	a, err := lora.New(lc, m.LinearModules(), 11)
	if err != nil {
		t.Fatal(err)
	}
	adapterDir = filepath.Join(t.TempDir(), "adapter")
	if err := a.Save(adapterDir); err != nil {
		t.Fatal(err)
	}
	if err := m.AttachAdapter(a); err != nil {
		t.Fatal(err)
	}
	return m, modelDir, adapterDir
}

// randomTensors returns a tensor shaped like each parameter: uniform in
// [lo, hi) plus, when base is not nil, base's value.
func randomTensors(names []string, params []*tensor.Tensor, base map[string]*tensor.Tensor, lo, hi float64, seed uint64) map[string]*tensor.Tensor {
	rng := rand.New(rand.NewPCG(seed, 3))
	out := map[string]*tensor.Tensor{}
	for i, name := range names {
		x := tensor.New(tensor.F32, params[i].Shape()...)
		v := x.F32()
		for j := range v {
			v[j] = float32(lo + (hi-lo)*rng.Float64())
			if base != nil {
				v[j] += base[name].F32()[j]
			}
		}
		out[name] = x
	}
	return out
}

// The penalty's gradient that TrainStep adds is the derivative of the
// value it reports: checked by central differences on every element of
// a few parameters (the penalty is quadratic, so the difference is exact
// up to float32 rounding of the value).
func TestEWCGradientFiniteDifferences(t *testing.T) {
	m, _, _ := ewcModel(t)
	tr, err := NewTrainer(m, DefaultAdamW())
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	current := map[string]*tensor.Tensor{}
	for i, name := range tr.names {
		current[name] = tr.params[i]
	}
	fisher := randomTensors(tr.names, tr.params, nil, 0, 3, 1)
	anchor := randomTensors(tr.names, tr.params, current, -0.2, 0.2, 2)
	const lambda = 2.0
	if err := tr.SetEWC(lambda, fisher, anchor); err != nil {
		t.Fatal(err)
	}
	penalty := func() (float64, []float32) {
		if err := m.ZeroLoRAGrads(); err != nil {
			t.Fatal(err)
		}
		v, err := tr.addEWC()
		if err != nil {
			t.Fatal(err)
		}
		return v, nil
	}
	// Analytic: lambda F (theta - theta*), and the value by hand.
	want := 0.0
	for i, name := range tr.names {
		p, f, a := tr.params[i].F32(), fisher[name].F32(), anchor[name].F32()
		for j := range p {
			d := float64(p[j]) - float64(a[j])
			want += lambda / 2 * float64(f[j]) * d * d
		}
	}
	got, _ := penalty()
	if math.Abs(got-want) > 1e-5*want {
		t.Fatalf("penalty %v, by hand %v", got, want)
	}
	grads := make([][]float32, len(tr.grads))
	for i, g := range tr.grads {
		grads[i] = append([]float32(nil), g.F32()...)
	}
	checked, worst := 0, 0.0
	for i := range tr.params {
		if i%3 != 0 { // every third parameter tensor
			continue
		}
		p := tr.params[i].F32()
		for j := 0; j < len(p); j += 1 + len(p)/64 { // about 64 elements of each
			const h = 1e-2
			orig := p[j]
			p[j] = orig + h
			plus, _ := penalty()
			p[j] = orig - h
			minus, _ := penalty()
			p[j] = orig
			fd := (plus - minus) / (2 * h)
			diff := math.Abs(fd - float64(grads[i][j]))
			// float32 rounding of values near the total penalty, over 2h.
			tol := 1e-6*math.Abs(plus)/h + 1e-4*math.Abs(fd)
			if diff > tol {
				t.Fatalf("%s[%d]: gradient %v, finite difference %v", tr.names[i], j, grads[i][j], fd)
			}
			worst = math.Max(worst, diff/math.Max(math.Abs(fd), 1e-12))
			checked++
		}
	}
	t.Logf("penalty %.6g; %d elements checked, worst relative difference %.2g", got, checked, worst)
	if checked < 200 {
		t.Fatalf("checked %d elements", checked)
	}
}

// A step with EWC equals a step without it whose gradient has the
// penalty's gradient added by hand: SetEWC(0) removes it, and an anchor at
// the current parameters adds nothing.
func TestEWCStep(t *testing.T) {
	m, modelDir, _ := ewcModel(t)
	tok := loadTok(t, modelDir)
	b := oneRow(t, encode(t, tok, "the quick brown fox jumps over the lazy dog"))
	tr, err := NewTrainer(m, DefaultAdamW())
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	current := map[string]*tensor.Tensor{}
	for i, name := range tr.names {
		c := tensor.New(tensor.F32, tr.params[i].Shape()...)
		copy(c.F32(), tr.params[i].F32())
		current[name] = c
	}
	fisher := randomTensors(tr.names, tr.params, nil, 0, 1, 4)
	if err := tr.SetEWC(2, fisher, current); err != nil {
		t.Fatal(err)
	}
	r, err := tr.TrainStep([]model.Batch{b}, nil, 1e-3)
	if err != nil {
		t.Fatal(err)
	}
	if r.Penalty != 0 || r.Objective != r.Loss {
		t.Fatalf("anchor at the parameters: penalty %v, objective %v, loss %v", r.Penalty, r.Objective, r.Loss)
	}
	r, err = tr.TrainStep([]model.Batch{b}, nil, 1e-3)
	if err != nil {
		t.Fatal(err)
	}
	if !(r.Penalty > 0) || math.Abs(r.Objective-(r.Loss+r.Penalty)) > 1e-12 {
		t.Fatalf("after a step: penalty %v, objective %v, loss %v", r.Penalty, r.Objective, r.Loss)
	}
	if err := tr.SetEWC(0, nil, nil); err != nil {
		t.Fatal(err)
	}
	if r, err = tr.TrainStep([]model.Batch{b}, nil, 1e-3); err != nil || r.Penalty != 0 {
		t.Fatalf("lambda 0: penalty %v, %v", r.Penalty, err)
	}
	// Bad input names what is wrong.
	delete(fisher, tr.names[0])
	if err := tr.SetEWC(2, fisher, current); err == nil {
		t.Fatal("a missing Fisher tensor was accepted")
	}
	if err := tr.SetEWC(-1, fisher, current); err == nil {
		t.Fatal("a negative lambda was accepted")
	}
}

// SetEWC rejects a lambda that is negative or not finite even when every
// Fisher and anchor tensor is there, and leaves no penalty behind.
func TestSetEWCBadLambda(t *testing.T) {
	m, _, _ := ewcModel(t)
	tr, err := NewTrainer(m, DefaultAdamW())
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	fisher := randomTensors(tr.names, tr.params, nil, 0, 1, 1)
	anchor := randomTensors(tr.names, tr.params, nil, -0.2, 0.2, 2)
	for _, lambda := range []float64{-1, math.NaN(), math.Inf(1)} {
		if err := tr.SetEWC(lambda, fisher, anchor); err == nil || !strings.Contains(err.Error(), "lambda") {
			t.Errorf("lambda %v: error %v, want one naming lambda", lambda, err)
		}
		if tr.ewc != nil {
			t.Errorf("lambda %v: a penalty is set", lambda)
		}
	}
}

// Replay: the step's gradient is that of loss(new) + w loss(replay); with
// w = 0 it is the new data's alone, and the reported objective adds up.
func TestReplayStep(t *testing.T) {
	m, modelDir, _ := ewcModel(t)
	tok := loadTok(t, modelDir)
	fresh := oneRow(t, encode(t, tok, "a fresh sentence about the weather in spring"))
	old := oneRow(t, encode(t, tok, "an older sentence about ships and the sea"))
	tr, err := NewTrainer(m, DefaultAdamW())
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	gradsOf := func(micro, replay []model.Batch, w float64) ([][]float32, StepResult) {
		// lr 0: AdamW changes nothing, the gradients stay in the buffers.
		tr.MaxGradNorm = 0
		r, err := tr.TrainStepReplay(micro, replay, w, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		out := make([][]float32, len(tr.grads))
		for i, g := range tr.grads {
			out[i] = append([]float32(nil), g.F32()...)
		}
		return out, r
	}
	gNew, rNew := gradsOf([]model.Batch{fresh}, nil, 0)
	gOld, rOld := gradsOf([]model.Batch{old}, nil, 0)
	const w = 0.1
	gMix, rMix := gradsOf([]model.Batch{fresh}, []model.Batch{old}, w)
	if math.Abs(rMix.Loss-rNew.Loss) > 1e-12 || math.Abs(rMix.ReplayLoss-rOld.Loss) > 1e-12 {
		t.Fatalf("losses: mixed %v + replay %v, alone %v and %v", rMix.Loss, rMix.ReplayLoss, rNew.Loss, rOld.Loss)
	}
	if math.Abs(rMix.Objective-(rNew.Loss+w*rOld.Loss)) > 1e-9 {
		t.Fatalf("objective %v, want %v", rMix.Objective, rNew.Loss+w*rOld.Loss)
	}
	worst := 0.0
	for i := range gMix {
		for j := range gMix[i] {
			want := float64(gNew[i][j]) + w*float64(gOld[i][j])
			worst = math.Max(worst, math.Abs(float64(gMix[i][j])-want))
		}
	}
	if worst > 1e-6 {
		t.Fatalf("mixed gradient differs from new + %v replay by %g", w, worst)
	}
	gZero, _ := gradsOf([]model.Batch{fresh}, []model.Batch{old}, 0)
	for i := range gZero {
		for j := range gZero[i] {
			if gZero[i][j] != gNew[i][j] {
				t.Fatalf("weight 0: gradient %s[%d] %v, new data alone %v", tr.names[i], j, gZero[i][j], gNew[i][j])
			}
		}
	}
	if _, err := tr.TrainStepReplay([]model.Batch{fresh}, []model.Batch{old}, -1, nil, 0); err == nil {
		t.Fatal("a negative replay weight was accepted")
	}
}

// encode returns the ids of s, with the tokenizer's special tokens.
func encode(t *testing.T, tok *tokenizer.Tokenizer, s string) []int32 {
	t.Helper()
	ids, err := tok.Encode(s, true)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]int32, len(ids))
	for i, id := range ids {
		out[i] = int32(id)
	}
	return out
}

// oneRow is a batch of one row: ids, each labelled with the next id.
func oneRow(t *testing.T, ids []int32) model.Batch {
	t.Helper()
	labels := make([]int32, len(ids))
	for i := range ids {
		labels[i] = model.IgnoreIndex
		if i+1 < len(ids) {
			labels[i] = ids[i+1]
		}
	}
	it, err := tensor.FromI32(ids, 1, len(ids))
	if err != nil {
		t.Fatal(err)
	}
	lt, err := tensor.FromI32(labels, 1, len(ids))
	if err != nil {
		t.Fatal(err)
	}
	return model.Batch{IDs: it, Labels: lt}
}

// The Fisher estimate equals the PyTorch reference's mean of squared
// per-row gradients, computed independently with autograd in float64.
func TestFisherMatchesReference(t *testing.T) {
	py := referencePython(t)
	m, modelDir, adapterDir := ewcModel(t)
	tok := loadTok(t, modelDir)
	texts := []string{
		"the quick brown fox jumps over the lazy dog",
		"all human beings are born free and equal in dignity",
		"x",
		"rights and freedoms without distinction of any kind, such as race or colour",
	}
	var batches []model.Batch
	maxLen := 0
	for _, s := range texts {
		ids := encode(t, tok, s)
		batches = append(batches, oneRow(t, ids))
		maxLen = max(maxLen, len(ids))
	}
	got, err := EstimateFisher(m, batches, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The reference takes one padded grid; padding is ignored (-100) and
	// comes after each row's tokens, so causal attention leaves the real
	// positions unchanged.
	ids, labels := make([][]int32, len(batches)), make([][]int32, len(batches))
	for i, b := range batches {
		ids[i] = append([]int32(nil), b.IDs.I32()...)
		labels[i] = append([]int32(nil), b.Labels.I32()...)
		for len(ids[i]) < maxLen {
			ids[i] = append(ids[i], 0)
			labels[i] = append(labels[i], model.IgnoreIndex)
		}
	}
	work := t.TempDir()
	in, out := filepath.Join(work, "in.json"), filepath.Join(work, "fisher.safetensors")
	writeJSON(t, in, map[string]any{"input_ids": ids, "labels": labels})
	cmd := exec.Command(py, "../tools/reference/reference.py", "fisher", "--model", modelDir, "--adapter", adapterDir,
		"--input", in, "--output", out, "--float64", "--threads", "1")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("reference: %v\n%s", err, b)
	}
	ref, err := safetensors.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer ref.Close()
	names := FisherNames(m)
	if len(ref.Names()) != len(names) || len(got) != len(names) {
		t.Fatalf("reference has %d tensors, compass %d, the adapter %d parameters", len(ref.Names()), len(got), len(names))
	}
	worst := 0.0
	for _, name := range names {
		peft := "base_model.model." + name
		want, err := ref.Tensor(peft)
		if err != nil {
			t.Fatal(err)
		}
		w, g := want.ToF32(), got[name].F32()
		scale := 0.0
		for _, v := range w {
			scale = math.Max(scale, math.Abs(float64(v)))
		}
		if scale == 0 {
			t.Fatalf("%s: the reference's Fisher is zero", name)
		}
		for j := range w {
			worst = math.Max(worst, math.Abs(float64(g[j])-float64(w[j]))/scale)
		}
	}
	t.Logf("Fisher over %d examples: worst difference %.2g of each tensor's largest value", len(texts), worst)
	if worst > 1e-4 {
		t.Fatalf("Fisher differs from the reference by %.3g of the largest value (allowed 1e-4)", worst)
	}
}
