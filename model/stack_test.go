package model

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/compassml/compass/tensor"
)

// attachSome attaches random adapters to the modules whose names end in
// one of suffixes, with a rank per module name (so that stacked A have
// rows of several ranks), and returns them.
func attachSome(t *testing.T, m *Model, suffixes []string, seed uint64) map[string]LoRAWeights {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 11))
	adapters := map[string]LoRAWeights{}
	for _, lm := range m.LinearModules() {
		r := 0
		for i, s := range suffixes {
			if strings.HasSuffix(lm.Name, s) {
				r = 1 + (i+len(lm.Name))%4
			}
		}
		if r == 0 {
			continue
		}
		a, b := tensor.New(tensor.F32, r, lm.In), tensor.New(tensor.F32, lm.Out, r)
		for _, x := range [][]float32{a.F32(), b.F32()} {
			for i := range x {
				x[i] = float32(rng.NormFloat64()) * 0.3
			}
		}
		adapters[lm.Name] = LoRAWeights{A: a, B: b, Scaling: 1.5}
	}
	if err := m.AttachLoRA(adapters); err != nil {
		t.Fatal(err)
	}
	return adapters
}

// groupCount is the number of loraGroups on m.
func groupCount(m *Model) int {
	seen := map[*loraGroup]bool{}
	for _, s := range m.slots {
		if s.group != nil {
			seen[s.group] = true
		}
	}
	return len(seen)
}

// Adapters stacked by shared input (loraGroup) train as they do one by
// one: the same loss and gradients (to float32 summation order without
// dropout; exactly with it, where the stacked path is not taken), groups
// formed only where two or more separate modules share an input, the
// stacked A holding the given values, gradients accumulating over passes,
// and no tensor read before it is written (the stacked model runs with
// PoisonEmpty).
func TestStackedAdaptersMatchSeparate(t *testing.T) {
	targets := []struct {
		name     string
		suffixes []string
		groups   int // per layer, for separate q/k/v and gate/up
	}{
		{"all-linear", []string{"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}, 2},
		{"q-v-up", []string{"q_proj", "v_proj", "up_proj"}, 1},
		{"k-gate", []string{"k_proj", "gate_proj", "qkv_proj"}, 0},
	}
	for _, v := range tinyVariants[:4] {
		for _, tg := range targets {
			t.Run(v.name+"/"+tg.name, func(t *testing.T) {
				_, dir := tinyModel(t, v.config, 1)
				stacked, err := Load(dir, &tensor.CPU{PoisonEmpty: true})
				if err != nil {
					t.Fatal(err)
				}
				defer stacked.Close()
				separate, err := Load(dir, nil)
				if err != nil {
					t.Fatal(err)
				}
				defer separate.Close()
				given := attachSome(t, stacked, tg.suffixes, 2)
				attachSome(t, separate, tg.suffixes, 2)
				for _, s := range separate.slots {
					s.group = nil
				}
				want := tg.groups * stacked.Config.NumHiddenLayers
				if stacked.Config.Architecture == "Phi3ForCausalLM" {
					want = 0 // fused qkv_proj and gate_up_proj: one module each
				}
				if got := groupCount(stacked); got != want {
					t.Fatalf("%d loraGroups, want %d", got, want)
				}
				for name, p := range stacked.LoRAParams() {
					for i, x := range p[0].F32() {
						if x != given[name].A.F32()[i] {
							t.Fatalf("%s: A[%d] = %v, given %v", name, i, x, given[name].A.F32()[i])
						}
					}
				}
				b := randomBatch(stacked.Config.VocabSize, 2, v.seqLen, 3)
				for _, p := range []float32{0, 0.25} {
					stacked.LoRADropout, separate.LoRADropout = p, p
					// Twice: the second step checks that ZeroLoRAGrads clears
					// the stacked gradients.
					for range 2 {
						l1, g1 := trainStep(t, stacked, b)
						l2, g2 := trainStep(t, separate, b)
						if p > 0 {
							if l1 != l2 {
								t.Fatalf("dropout %v: loss %v, one by one %v", p, l1, l2)
							}
							if d := sameGrads(g1, g2); d != "" {
								t.Fatalf("dropout %v: %s", p, d)
							}
							continue
						}
						if math.Abs(l1-l2) > 1e-6*math.Abs(l2) {
							t.Fatalf("loss %v, one by one %v", l1, l2)
						}
						worst := 0.0
						for name := range g2 {
							for k := range 2 {
								scale := 0.0
								for _, x := range g2[name][k] {
									scale = max(scale, math.Abs(float64(x)))
								}
								for i, x := range g2[name][k] {
									worst = max(worst, math.Abs(float64(g1[name][k][i]-x))/scale)
								}
							}
						}
						if !(worst <= 1e-5) {
							t.Fatalf("gradients differ by %.3g of their largest entry", worst)
						}
						// A second pass without zeroing adds the same again.
						if _, err := stacked.ForwardBackward(b); err != nil {
							t.Fatal(err)
						}
						for name, d := range stacked.LoRAGrads() {
							for k := range 2 {
								for i, x := range d[k].F32() {
									if x != 2*g1[name][k][i] {
										t.Fatalf("%s: accumulated %v, want 2 x %v", name, x, g1[name][k][i])
									}
								}
							}
						}
					}
				}
			})
		}
	}
}
