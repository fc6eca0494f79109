package main

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/compassml/compass/lora"
	"github.com/compassml/compass/model"
	"github.com/compassml/compass/tensor"
	"github.com/compassml/compass/tensor/safetensors"
)

// goldens are the logits, log-probabilities, loss and LoRA gradients that
// Hugging Face transformers + PEFT computed for these fixtures on the device
// machine (scripts/hf_goldens.py; the library versions are in the file's
// metadata). The fixtures are regenerated here from the same seeds.
const goldens = "../../testdata/hf/goldens.safetensors"

// Tolerances of compass's CPU forward and backward against HF's, relative
// to the largest reference value: the float32 variants run the same math
// in another order; the bf16 checkpoint's weights are the same bf16 values
// and both compute in float32 from them.
const (
	tolLogits = 1e-4
	tolGrads  = 1e-3
)

// TestHFGoldens checks compass against HF transformers + PEFT themselves,
// for every variant the goldens hold.
func TestHFGoldens(t *testing.T) {
	g, err := safetensors.Open(goldens)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	meta := g.Metadata()
	t.Logf("goldens: transformers %s, peft %s, torch %s", meta["transformers"], meta["peft"], meta["torch"])
	checked := 0
	for i, v := range variants {
		if _, ok := g.Info(v.name + "/loss"); !ok {
			// The goldens predate this variant or its run failed there; say
			// which, so that a missing variant is visible in the log.
			t.Logf("%s: not in the goldens (failed there: %q)", v.name, meta["failed"])
			continue
		}
		t.Run(v.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), v.name)
			if err := write(dir, v.config, v.dtype, v.seqLen, uint64(100+i)); err != nil {
				t.Fatal(err)
			}
			checkVariant(t, g, v.name, dir)
		})
		checked++
	}
	if checked < 4 {
		t.Errorf("only %d variants have goldens; want at least the 4 llama and qwen2 ones", checked)
	}
}

func checkVariant(t *testing.T, g *safetensors.File, name, dir string) {
	m, err := model.Load(filepath.Join(dir, "model"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	a, err := lora.Load(filepath.Join(dir, "adapter"), m.LinearModules())
	if err != nil {
		t.Fatal(err)
	}
	if err := m.AttachAdapter(a); err != nil {
		t.Fatal(err)
	}
	b := readInputs(t, filepath.Join(dir, "inputs.json"))
	want := func(key string) []float32 {
		x, err := g.Tensor(name + "/" + key)
		if err != nil {
			t.Fatal(err)
		}
		return x.ToF32()
	}
	logits, err := m.Logits(b.IDs)
	if err != nil {
		t.Fatal(err)
	}
	closeRel(t, "logits", logits.F32(), want("logits"), tolLogits)
	out, err := m.ForwardBackward(b)
	if err != nil {
		t.Fatal(err)
	}
	if ref := float64(want("loss")[0]); math.Abs(out.Loss-ref) > 1e-5*math.Abs(ref) {
		t.Errorf("loss %.7f, HF %.7f", out.Loss, ref)
	}
	closeRel(t, "logprobs", out.LogProbs.F32(), want("logprobs"), 1e-5)
	grads := 0
	for module, gr := range m.LoRAGrads() {
		nameA, nameB := lora.TensorNames(module)
		for k, pn := range []string{nameA, nameB} {
			closeRel(t, "grad "+pn, gr[k].F32(), want("grad/"+pn), tolGrads)
			grads++
		}
	}
	inGoldens := 0
	for _, n := range g.Names() {
		if strings.HasPrefix(n, name+"/grad/") {
			inGoldens++
		}
	}
	if grads != inGoldens {
		t.Errorf("compass has %d LoRA gradients, HF %d", grads, inGoldens)
	}
}

func readInputs(t *testing.T, path string) model.Batch {
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var in struct {
		IDs    [][]int32 `json:"input_ids"`
		Labels [][]int32 `json:"labels"`
	}
	if err := json.Unmarshal(data, &in); err != nil {
		t.Fatal(err)
	}
	B, T := len(in.IDs), len(in.IDs[0])
	var ids, labels []int32
	for b := range in.IDs {
		ids = append(ids, in.IDs[b]...)
		labels = append(labels, in.Labels[b]...)
	}
	it, err := tensor.FromI32(ids, B, T)
	if err != nil {
		t.Fatal(err)
	}
	lt, err := tensor.FromI32(labels, B, T)
	if err != nil {
		t.Fatal(err)
	}
	return model.Batch{IDs: it, Labels: lt}
}

// closeRel fails when the largest difference exceeds tol times the largest
// reference value; it logs the ratio either way, so that the margin shows.
func closeRel(t *testing.T, what string, got, want []float32, tol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, HF has %d", what, len(got), len(want))
	}
	scale := 0.0
	for _, w := range want {
		scale = math.Max(scale, math.Abs(float64(w)))
	}
	worst, at := 0.0, 0
	for i := range got {
		if d := math.Abs(float64(got[i]) - float64(want[i])); d > worst || math.IsNaN(d) {
			worst, at = d, i
		}
	}
	if worst > tol*scale || math.IsNaN(worst) {
		t.Errorf("%s: element %d: %v, HF %v (max |diff| %.3g > %.3g of scale %.3g)", what, at, got[at], want[at], worst, tol*scale, scale)
	}
}
