package model

import (
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/compassml/compass/tensor"
	"github.com/compassml/compass/tensor/safetensors"
)

// lossAt evaluates the loss with every LoRA parameter set to p0 + h*u.
func lossAt(t *testing.T, m *Model, b Batch, p0, u map[*loraSlot][2][]float32, h float64) float64 {
	t.Helper()
	for _, s := range m.slots {
		for k, dst := range [][]float32{s.a.F32(), s.b.F32()} {
			for i := range dst {
				dst[i] = float32(float64(p0[s][k][i]) + h*float64(u[s][k][i]))
			}
		}
	}
	out, err := m.Forward(b)
	if err != nil {
		t.Fatal(err)
	}
	return out.Loss
}

// The LoRA gradients of the whole model agree with central finite
// differences of its loss along random directions (a directional derivative
// sums every gradient entry, so a wrong entry anywhere shows), and along
// single coordinates of each adapter.
func TestLoRAGradientsFiniteDifferences(t *testing.T) {
	for _, v := range tinyVariants {
		t.Run(v.name, func(t *testing.T) {
			m, _ := tinyModel(t, v.config, 1)
			randomLoRA(t, m, 3, 2)
			b := randomBatch(m.Config.VocabSize, 2, v.seqLen, 3)
			if _, err := m.ForwardBackward(b); err != nil {
				t.Fatal(err)
			}
			grads := map[*loraSlot][2][]float32{}
			p0 := map[*loraSlot][2][]float32{}
			for _, s := range m.slots {
				grads[s] = [2][]float32{append([]float32(nil), s.da.F32()...), append([]float32(nil), s.db.F32()...)}
				p0[s] = [2][]float32{append([]float32(nil), s.a.F32()...), append([]float32(nil), s.b.F32()...)}
			}
			rng := rand.New(rand.NewPCG(4, 5))
			const h = 1e-2 // float32 forward: a larger step keeps rounding noise below the truncation error
			for trial := 0; trial < 3; trial++ {
				u := map[*loraSlot][2][]float32{}
				dot := 0.0
				for _, s := range m.slots {
					var dirs [2][]float32
					for k := range dirs {
						dirs[k] = make([]float32, len(p0[s][k]))
						for i := range dirs[k] {
							dirs[k][i] = float32(rng.NormFloat64())
							dot += float64(dirs[k][i]) * float64(grads[s][k][i])
						}
					}
					u[s] = dirs
				}
				norm := 0.0
				for _, d := range u {
					for _, x := range append(append([]float32(nil), d[0]...), d[1]...) {
						norm += float64(x) * float64(x)
					}
				}
				step := h / math.Sqrt(norm)
				fd := (lossAt(t, m, b, p0, u, step) - lossAt(t, m, b, p0, u, -step)) / (2 * step)
				if math.Abs(fd-dot) > 1e-2*math.Abs(fd)+1e-4 {
					t.Errorf("direction %d: analytic %.6g, finite difference %.6g", trial, dot, fd)
				}
			}
			// One coordinate of A and of B in the first and last adapters.
			for _, s := range []*loraSlot{m.slots[0], m.slots[len(m.slots)-1]} {
				for k := range 2 {
					u := map[*loraSlot][2][]float32{}
					for _, s2 := range m.slots {
						u[s2] = [2][]float32{make([]float32, len(p0[s2][0])), make([]float32, len(p0[s2][1]))}
					}
					i := rng.IntN(len(p0[s][k]))
					u[s][k][i] = 1
					fd := (lossAt(t, m, b, p0, u, 1e-2) - lossAt(t, m, b, p0, u, -1e-2)) / 2e-2
					g := float64(grads[s][k][i])
					if math.Abs(fd-g) > 2e-2*math.Abs(fd)+2e-4 {
						t.Errorf("%s %s[%d]: analytic %.6g, finite difference %.6g", s.module, []string{"A", "B"}[k], i, g, fd)
					}
				}
			}
		})
	}
}

// Recomputation changes memory, not results: the same loss and gradients.
func TestRecomputeGivesSameGradients(t *testing.T) {
	for _, v := range tinyVariants[:4] {
		m, _ := tinyModel(t, v.config, 11)
		randomLoRA(t, m, 2, 12)
		b := randomBatch(m.Config.VocabSize, 3, v.seqLen, 13)
		run := func(recompute bool) (float64, map[string][2][]float32) {
			if err := m.ZeroLoRAGrads(); err != nil {
				t.Fatal(err)
			}
			m.Recompute = recompute
			out, err := m.ForwardBackward(b)
			if err != nil {
				t.Fatal(err)
			}
			g := map[string][2][]float32{}
			for name, d := range m.LoRAGrads() {
				g[name] = [2][]float32{append([]float32(nil), d[0].F32()...), append([]float32(nil), d[1].F32()...)}
			}
			return out.Loss, g
		}
		l1, g1 := run(false)
		l2, g2 := run(true)
		if l1 != l2 {
			t.Errorf("%s: loss %v vs %v with recompute", v.name, l1, l2)
		}
		for name := range g1 {
			for k := range 2 {
				for i := range g1[name][k] {
					if g1[name][k][i] != g2[name][k][i] {
						t.Fatalf("%s: %s grad %d differs with recompute", v.name, name, i)
					}
				}
			}
		}
	}
}

// The vocabulary chunk of the fused loss changes nothing but memory.
func TestLossChunkDoesNotChangeLoss(t *testing.T) {
	m, _ := tinyModel(t, tinyVariants[0].config, 21)
	b := randomBatch(m.Config.VocabSize, 2, 6, 22)
	var losses []float64
	for _, chunk := range []int{0, 1, 7, 61, 1000} {
		m.LossChunk = chunk
		out, err := m.Forward(b)
		if err != nil {
			t.Fatal(err)
		}
		losses = append(losses, out.Loss)
	}
	for i, l := range losses {
		if math.Abs(l-losses[0]) > 1e-5*math.Abs(losses[0]) {
			t.Errorf("chunk case %d: loss %v, want %v", i, l, losses[0])
		}
	}
	// And the loss is the mean of -logprob, which Logits reproduces.
	logits, err := m.Logits(b.IDs)
	if err != nil {
		t.Fatal(err)
	}
	V := m.Config.VocabSize
	sum, n := 0.0, 0
	for i, label := range b.Labels.I32() {
		if label == IgnoreIndex {
			continue
		}
		row := logits.F32()[i*V : (i+1)*V]
		mx := math.Inf(-1)
		for _, z := range row {
			mx = math.Max(mx, float64(z))
		}
		se := 0.0
		for _, z := range row {
			se += math.Exp(float64(z) - mx)
		}
		sum += mx + math.Log(se) - float64(row[label])
		n++
	}
	if want := sum / float64(n); math.Abs(losses[0]-want) > 1e-5*want {
		t.Errorf("loss %v, from logits %v", losses[0], want)
	}
}

// Merging the adapters into the weights gives the logits of the adapted model.
func TestMergeMatchesUnmerged(t *testing.T) {
	for _, v := range tinyVariants {
		m, dir := tinyModel(t, v.config, 31)
		randomLoRA(t, m, 4, 32)
		b := randomBatch(m.Config.VocabSize, 1, v.seqLen, 33)
		before, err := m.Logits(b.IDs)
		if err != nil {
			t.Fatal(err)
		}
		if err := m.MergeLoRA(); err != nil {
			t.Fatal(err)
		}
		after, err := m.Logits(b.IDs)
		if err != nil {
			t.Fatal(err)
		}
		maxAbs := 0.0
		for _, x := range before.F32() {
			maxAbs = math.Max(maxAbs, math.Abs(float64(x)))
		}
		for i := range before.F32() {
			if d := math.Abs(float64(before.F32()[i] - after.F32()[i])); d > 1e-4*maxAbs {
				t.Fatalf("%s: logit %d: %v unmerged, %v merged", v.name, i, before.F32()[i], after.F32()[i])
			}
		}
		// The checkpoint on disk is untouched by the merge.
		m2, err := Load(dir, nil)
		if err != nil {
			t.Fatal(err)
		}
		plain, err := m2.Logits(b.IDs)
		m2.Close()
		if err != nil {
			t.Fatal(err)
		}
		same := true
		for i := range plain.F32() {
			if plain.F32()[i] != after.F32()[i] {
				same = false
			}
		}
		if same {
			t.Errorf("%s: merged logits equal the base model's: the adapter did nothing", v.name)
		}
	}
}

func TestLoadErrors(t *testing.T) {
	_, dir := tinyModel(t, tinyVariants[0].config, 41)
	// Rewrite the checkpoint with one tensor missing and one mis-shaped.
	f, err := safetensors.Open(filepath.Join(dir, "model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	var entries []safetensors.Entry
	for _, name := range f.Names() {
		info, _ := f.Info(name)
		data, _ := f.Bytes(name)
		data = append([]byte(nil), data...)
		switch name {
		case "model.layers.1.mlp.up_proj.weight":
			continue
		case "model.layers.0.self_attn.k_proj.weight":
			info.Shape = []int{info.Shape[1], info.Shape[0]}
		}
		entries = append(entries, safetensors.Entry{Name: name, DType: info.DType, Shape: info.Shape, Data: data})
	}
	f.Close()
	for _, c := range []struct {
		drop, want string
	}{
		{"model.layers.1.mlp.up_proj.weight", "model.layers.0.self_attn.k_proj.weight: shape [32 16] != [16 32]"},
		{"", "model.layers.1.mlp.up_proj.weight"},
	} {
		var es []safetensors.Entry
		for _, e := range entries {
			if c.drop == "" && e.Name == "model.layers.0.self_attn.k_proj.weight" {
				e.Shape = []int{e.Shape[1], e.Shape[0]}
			}
			es = append(es, e)
		}
		if err := safetensors.Write(filepath.Join(dir, "model.safetensors"), es, nil); err != nil {
			t.Fatal(err)
		}
		_, err := Load(dir, nil)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("err = %v, want it to mention %q", err, c.want)
		}
	}
	if _, err := Load(t.TempDir(), nil); err == nil {
		t.Error("empty directory: no error")
	}
	os.Remove(filepath.Join(dir, "model.safetensors"))
	if _, err := Load(dir, nil); err == nil {
		t.Error("no weights: no error")
	}
}

func TestForwardInputErrors(t *testing.T) {
	m, _ := tinyModel(t, tinyVariants[0].config, 51)
	b := randomBatch(m.Config.VocabSize, 1, 4, 52)
	bad := func(ids, labels []int32) Batch {
		i, _ := tensor.FromI32(ids, 1, len(ids))
		l, _ := tensor.FromI32(labels, 1, len(labels))
		return Batch{IDs: i, Labels: l}
	}
	for name, batch := range map[string]Batch{
		"id out of range":  bad([]int32{1, 2, 61, 3}, []int32{2, 61, 3, -100}),
		"negative id":      bad([]int32{1, -2}, []int32{-2, -100}),
		"all ignored":      bad([]int32{1, 2}, []int32{-100, -100}),
		"label too large":  bad([]int32{1, 2}, []int32{99, -100}),
		"labels mismatch":  {IDs: b.IDs, Labels: tensor.New(tensor.I32, 1, 3)},
		"float ids":        {IDs: tensor.New(tensor.F32, 1, 4), Labels: b.Labels},
		"no labels at all": {IDs: b.IDs},
	} {
		if _, err := m.Forward(batch); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if _, err := m.ForwardBackward(b); err == nil || !strings.Contains(err.Error(), "no LoRA") {
		t.Errorf("ForwardBackward without adapters: %v", err)
	}
}

// LastHidden is what the logits are computed from: logits = h lm_head^T.
func TestLastHiddenGivesLogits(t *testing.T) {
	m, _ := tinyModel(t, tinyVariants[2].config, 61)
	b := randomBatch(m.Config.VocabSize, 2, 5, 62)
	h, err := m.LastHidden(b.IDs)
	if err != nil {
		t.Fatal(err)
	}
	logits, err := m.Logits(b.IDs)
	if err != nil {
		t.Fatal(err)
	}
	want := tensor.New(tensor.F32, 2, 5, m.Config.VocabSize)
	if err := tensor.NewCPU().MatMul(want, h, m.lmHead, false, true, 1, 0); err != nil {
		t.Fatal(err)
	}
	for i, v := range want.F32() {
		if v != logits.F32()[i] {
			t.Fatalf("logit %d: %v from LastHidden, %v from Logits", i, v, logits.F32()[i])
		}
	}
}
