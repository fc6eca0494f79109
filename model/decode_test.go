package model

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/compassml/compass/tensor"
)

// argmaxRow is the index of the largest value of row b of logits [B, V].
func argmaxRow(logits *tensor.Tensor, b int) int {
	V := logits.Dim(1)
	row := logits.F32()[b*V : (b+1)*V]
	best := 0
	for i, x := range row {
		if x > row[best] {
			best = i
		}
	}
	return best
}

// recomputeLast runs the whole sequences, right-padded into one batch, and
// returns the logits [B, V] of each one's last token.
func recomputeLast(t *testing.T, m *Model, seqs [][]int) *tensor.Tensor {
	t.Helper()
	T := 0
	for _, s := range seqs {
		T = max(T, len(s))
	}
	ids := make([]int32, len(seqs)*T)
	for b, s := range seqs {
		for i, id := range s {
			ids[b*T+i] = int32(id)
		}
	}
	idT, _ := tensor.FromI32(ids, len(seqs), T)
	logits, err := m.Logits(idT)
	if err != nil {
		t.Fatal(err)
	}
	V := m.Config.VocabSize
	out := tensor.New(tensor.F32, len(seqs), V)
	for b, s := range seqs {
		copy(out.F32()[b*V:(b+1)*V], logits.F32()[(b*T+len(s)-1)*V:(b*T+len(s))*V])
	}
	return out
}

// checkCachedGreedy decodes greedily with the cache and, at every step,
// checks the logits and the chosen tokens against a recomputation of the
// whole sequences. Request stopAfter[b] >= 0 sits out from that step on.
func checkCachedGreedy(t *testing.T, m *Model, prompts [][]int, steps int, stopAfter []int) {
	t.Helper()
	B := len(prompts)
	maxLen := 0
	seqs := make([][]int, B)
	for b, p := range prompts {
		seqs[b] = append([]int(nil), p...)
		maxLen = max(maxLen, len(p)+steps)
	}
	c, err := m.NewKVCache(B, maxLen, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	logits, err := m.Prefill(c, prompts)
	if err != nil {
		t.Fatal(err)
	}
	worst := 0.0
	for step := 0; ; step++ {
		want := recomputeLast(t, m, seqs)
		next := make([]int, B)
		for b := range B {
			next[b] = -1
			if stopAfter != nil && stopAfter[b] >= 0 && step >= stopAfter[b] {
				continue
			}
			V := m.Config.VocabSize
			for i := range V {
				d := math.Abs(float64(logits.F32()[b*V+i] - want.F32()[b*V+i]))
				worst = max(worst, d)
				if d > 1e-4 {
					t.Fatalf("step %d request %d: logit %d cached %v, recomputed %v", step, b, i, logits.F32()[b*V+i], want.F32()[b*V+i])
				}
			}
			got, exp := argmaxRow(logits, b), argmaxRow(want, b)
			if got != exp {
				t.Fatalf("step %d request %d: cached decoding chose %d, recomputation %d", step, b, got, exp)
			}
			next[b] = got
		}
		if step == steps {
			break
		}
		for b, id := range next {
			if id >= 0 {
				seqs[b] = append(seqs[b], id)
			}
		}
		if logits, err = m.Decode(c, next); err != nil {
			t.Fatal(err)
		}
		for b := range B {
			if c.Len(b) != len(seqs[b]) {
				t.Fatalf("step %d: request %d has %d cached tokens, want %d", step, b, c.Len(b), len(seqs[b]))
			}
		}
	}
	t.Logf("largest logit difference %.3g", worst)
}

func randomPrompts(vocab int, lens []int, seed uint64) [][]int {
	rng := rand.New(rand.NewPCG(seed, 3))
	out := make([][]int, len(lens))
	for b, n := range lens {
		for range n {
			out[b] = append(out[b], rng.IntN(vocab))
		}
	}
	return out
}

// TestDecodeMatchesRecompute: greedy decoding with the KV cache, a batch of
// prompts of different lengths, gives the logits and tokens of running the
// whole sequence again at every step, for every variant (GQA, biases,
// llama3 rope, Phi-3's fused projections, partial rotary and longrope, whose
// prompts of up to 12 tokens cross the original context of 16 while
// decoding and so switch to the long factors).
func TestDecodeMatchesRecompute(t *testing.T) {
	for i, v := range tinyVariants {
		if v.seqLen > 100 {
			continue
		}
		t.Run(v.name, func(t *testing.T) {
			m, _ := tinyModel(t, v.config, uint64(40+i))
			prompts := randomPrompts(m.Config.VocabSize, []int{v.seqLen, 1, v.seqLen / 2, 3}, uint64(i))
			checkCachedGreedy(t, m, prompts, 9, []int{-1, 4, -1, 0})
		})
	}
}

// TestDecodeLongPrompt: prompts longer than one prefill chunk (32 positions
// here), one ending exactly at a chunk's end, and one whose last token is
// the first of a chunk.
func TestDecodeLongPrompt(t *testing.T) {
	defer func(n int) { prefillTokens = n }(prefillTokens)
	prefillTokens = 64 // two requests: chunks of 32 positions
	m, _ := tinyModel(t, tinyVariants[5].config, 11)
	for _, lens := range [][]int{{150, 64}, {150, 33}} {
		prompts := randomPrompts(m.Config.VocabSize, lens, 5)
		checkCachedGreedy(t, m, prompts, 4, nil)
	}
}

// TestDecodeWithAdapter: adapters attached unmerged take part in the cached
// decode as in the full forward.
func TestDecodeWithAdapter(t *testing.T) {
	for _, i := range []int{0, 3} {
		v := tinyVariants[i]
		t.Run(v.name, func(t *testing.T) {
			m, _ := tinyModel(t, v.config, 7)
			randomLoRA(t, m, 4, 8)
			prompts := randomPrompts(m.Config.VocabSize, []int{5, 9, 2}, 9)
			checkCachedGreedy(t, m, prompts, 6, nil)
		})
	}
}

func TestDecodeBadInput(t *testing.T) {
	m, _ := tinyModel(t, tinyVariants[0].config, 1)
	c, err := m.NewKVCache(2, 4, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for name, prompts := range map[string][][]int{
		"count":      {{1}},
		"empty":      {{1}, {}},
		"too long":   {{1}, {1, 2, 3, 4, 5}},
		"bad token":  {{1}, {1000}},
		"negative":   {{-1}, {1}},
		"vocab size": {{1}, {m.Config.VocabSize}},
	} {
		if _, err := m.Prefill(c, prompts); err == nil {
			t.Errorf("%s: Prefill accepted %v", name, prompts)
		}
	}
	if _, err := m.Decode(c, []int{1, 2}); err == nil {
		t.Error("Decode before Prefill accepted")
	}
	if _, err := m.Prefill(c, [][]int{{1, 2, 3}, {1}}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Decode(c, []int{1, 2}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Decode(c, []int{1, -1}); err == nil {
		t.Error("Decode past the cache's length accepted")
	}
	if _, err := m.Decode(c, []int{-1, 1000}); err == nil {
		t.Error("Decode of a token outside the vocabulary accepted")
	}
	if _, err := m.Decode(c, []int{-1, m.Config.VocabSize}); err == nil {
		t.Errorf("Decode of token %d, the vocabulary's size, accepted", m.Config.VocabSize)
	}
	if _, err := m.NewKVCache(0, 4, 0); err == nil {
		t.Error("NewKVCache of no requests accepted")
	}
}
