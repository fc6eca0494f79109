package model

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/compassml/compass/lora"
	"github.com/compassml/compass/tensor"
	"github.com/compassml/compass/tensor/safetensors"
)

// The parity tests compare compass with tools/reference/reference.py, an
// independent PyTorch implementation of the three families and of PEFT's
// LoRA. They need Debian's python3-torch (CI installs it); COMPASS_PYTHON
// names another interpreter with torch.

func referencePython(t *testing.T) string {
	t.Helper()
	py := os.Getenv("COMPASS_PYTHON")
	if py == "" {
		py = "/usr/bin/python3"
	}
	if out, err := exec.Command(py, "-c", "import torch").CombinedOutput(); err != nil {
		t.Fatalf("the PyTorch reference needs %s with torch (apt-get install python3-torch, or set COMPASS_PYTHON): %v\n%s", py, err, out)
	}
	return py
}

func runReference(t *testing.T, args ...string) {
	t.Helper()
	py := referencePython(t)
	cmd := exec.Command(py, append([]string{filepath.Join("..", "tools", "reference", "reference.py")}, args...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("reference.py %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// referenceForward runs the reference on b and returns its output tensors.
func referenceForward(t *testing.T, modelDir, adapterDir string, b Batch, extra ...string) map[string][]float32 {
	t.Helper()
	dir := t.TempDir()
	B, T := b.IDs.Dim(0), b.IDs.Dim(1)
	ids, labels := make([][]int32, B), make([][]int32, B)
	for i := range B {
		ids[i] = b.IDs.I32()[i*T : (i+1)*T]
		labels[i] = b.Labels.I32()[i*T : (i+1)*T]
	}
	in, _ := json.Marshal(map[string]any{"input_ids": ids, "labels": labels})
	inPath, outPath := filepath.Join(dir, "in.json"), filepath.Join(dir, "out.safetensors")
	if err := os.WriteFile(inPath, in, 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"forward", "--model", modelDir, "--input", inPath, "--output", outPath}
	if adapterDir != "" {
		args = append(args, "--adapter", adapterDir)
	}
	runReference(t, append(args, extra...)...)
	f, err := safetensors.Open(outPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string][]float32{}
	for _, name := range f.Names() {
		x, err := f.Tensor(name)
		if err != nil {
			t.Fatal(err)
		}
		out[name] = x.ToF32()
	}
	return out
}

// closeRel fails when got and want differ by more than tol relative to the
// largest magnitude of want (so that near-zero entries do not dominate).
func closeRel(t *testing.T, what string, got, want []float32, tol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, reference has %d", what, len(got), len(want))
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
		t.Errorf("%s: element %d: %v, reference %v (max |diff| %.3g > %.3g of scale %.3g)", what, at, got[at], want[at], worst, tol*scale, scale)
	}
}

// allTargets are every linear module of a family, as PEFT names them.
func allTargets(c *Config) string {
	var names []string
	for _, p := range c.Projections() {
		names = append(names, p.Name[strings.LastIndex(p.Name, ".")+1:])
	}
	return strings.Join(names, ",")
}

// For every variant: a PEFT adapter written by the reference loads, and
// compass gives the reference's logits, loss, per-token log-probabilities
// and LoRA gradients; the adapter compass saves gives the same logits in
// the reference; and merged logits match the reference's merged model.
func TestParityWithPyTorch(t *testing.T) {
	for i, v := range tinyVariants {
		t.Run(v.name, func(t *testing.T) {
			m, dir := tinyModel(t, v.config, uint64(100+i))
			adapterDir := filepath.Join(t.TempDir(), "adapter")
			rslora := []string{}
			if i%2 == 1 {
				rslora = []string{"--rslora"}
			}
			runReference(t, append([]string{"make-adapter", "--model", dir, "--output", adapterDir, "--rank", "4", "--alpha", "8",
				"--targets", allTargets(m.Config), "--seed", fmt.Sprint(i), "--b-std", "0.2"}, rslora...)...)
			a, err := lora.Load(adapterDir, m.LinearModules())
			if err != nil {
				t.Fatal(err)
			}
			if err := m.AttachAdapter(a); err != nil {
				t.Fatal(err)
			}
			b := randomBatch(m.Config.VocabSize, 2, v.seqLen, uint64(200+i))
			ref := referenceForward(t, dir, adapterDir, b)

			logits, err := m.Logits(b.IDs)
			if err != nil {
				t.Fatal(err)
			}
			closeRel(t, "logits", logits.F32(), ref["logits"], 1e-4)
			out, err := m.ForwardBackward(b)
			if err != nil {
				t.Fatal(err)
			}
			if d := math.Abs(out.Loss - float64(ref["loss"][0])); d > 1e-5*math.Abs(out.Loss) {
				t.Errorf("loss %.7f, reference %.7f", out.Loss, ref["loss"][0])
			}
			closeRel(t, "logprobs", out.LogProbs.F32(), ref["logprobs"], 1e-5)
			grads := 0
			for module, g := range m.LoRAGrads() {
				nameA, nameB := lora.TensorNames(module)
				for k, name := range []string{nameA, nameB} {
					want, ok := ref[name]
					if !ok {
						t.Fatalf("reference has no gradient %s", name)
					}
					closeRel(t, "grad "+name, g[k].F32(), want, 1e-3)
					grads++
				}
			}
			if grads != 2*len(m.LinearModules()) {
				t.Errorf("compared %d gradients, want %d", grads, 2*len(m.LinearModules()))
			}

			// Our adapter, saved, loads in the reference with the same logits.
			ours := filepath.Join(t.TempDir(), "ours")
			if err := a.Save(ours); err != nil {
				t.Fatal(err)
			}
			closeRel(t, "logits with compass's saved adapter", logits.F32(), referenceForward(t, dir, ours, b)["logits"], 1e-4)

			// Merged, in both implementations.
			merged := referenceForward(t, dir, adapterDir, b, "--merge")
			if err := m.MergeLoRA(); err != nil {
				t.Fatal(err)
			}
			mergedLogits, err := m.Logits(b.IDs)
			if err != nil {
				t.Fatal(err)
			}
			closeRel(t, "merged logits", mergedLogits.F32(), merged["logits"], 1e-4)
		})
	}
}

// A tiny bf16 checkpoint: compass keeps the weights in bf16 and computes in
// float32; the reference upcasts the same bf16 values to float32. The two
// must agree as closely as the float32 case.
func TestParityBF16Weights(t *testing.T) {
	dir := t.TempDir()
	cfg, err := WriteRandomCheckpoint(dir, []byte(tinyVariants[0].config), tensor.BF16, 7)
	if err != nil {
		t.Fatal(err)
	}
	m, err := Load(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if m.embed.DType() != tensor.BF16 {
		t.Fatalf("weights loaded as %s, want BF16 kept", m.embed.DType())
	}
	b := randomBatch(cfg.VocabSize, 1, 8, 8)
	ref := referenceForward(t, dir, "", b, "--dtype", "float32")
	logits, err := m.Logits(b.IDs)
	if err != nil {
		t.Fatal(err)
	}
	closeRel(t, "logits", logits.F32(), ref["logits"], 1e-4)
}
