package model

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/compassml/compass/tensor"
)

// trainStep zeroes the gradients, runs ForwardBackward and returns the loss
// and copies of the gradients by module.
func trainStep(t *testing.T, m *Model, b Batch) (float64, map[string][2][]float32) {
	t.Helper()
	if err := m.ZeroLoRAGrads(); err != nil {
		t.Fatal(err)
	}
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

// sameGrads reports the first gradient entry that differs, or "".
func sameGrads(a, b map[string][2][]float32) string {
	for name := range a {
		for k := range 2 {
			for i := range a[name][k] {
				if a[name][k][i] != b[name][k][i] {
					return fmt.Sprintf("%s %s[%d]: %v vs %v", name, []string{"dA", "dB"}[k], i, a[name][k][i], b[name][k][i])
				}
			}
		}
	}
	return ""
}

// With LoRADropout 0 the seed changes nothing and the training loss is the
// evaluation loss; with LoRADropout > 0 the training loss and gradients
// change, with the seed too, and Forward (evaluation) is unaffected.
func TestLoRADropoutOnlyWhenTraining(t *testing.T) {
	m, _ := tinyModel(t, tinyVariants[0].config, 71)
	randomLoRA(t, m, 3, 72)
	b := randomBatch(m.Config.VocabSize, 2, 9, 73)
	eval, err := m.Forward(b)
	if err != nil {
		t.Fatal(err)
	}

	m.DropoutSeed = 1
	l0, g0 := trainStep(t, m, b)
	m.DropoutSeed = 2
	l0b, g0b := trainStep(t, m, b)
	if l0 != eval.Loss || l0b != eval.Loss {
		t.Errorf("p = 0: training losses %v, %v; evaluation %v", l0, l0b, eval.Loss)
	}
	if d := sameGrads(g0, g0b); d != "" {
		t.Errorf("p = 0: the seed changed a gradient: %s", d)
	}

	m.LoRADropout = 0.3
	m.DropoutSeed = 1
	l1, g1 := trainStep(t, m, b)
	m.DropoutSeed = 2
	l2, _ := trainStep(t, m, b)
	if l1 == eval.Loss || l1 == l2 {
		t.Errorf("p = 0.3: losses %v (seed 1), %v (seed 2), evaluation %v: dropout did not act", l1, l2, eval.Loss)
	}
	if sameGrads(g0, g1) == "" {
		t.Errorf("p = 0.3: gradients equal those without dropout")
	}
	if out, err := m.Forward(b); err != nil || out.Loss != eval.Loss {
		t.Errorf("Forward with LoRADropout set: loss %v (%v), want %v", out.Loss, err, eval.Loss)
	}

	for _, p := range []float32{-0.1, 1, float32(math.NaN())} {
		m.LoRADropout = p
		if _, err := m.ForwardBackward(b); err == nil || !strings.Contains(err.Error(), "LoRADropout") {
			t.Errorf("LoRADropout %v: error %v", p, err)
		}
	}
}

// trainLossAt is lossAt for the training loss: ForwardBackward at the
// model's dropout seed, so with the same masks at every evaluation.
func trainLossAt(t *testing.T, m *Model, b Batch, p0, u map[*loraSlot][2][]float32, h float64) float64 {
	t.Helper()
	for _, s := range m.slots {
		for k, dst := range [][]float32{s.a.F32(), s.b.F32()} {
			for i := range dst {
				dst[i] = float32(float64(p0[s][k][i]) + h*float64(u[s][k][i]))
			}
		}
	}
	out, err := m.ForwardBackward(b)
	if err != nil {
		t.Fatal(err)
	}
	return out.Loss
}

// With dropout at a fixed seed the loss is a smooth function of the LoRA
// parameters, and its gradient is what ForwardBackward accumulates: checked
// by central finite differences along random directions (every entry
// counts) and along single coordinates of A and B of the first and last
// adapters. Separate q/k/v (three masks on one input) and Phi-3's fused
// qkv (one mask), tied and untied embeddings.
func TestLoRADropoutGradientsFiniteDifferences(t *testing.T) {
	for _, v := range []int{0, 2, 3} {
		v := tinyVariants[v]
		t.Run(v.name, func(t *testing.T) {
			m, _ := tinyModel(t, v.config, 81)
			randomLoRA(t, m, 3, 82)
			// Halved adapters: randomLoRA's, scaled up by 1/(1-p), make the
			// loss so curved along a direction of all parameters that the
			// finite differences' truncation error reaches 20% (phi3).
			for _, s := range m.slots {
				for _, w := range [][]float32{s.a.F32(), s.b.F32()} {
					for i := range w {
						w[i] *= 0.5
					}
				}
			}
			m.LoRADropout, m.DropoutSeed = 0.4, 83
			b := randomBatch(m.Config.VocabSize, 2, v.seqLen, 84)
			_, g := trainStep(t, m, b)
			grads, p0 := map[*loraSlot][2][]float32{}, map[*loraSlot][2][]float32{}
			for _, s := range m.slots {
				grads[s] = g[s.module]
				p0[s] = [2][]float32{append([]float32(nil), s.a.F32()...), append([]float32(nil), s.b.F32()...)}
			}
			rng := rand.New(rand.NewPCG(85, 86))
			const h = 1e-2 // float32 forward: rounding noise stays below the truncation error
			worst := 0.0
			for trial := 0; trial < 3; trial++ {
				u, dot, norm := map[*loraSlot][2][]float32{}, 0.0, 0.0
				for _, s := range m.slots {
					var dirs [2][]float32
					for k := range dirs {
						dirs[k] = make([]float32, len(p0[s][k]))
						for i := range dirs[k] {
							dirs[k][i] = float32(rng.NormFloat64())
							dot += float64(dirs[k][i]) * float64(grads[s][k][i])
							norm += float64(dirs[k][i]) * float64(dirs[k][i])
						}
					}
					u[s] = dirs
				}
				step := h / math.Sqrt(norm)
				fd := (trainLossAt(t, m, b, p0, u, step) - trainLossAt(t, m, b, p0, u, -step)) / (2 * step)
				err := math.Abs(fd-dot) / (math.Abs(fd) + 1e-2)
				worst = max(worst, err)
				if math.Abs(fd-dot) > 1e-2*math.Abs(fd)+1e-4 {
					t.Errorf("direction %d: analytic %.6g, finite difference %.6g", trial, dot, fd)
				}
			}
			for _, s := range []*loraSlot{m.slots[0], m.slots[len(m.slots)-1]} {
				for k := range 2 {
					u := map[*loraSlot][2][]float32{}
					for _, s2 := range m.slots {
						u[s2] = [2][]float32{make([]float32, len(p0[s2][0])), make([]float32, len(p0[s2][1]))}
					}
					i := rng.IntN(len(p0[s][k]))
					u[s][k][i] = 1
					fd := (trainLossAt(t, m, b, p0, u, h) - trainLossAt(t, m, b, p0, u, -h)) / (2 * h)
					g := float64(grads[s][k][i])
					worst = max(worst, math.Abs(fd-g)/(math.Abs(fd)+1e-2))
					if math.Abs(fd-g) > 2e-2*math.Abs(fd)+2e-4 {
						t.Errorf("%s %s[%d]: analytic %.6g, finite difference %.6g", s.module, []string{"A", "B"}[k], i, g, fd)
					}
				}
			}
			t.Logf("largest relative difference, analytic vs finite differences: %.2g", worst)
		})
	}
}

// Recomputing a layer in the backward recreates its masks: the same loss
// and gradients, bit for bit, with dropout on.
func TestLoRADropoutRecompute(t *testing.T) {
	for _, v := range tinyVariants[:4] {
		m, _ := tinyModel(t, v.config, 91)
		randomLoRA(t, m, 2, 92)
		m.LoRADropout, m.DropoutSeed = 0.25, 93
		b := randomBatch(m.Config.VocabSize, 3, v.seqLen, 94)
		m.Recompute = false
		l1, g1 := trainStep(t, m, b)
		m.Recompute = true
		l2, g2 := trainStep(t, m, b)
		if l1 != l2 {
			t.Errorf("%s: loss %v, %v with recompute", v.name, l1, l2)
		}
		if d := sameGrads(g1, g2); d != "" {
			t.Errorf("%s: recompute changed a gradient: %s", v.name, d)
		}
	}
}

// Every adapted module has its own mask seed (so q, k and v of a llama
// layer get three masks), which changes with DropoutSeed; Phi-3's fused
// q, k and v are one module, so one slot and one mask.
func TestLoRADropoutSeedsPerModule(t *testing.T) {
	for _, v := range []int{0, 3} {
		m, _ := tinyModel(t, tinyVariants[v].config, 95)
		randomLoRA(t, m, 2, 96)
		seen := map[uint64]string{}
		for _, seed := range []uint64{0, 1} {
			d := dropout{p: 0.1, seed: seed}
			for _, s := range m.slots {
				k := d.seedFor(s)
				if prev, ok := seen[k]; ok {
					t.Errorf("%s (seed %d) has the mask seed of %s", s.module, seed, prev)
				}
				seen[k] = fmt.Sprintf("%s (seed %d)", s.module, seed)
			}
		}
		l := &m.layers[0]
		if fused := l.q.slot == l.k.slot && l.k.slot == l.v.slot; fused != (m.Config.Family == FamilyPhi3) {
			t.Errorf("%s: q, k, v share a slot: %v", tinyVariants[v].name, fused)
		}
	}
}

// One adapted linear module, as linearForward computes it with dropout,
// against a reimplementation in float64 of PEFT's formula
// y = x W^T + b + scaling (mask x / (1-p)) A^T B^T, with the mask taken
// from the Dropout op (applied to ones).
func TestLoRADropoutLinearReimplementation(t *testing.T) {
	m, _ := tinyModel(t, tinyVariants[1].config, 101) // q/k/v biases
	randomLoRA(t, m, 3, 102)
	const p = 0.35
	l := &m.layers[1]
	lin, s := &l.k, l.k.slot
	N, in, out := 7, lin.w.Dim(1), lin.w.Dim(0)
	rng := rand.New(rand.NewPCG(103, 104))
	x := tensor.New(tensor.F32, N, in)
	for i := range x.F32() {
		x.F32()[i] = float32(rng.NormFloat64())
	}
	d := dropout{p: p, seed: 105}
	ar := &arena{be: m.be}
	defer ar.free()
	y := tensor.New(tensor.F32, N, out)
	if err := m.linearForward(ar, y, x, lin, &loraActs{xa: map[*loraSlot]*tensor.Tensor{}, drop: d}); err != nil {
		t.Fatal(err)
	}

	ones, mask := tensor.New(tensor.F32, N, in), tensor.New(tensor.F32, N, in)
	for i := range ones.F32() {
		ones.F32()[i] = 1
	}
	if err := m.be.Dropout(mask, ones, p, d.seedFor(s)); err != nil {
		t.Fatal(err)
	}
	dropped := 0
	for _, v := range mask.F32() {
		if v == 0 {
			dropped++
		}
	}
	if dropped == 0 || dropped == N*in {
		t.Fatalf("%d of %d dropped", dropped, N*in)
	}
	W, bias, A, B := lin.w.F32(), lin.b.F32(), s.a.F32(), s.b.F32()
	r := s.a.Dim(0)
	worst, scale := 0.0, 0.0
	for n := 0; n < N; n++ {
		xd := make([]float64, in) // mask x / (1-p)
		for k := range xd {
			if mask.F32()[n*in+k] != 0 {
				xd[k] = float64(x.F32()[n*in+k]) / (1 - p)
			}
		}
		xa := make([]float64, r)
		for j := range xa {
			for k := range xd {
				xa[j] += xd[k] * float64(A[j*in+k])
			}
		}
		for o := 0; o < out; o++ {
			want := float64(bias[o])
			for k := 0; k < in; k++ {
				want += float64(x.F32()[n*in+k]) * float64(W[o*in+k])
			}
			for j := range xa {
				want += float64(s.scaling) * xa[j] * float64(B[(lin.rows+o)*r+j])
			}
			scale = max(scale, math.Abs(want))
			worst = max(worst, math.Abs(float64(y.F32()[n*out+o])-want))
		}
	}
	if worst > 1e-5*scale {
		t.Errorf("largest difference %.3g (scale %.3g) from x W^T + b + scaling (mask x/(1-p)) A^T B^T", worst, scale)
	}
	t.Logf("%d of %d inputs dropped; largest difference %.2g relative to %.3g", dropped, N*in, worst/scale, scale)
}
