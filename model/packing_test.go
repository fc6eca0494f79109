package model

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/compassml/compass/tensor"
)

// packDoc is one document of a packed batch: its ids and labels.
type packDoc struct{ ids, labels []int32 }

// packDocs returns random documents of the given lengths, row after row,
// and the packed batch holding them. Labels are the next token within the
// document, a few ignored; the last token's label is a random token, so
// that every document, even of one token, has a counted label and can be
// scored alone.
func packDocs(t *testing.T, vocab int, docLens [][]int, seed uint64) ([]packDoc, Batch) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 11))
	var docs []packDoc
	var ids, labels []int32
	for _, lens := range docLens {
		for _, n := range lens {
			d := packDoc{ids: make([]int32, n), labels: make([]int32, n)}
			for i := range d.ids {
				d.ids[i] = int32(rng.IntN(vocab))
			}
			for i := range d.labels {
				switch {
				case i == n-1:
					d.labels[i] = int32(rng.IntN(vocab))
				case rng.IntN(5) == 0:
					d.labels[i] = IgnoreIndex
				default:
					d.labels[i] = d.ids[i+1]
				}
			}
			docs = append(docs, d)
			ids, labels = append(ids, d.ids...), append(labels, d.labels...)
		}
	}
	B := len(docLens)
	idT, err := tensor.FromI32(ids, B, len(ids)/B)
	if err != nil {
		t.Fatal(err)
	}
	labT, err := tensor.FromI32(labels, B, len(ids)/B)
	if err != nil {
		t.Fatal(err)
	}
	return docs, Batch{IDs: idT, Labels: labT, DocLens: docLens}
}

// docBatch is one document alone, as a batch of one row.
func docBatch(t *testing.T, d packDoc) Batch {
	t.Helper()
	ids, err := tensor.FromI32(d.ids, 1, len(d.ids))
	if err != nil {
		t.Fatal(err)
	}
	labels, err := tensor.FromI32(d.labels, 1, len(d.labels))
	if err != nil {
		t.Fatal(err)
	}
	return Batch{IDs: ids, Labels: labels}
}

// loraGrads returns a copy of the model's LoRA gradients by module.
func loraGrads(m *Model) map[string][2][]float32 {
	g := map[string][2][]float32{}
	for name, d := range m.LoRAGrads() {
		g[name] = [2][]float32{append([]float32(nil), d[0].F32()...), append([]float32(nil), d[1].F32()...)}
	}
	return g
}

// A batch whose rows pack several documents gives every document the
// log-probs it gets alone, the loss of all of them together, and the LoRA
// gradients of that loss: the sum over documents of each one's gradient
// (of its own mean loss) weighted by its share of the counted tokens.
// Documents of one token, rows of one document, GQA, every RoPE type; for
// Phi-3, documents no longer than longrope's original context in rows that
// are longer (the short factors, chosen from the positions in the
// documents) and documents all longer than it (the long factors); and rows
// of 150 tokens, across the CPU attention's query blocks.
func TestPackedDocumentsMatchSeparate(t *testing.T) {
	for _, c := range []struct {
		variant int // in tinyVariants
		docLens [][]int
	}{
		{0, [][]int{{3, 1, 8}, {5, 7}}},
		{1, [][]int{{4, 7}, {11}}},
		{2, [][]int{{2, 6}, {1, 1, 6}}},
		{3, [][]int{{12, 8}, {7, 13}}},
		{4, [][]int{{17, 19}, {36}}},
		{5, [][]int{{5, 1, 64, 80}, {150}}},
	} {
		v := tinyVariants[c.variant]
		t.Run(fmt.Sprintf("%s %v", v.name, c.docLens), func(t *testing.T) {
			m, _ := tinyModel(t, v.config, 71)
			randomLoRA(t, m, 3, 72)
			docs, packed := packDocs(t, m.Config.VocabSize, c.docLens, 73)

			if err := m.ZeroLoRAGrads(); err != nil {
				t.Fatal(err)
			}
			out, err := m.ForwardBackward(packed)
			if err != nil {
				t.Fatal(err)
			}
			gotGrads := loraGrads(m)

			// Recomputing the activations in the backward rebuilds the same
			// attention over the same documents.
			if err := m.ZeroLoRAGrads(); err != nil {
				t.Fatal(err)
			}
			m.Recompute = true
			if _, err := m.ForwardBackward(packed); err != nil {
				t.Fatal(err)
			}
			m.Recompute = false
			for name, g := range loraGrads(m) {
				for k := range 2 {
					for j, x := range g[k] {
						if x != gotGrads[name][k][j] {
							t.Fatalf("%s: gradient %d differs with Recompute", name, j)
						}
					}
				}
			}

			wantGrads := map[string][2][]float32{}
			for name, g := range gotGrads {
				wantGrads[name] = [2][]float32{make([]float32, len(g[0])), make([]float32, len(g[1]))}
			}
			lossSum, tokens, worstLP := 0.0, 0, 0.0
			T, lp := packed.IDs.Dim(1), out.LogProbs.F32()
			at := 0 // the document's first token in the packed batch
			for i, d := range docs {
				if err := m.ZeroLoRAGrads(); err != nil {
					t.Fatal(err)
				}
				alone, err := m.ForwardBackward(docBatch(t, d))
				if err != nil {
					t.Fatal(err)
				}
				for j, want := range alone.LogProbs.F32() {
					got := lp[at+j]
					e := math.Abs(float64(got-want)) / math.Max(1, math.Abs(float64(want)))
					worstLP = math.Max(worstLP, e)
					if e > 1e-5 {
						t.Fatalf("document %d (row %d, position %d): log-prob %v packed, %v alone", i, (at+j)/T, (at+j)%T, got, want)
					}
				}
				lossSum += alone.Loss * float64(alone.Tokens)
				tokens += alone.Tokens
				share := float32(alone.Tokens) / float32(out.Tokens)
				for name, g := range loraGrads(m) {
					for k := range 2 {
						for j, x := range g[k] {
							wantGrads[name][k][j] += share * x
						}
					}
				}
				at += len(d.ids)
			}
			if tokens != out.Tokens {
				t.Fatalf("%d counted tokens packed, %d alone", out.Tokens, tokens)
			}
			if want := lossSum / float64(tokens); math.Abs(out.Loss-want) > 1e-6*want {
				t.Errorf("loss %v packed, %v from the documents alone", out.Loss, want)
			}
			worst := 0.0
			for name, want := range wantGrads {
				for k := range 2 {
					scale, diff := 0.0, 0.0
					for j, w := range want[k] {
						scale = math.Max(scale, math.Abs(float64(w)))
						diff = math.Max(diff, math.Abs(float64(gotGrads[name][k][j]-w)))
					}
					if scale == 0 {
						t.Fatalf("%s %s: zero gradient", name, []string{"A", "B"}[k])
					}
					if diff > 1e-4*scale {
						t.Errorf("%s %s: packed gradient differs from the documents' by %.3g of its scale", name, []string{"A", "B"}[k], diff/scale)
					}
					worst = math.Max(worst, diff/scale)
				}
			}
			t.Logf("largest differences: log-prob %.3g, gradient %.3g of the scale", worstLP, worst)
		})
	}
}

// Longrope chooses its factors from the largest position + 1 over the whole
// batch, as HF does from position_ids: a 2-token document packed with an
// 18-token one (longer than the original context of 16) gets the long
// factors, so its second log-prob is not the one it gets alone (short
// factors), while the long document's are.
func TestPackedLongRopeFactorsFollowTheBatch(t *testing.T) {
	m, _ := tinyModel(t, phi3Tiny, 81)
	docs, packed := packDocs(t, m.Config.VocabSize, [][]int{{18, 2}}, 82)
	out, err := m.Forward(packed)
	if err != nil {
		t.Fatal(err)
	}
	lp := out.LogProbs.F32()
	long, err := m.Forward(docBatch(t, docs[0]))
	if err != nil {
		t.Fatal(err)
	}
	for j, want := range long.LogProbs.F32() {
		if math.Abs(float64(lp[j]-want)) > 1e-5*math.Max(1, math.Abs(float64(want))) {
			t.Fatalf("18-token document, position %d: log-prob %v packed, %v alone", j, lp[j], want)
		}
	}
	short, err := m.Forward(docBatch(t, docs[1]))
	if err != nil {
		t.Fatal(err)
	}
	// Position 0 does not rotate; position 1 does, by other frequencies.
	if got, alone := lp[18], short.LogProbs.F32()[0]; math.Abs(float64(got-alone)) > 1e-5*math.Max(1, math.Abs(float64(alone))) {
		t.Errorf("2-token document, position 0: log-prob %v packed, %v alone", got, alone)
	}
	if got, alone := lp[19], short.LogProbs.F32()[1]; got == alone {
		t.Errorf("2-token document, position 1: log-prob %v packed and alone: the batch's long factors were not used", got)
	}
}

// DocLens of one document per row is plain causal attention: the same
// results, bit for bit, as no DocLens.
func TestDocLensOnePerRowIsPlain(t *testing.T) {
	m, _ := tinyModel(t, tinyVariants[0].config, 91)
	b := randomBatch(m.Config.VocabSize, 2, 7, 92)
	plain, err := m.Forward(b)
	if err != nil {
		t.Fatal(err)
	}
	b.DocLens = [][]int{{7}, {7}}
	one, err := m.Forward(b)
	if err != nil {
		t.Fatal(err)
	}
	for i, x := range plain.LogProbs.F32() {
		if one.LogProbs.F32()[i] != x {
			t.Fatalf("log-prob %d: %v without DocLens, %v with one document per row", i, x, one.LogProbs.F32()[i])
		}
	}
}

func TestDocLensErrors(t *testing.T) {
	m, _ := tinyModel(t, tinyVariants[0].config, 95)
	b := randomBatch(m.Config.VocabSize, 2, 5, 96)
	for _, c := range []struct {
		docLens [][]int
		want    string
	}{
		{[][]int{{5}}, "DocLens has 1 rows, the batch 2"},
		{[][]int{{5}, {2, 0, 3}}, "DocLens[1][1] is 0"},
		{[][]int{{5}, {-1, 6}}, "DocLens[1][0] is -1"},
		{[][]int{{2, 2}, {5}}, "DocLens[0] [2 2] sums to 4 tokens, the row has 5"},
		{[][]int{{5}, {3, 3}}, "DocLens[1] [3 3] holds more than the row's 5 tokens"},
		{[][]int{{5}, {}}, "DocLens[1] [] sums to 0 tokens"},
	} {
		b.DocLens = c.docLens
		_, err := m.Forward(b)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("DocLens %v: error %v, want one saying %q", c.docLens, err, c.want)
		}
	}
}
