package engine

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/compassml/compass/internal/tinymodel"
	"github.com/compassml/compass/model"
	"github.com/compassml/compass/model/tokenizer"
	"github.com/compassml/compass/tensor"
)

// generateFixture loads tinymodel's byte-level llama with random weights.
func generateFixture(t *testing.T) (*model.Model, *tokenizer.Tokenizer, string) {
	t.Helper()
	dir := writeTinyByteModel(t, tinyByteLlama, 21)
	m, err := model.Load(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m, loadTok(t, dir), dir
}

func encodeAll(t *testing.T, tok *tokenizer.Tokenizer, texts ...string) [][]int {
	t.Helper()
	var out [][]int
	for _, s := range texts {
		ids, err := tok.Encode(s, false)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, ids)
	}
	return out
}

// greedyByRecompute continues a prompt by running the whole sequence
// through the model at every step and taking the argmax of the last
// position: what the KV cache must reproduce. A penalty other than 1
// divides the positive logits of the tokens in the sequence so far and
// multiplies the negative ones (HF's repetition penalty).
func greedyByRecompute(t *testing.T, m *model.Model, prompt []int, n int, penalty float32) []int {
	t.Helper()
	seq := slices.Clone(prompt)
	var out []int
	V := m.Config.VocabSize
	for range n {
		ids := make([]int32, len(seq))
		for i, id := range seq {
			ids[i] = int32(id)
		}
		idT, _ := tensor.FromI32(ids, 1, len(seq))
		logits, err := m.Logits(idT)
		if err != nil {
			t.Fatal(err)
		}
		row := slices.Clone(logits.F32()[(len(seq)-1)*V : len(seq)*V])
		seen := map[int]bool{}
		for _, id := range seq {
			if !seen[id] {
				seen[id] = true
				if row[id] < 0 {
					row[id] *= penalty
				} else {
					row[id] /= penalty
				}
			}
		}
		best := 0
		for i, x := range row {
			if x > row[best] {
				best = i
			}
		}
		out = append(out, best)
		seq = append(seq, best)
	}
	return out
}

func TestGenerateGreedyMatchesRecompute(t *testing.T) {
	m, tok, _ := generateFixture(t)
	prompts := encodeAll(t, tok, "All human beings", "Hi", "Kila mtu amezaliwa huru, hadhi na haki zake ni sawa.")
	res, err := Generate(m, tok, prompts, GenerateOptions{MaxTokens: 12}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range prompts {
		want := greedyByRecompute(t, m, p, 12, 1)
		if !slices.Equal(res[i].IDs, want) {
			t.Errorf("prompt %d: cached %v, recomputed %v", i, res[i].IDs, want)
		}
		if res[i].FinishReason != "length" {
			t.Errorf("prompt %d: finish reason %q, want length", i, res[i].FinishReason)
		}
		text, _ := decodeText(tok, want)
		if res[i].Text != text {
			t.Errorf("prompt %d: text %q, want %q", i, res[i].Text, text)
		}
	}
}

// With a repetition penalty, greedy decoding penalises the prompt's tokens
// and, from step to step, the tokens it generated.
func TestGenerateRepetitionPenaltyMatchesRecompute(t *testing.T) {
	m, tok, _ := generateFixture(t)
	prompts := encodeAll(t, tok, "All human beings", "Hi")
	const penalty = 1.5
	res, err := Generate(m, tok, prompts, GenerateOptions{MaxTokens: 16, RepetitionPenalty: penalty}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range prompts {
		if want := greedyByRecompute(t, m, p, 16, penalty); !slices.Equal(res[i].IDs, want) {
			t.Errorf("prompt %d, penalty %v: cached %v, recomputed %v", i, penalty, res[i].IDs, want)
		}
	}
}

// GenerateJSONL writes a record per prompt, a batch at a time, and stops
// before the next batch once its context is cancelled.
func TestGenerateJSONL(t *testing.T) {
	m, tok, _ := generateFixture(t)
	prompts := encodeAll(t, tok, "All human beings", "Hi", "Kila mtu")
	var out strings.Builder
	n, err := GenerateJSONL(context.Background(), m, tok, prompts, nil, GenerateOptions{MaxTokens: 3}, 2, &out)
	if err != nil || n != 3 || strings.Count(out.String(), "\n") != 3 || !strings.HasPrefix(out.String(), `{"line":1,`) {
		t.Fatalf("%d records, %v:\n%s", n, err, out.String())
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	out.Reset()
	if n, err := GenerateJSONL(ctx, m, tok, prompts, nil, GenerateOptions{MaxTokens: 3}, 2, &out); !errors.Is(err, context.Canceled) || n != 0 || out.Len() != 0 {
		t.Errorf("cancelled: %d records, %v, %q; want none and context.Canceled", n, err, out.String())
	}
}

func TestGenerateSamplingReproducibleBySeed(t *testing.T) {
	m, tok, _ := generateFixture(t)
	prompts := encodeAll(t, tok, "Everyone has the right", "Ok")
	opts := GenerateOptions{MaxTokens: 20, Temperature: 1.5, TopK: 100, TopP: 0.95, MinP: 0.01, RepetitionPenalty: 1.1, Seed: 3}
	a, err := Generate(m, tok, prompts, opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Generate(m, tok, prompts, opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	opts.Seed = 4
	c, err := Generate(m, tok, prompts, opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range prompts {
		if !slices.Equal(a[i].IDs, b[i].IDs) {
			t.Errorf("prompt %d: the same seed gave %v and %v", i, a[i].IDs, b[i].IDs)
		}
		if slices.Equal(a[i].IDs, c[i].IDs) {
			t.Errorf("prompt %d: seeds 3 and 4 gave the same %v", i, a[i].IDs)
		}
	}
	// Each request has a stream of its own: the same prompt twice in a
	// batch is continued in two ways.
	twice, err := Generate(m, tok, [][]int{prompts[0], prompts[0]}, opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	if slices.Equal(twice[0].IDs, twice[1].IDs) {
		t.Errorf("the same prompt twice in a batch: both continued with %v", twice[0].IDs)
	}
	// Request i's stream depends on the seed and i, not on the batch.
	one, err := Generate(m, tok, prompts[:1], GenerateOptions{MaxTokens: 20, Temperature: 1.5, TopK: 100, TopP: 0.95, MinP: 0.01, RepetitionPenalty: 1.1, Seed: 3}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(one[0].IDs, a[0].IDs) {
		t.Errorf("alone %v, in a batch %v", one[0].IDs, a[0].IDs)
	}
}

func logOf(ps ...float64) []float32 {
	out := make([]float32, len(ps))
	for i, p := range ps {
		out[i] = float32(math.Log(p))
	}
	return out
}

func finite(scores []float32) []int {
	var out []int
	for i, s := range scores {
		if !math.IsInf(float64(s), -1) {
			out = append(out, i)
		}
	}
	return out
}

func TestLogitsProcessors(t *testing.T) {
	s := []float32{2, -2, 1}
	repetitionPenalty(s, map[int]bool{0: true, 1: true}, 2)
	if !slices.Equal(s, []float32{1, -4, 1}) {
		t.Errorf("repetition penalty: %v, want [1 -4 1]", s)
	}

	s = []float32{1, 3, 2, 3}
	topK(s, 2)
	if got := finite(s); !slices.Equal(got, []int{1, 3}) {
		t.Errorf("top-2 kept %v, want [1 3]", got)
	}
	s = []float32{1, 3, 2, 3, 0}
	topK(s, 3)
	if got := finite(s); !slices.Equal(got, []int{1, 2, 3}) {
		t.Errorf("top-3 kept %v, want [1 2 3]", got)
	}

	// Probabilities 0.1..0.4: ascending cumulative 0.1, 0.3, 0.6, 1.0.
	for _, c := range []struct {
		p    float64
		keep []int
	}{{0.5, []int{2, 3}}, {0.3, []int{3}}, {0.95, []int{0, 1, 2, 3}}, {0.85, []int{1, 2, 3}}} {
		s = logOf(0.2, 0.1, 0.3, 0.4)
		s[0], s[1] = s[1], s[0] // unsorted input
		topP(s, c.p)
		if got := finite(s); !slices.Equal(got, c.keep) {
			t.Errorf("top-p %v kept %v, want %v", c.p, got, c.keep)
		}
	}

	s = logOf(0.1, 0.2, 0.3, 0.4)
	minP(s, 0.6) // threshold 0.24
	if got := finite(s); !slices.Equal(got, []int{2, 3}) {
		t.Errorf("min-p 0.6 kept %v, want [2 3]", got)
	}

	// Greedy applies the repetition penalty only.
	rng := rand.New(rand.NewPCG(1, 2))
	if id := pickToken([]float32{3, 2.5}, map[int]bool{0: true}, &GenerateOptions{RepetitionPenalty: 2, TopK: 1}, rng); id != 1 {
		t.Errorf("greedy with repetition penalty chose %d, want 1", id)
	}

	// Temperature comes before top-p: at T = 0.5 the probabilities are
	// 0.033, 0.133, 0.3, 0.533 and top-p 0.5 keeps only token 3 (at T = 1
	// it would keep 2 and 3).
	for range 200 {
		if id := pickToken(logOf(0.1, 0.2, 0.3, 0.4), nil, &GenerateOptions{Temperature: 0.5, TopP: 0.5}, rng); id != 3 {
			t.Fatalf("temperature 0.5 then top-p 0.5 sampled %d, want 3", id)
		}
	}
	// Top-k before top-p: top-2 leaves 0.3 and 0.4 (renormalised 3/7, 4/7);
	// top-p 0.5 then keeps only token 3.
	for range 200 {
		if id := pickToken(logOf(0.1, 0.2, 0.3, 0.4), nil, &GenerateOptions{Temperature: 1, TopK: 2, TopP: 0.5}, rng); id != 3 {
			t.Fatalf("top-k 2 then top-p 0.5 sampled %d, want 3", id)
		}
	}

	// Sampling follows the probabilities.
	counts := make([]int, 4)
	const n = 20000
	for range n {
		counts[sample(logOf(0.1, 0.2, 0.3, 0.4), rng)]++
	}
	for i, c := range counts {
		if f := float64(c) / n; math.Abs(f-0.1*float64(i+1)) > 0.015 {
			t.Errorf("token %d sampled with frequency %.3f, want %.1f", i, f, 0.1*float64(i+1))
		}
	}
}

// The processors at their edges: ties for the largest score, a cumulative
// probability that lands exactly on 1-p, a top-p so small that only the
// most likely token survives, and min-p 1, which keeps the top alone.
func TestLogitsProcessorEdges(t *testing.T) {
	if got := argmax([]float32{1, 3, 3, 2}); got != 1 {
		t.Errorf("argmax with a tie: %d, want the first, 1", got)
	}

	// Four equal probabilities: ascending cumulative 0.25, 0.5, 0.75, 1.
	// HF removes the tokens whose cumulative probability is <= 1-p = 0.5.
	s := []float32{0, 0, 0, 0}
	topP(s, 0.5)
	if got := finite(s); !slices.Equal(got, []int{2, 3}) {
		t.Errorf("top-p 0.5 of four equal scores kept %v, want [2 3]", got)
	}

	// 1-p rounds to 1, which no cumulative probability exceeds; the most
	// likely token is kept all the same.
	s = logOf(0.2, 0.1, 0.4, 0.3)
	topP(s, 1e-300)
	if got := finite(s); !slices.Equal(got, []int{2}) {
		t.Errorf("top-p 1e-300 kept %v, want [2]", got)
	}

	s = logOf(0.2, 0.1, 0.4, 0.3)
	minP(s, 1)
	if got := finite(s); !slices.Equal(got, []int{2}) {
		t.Errorf("min-p 1 kept %v, want [2]", got)
	}

	// Sampling with min-p 0.5 (threshold 0.4) only ever draws token 2.
	rng := rand.New(rand.NewPCG(5, 6))
	for range 200 {
		if id := pickToken(logOf(0.05, 0.15, 0.8), nil, &GenerateOptions{Temperature: 1, MinP: 0.5}, rng); id != 2 {
			t.Fatalf("min-p 0.5 sampled %d, want 2", id)
		}
	}
	// A temperature so small that float32 scores divided by it overflow
	// (or that float32 cannot hold) still samples the likeliest token: a
	// temperature near 0 is greedy.
	for _, temp := range []float64{1e-30, 1e-39, 1e-50, 1e-320} {
		if id := pickToken([]float32{0.5, 3, 1, -2}, nil, &GenerateOptions{Temperature: temp}, rng); id != 1 {
			t.Errorf("temperature %g sampled %d, want the argmax, 1", temp, id)
		}
	}
}

// firstStop finds the earliest stop string in the text, whatever their
// order in the list.
func TestFirstStop(t *testing.T) {
	for _, c := range []struct {
		text  string
		stops []string
		cut   int
		found bool
	}{
		{"hello world", []string{"o", "world"}, 4, true},
		{"hello world", []string{"world", "o"}, 4, true},
		{"hello world", []string{"xyz"}, 11, false},
		{"hello world", nil, 11, false},
	} {
		cut, found := firstStop(c.text, c.stops)
		if cut != c.cut || found != c.found {
			t.Errorf("firstStop(%q, %q) = %d, %v; want %d, %v", c.text, c.stops, cut, found, c.cut, c.found)
		}
	}
}

func TestSafeEnd(t *testing.T) {
	for _, c := range []struct {
		text  string
		stops []string
		want  int
	}{
		{"abc", nil, 3},
		{"abc\uFFFD", nil, 3},
		{"hello wor", []string{"world"}, 6},
		{"hello world", []string{"xyz", "ld!"}, 9},
		{"hel", []string{"lox", "llox"}, 2},
		{"hell", []string{"lox", "llox"}, 2},
		{"hell", []string{"hello"}, 0},
	} {
		if got := safeEnd(c.text, c.stops); got != c.want {
			t.Errorf("safeEnd(%q, %q) = %d, want %d", c.text, c.stops, got, c.want)
		}
	}
}

// asciiPair returns a position i where tokens i and i+1 are printable ASCII
// bytes (the byte vocabulary's ids 32..126).
func asciiPair(t *testing.T, ids []int) int {
	t.Helper()
	for i := 2; i+1 < len(ids); i++ {
		if ids[i] >= 33 && ids[i] < 127 && ids[i+1] >= 33 && ids[i+1] < 127 {
			return i
		}
	}
	t.Fatalf("no two printable ASCII tokens in a row in %v", ids)
	return 0
}

func TestGenerateStops(t *testing.T) {
	m, tok, _ := generateFixture(t)
	prompts := encodeAll(t, tok, "Tous les êtres humains", "abc abc", "No one shall be held")
	free, err := Generate(m, tok, prompts, GenerateOptions{MaxTokens: 40}, nil)
	if err != nil {
		t.Fatal(err)
	}

	// End token: request 0 stops before the token it would emit 4th.
	end := free[0].IDs[3]
	first := slices.Index(free[0].IDs, end)
	res, err := Generate(m, tok, prompts, GenerateOptions{MaxTokens: 40, StopIDs: []int{end}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res[0].IDs, free[0].IDs[:first]) || res[0].FinishReason != "stop" {
		t.Errorf("end token %d: %v (%s), want %v (stop)", end, res[0].IDs, res[0].FinishReason, free[0].IDs[:first])
	}
	for i := 1; i < len(prompts); i++ {
		k := slices.Index(free[i].IDs, end)
		want := free[i].IDs
		if k >= 0 {
			want = want[:k]
		}
		if !slices.Equal(res[i].IDs, want) {
			t.Errorf("request %d with end token %d: %v, want %v", i, end, res[i].IDs, want)
		}
	}

	// Stop string: two ASCII tokens of request 2's free continuation.
	k := asciiPair(t, free[2].IDs)
	stop, _ := tok.Decode(free[2].IDs[k:k+2], true)
	pieces := make([]string, len(prompts))
	res, err = Generate(m, tok, prompts, GenerateOptions{MaxTokens: 40, Stop: []string{"\x00never", stop}},
		func(i int, piece string) { pieces[i] += piece })
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		cut := strings.Index(free[i].Text, stop)
		wantText, wantReason := free[i].Text, "length"
		if cut >= 0 {
			wantText, wantReason = free[i].Text[:cut], "stop"
		}
		if r.Text != wantText || r.FinishReason != wantReason {
			t.Errorf("request %d, stop %q: %q (%s), want %q (%s)", i, stop, r.Text, r.FinishReason, wantText, wantReason)
		}
		if pieces[i] != r.Text {
			t.Errorf("request %d: streamed %q, result %q", i, pieces[i], r.Text)
		}
		text, _ := decodeText(tok, r.IDs)
		if !strings.HasPrefix(r.Text, text) || !slices.Equal(r.IDs, free[i].IDs[:len(r.IDs)]) {
			t.Errorf("request %d: ids %v (%q) are not a prefix of the text %q", i, r.IDs, text, r.Text)
		}
	}
	if res[2].FinishReason != "stop" || len(res[2].IDs) > k {
		t.Errorf("request 2: %v (%s), want at most %d tokens and stop", res[2].IDs, res[2].FinishReason, k)
	}

	// A stop string in the first token's text: no token, no text.
	at := slices.IndexFunc(free, func(r GenerateResult) bool { return r.IDs[0] >= 33 && r.IDs[0] < 127 })
	if at < 0 {
		t.Fatalf("no continuation starts with a printable ASCII token: %v", free)
	}
	stop, _ = tok.Decode(free[at].IDs[:1], true)
	res, err = Generate(m, tok, prompts[at:at+1], GenerateOptions{MaxTokens: 40, Stop: []string{stop}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(res[0].IDs) != 0 || res[0].Text != "" || res[0].FinishReason != "stop" {
		t.Errorf("request %d, stop %q at the first token: %v %q (%s), want [] \"\" (stop)", at, stop, res[0].IDs, res[0].Text, res[0].FinishReason)
	}
}

func TestGenerateBadInput(t *testing.T) {
	m, tok, _ := generateFixture(t)
	p := [][]int{{1, 2}}
	for name, o := range map[string]GenerateOptions{
		"no tokens":        {},
		"temperature":      {MaxTokens: 1, Temperature: -1},
		"top-p":            {MaxTokens: 1, TopP: 1.5},
		"top-k":            {MaxTokens: 1, TopK: -1},
		"min-p":            {MaxTokens: 1, MinP: math.NaN()},
		"penalty":          {MaxTokens: 1, RepetitionPenalty: -2},
		"empty stop":       {MaxTokens: 1, Stop: []string{""}},
		"stop without tok": {MaxTokens: 1, Stop: []string{"x"}},
	} {
		tk := tok
		if name == "stop without tok" {
			tk = nil
		}
		if _, err := Generate(m, tk, p, o, nil); err == nil {
			t.Errorf("%s: accepted %+v", name, o)
		}
	}
	long := make([]int, 300) // max_position_embeddings is 256
	for name, prompts := range map[string][][]int{"empty": {{}}, "too long": {long}, "no room": {make([]int, 256)}, "bad id": {{1, 9999}}} {
		if _, err := Generate(m, tok, prompts, GenerateOptions{MaxTokens: 2}, nil); err == nil {
			t.Errorf("%s prompt accepted", name)
		}
	}
	// Near the model's length limit, generation stops there.
	res, err := Generate(m, tok, [][]int{make([]int, 250)}, GenerateOptions{MaxTokens: 50}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(res[0].IDs) != 6 || res[0].FinishReason != "length" {
		t.Errorf("at the length limit: %d tokens (%s), want 6 (length)", len(res[0].IDs), res[0].FinishReason)
	}
}

func TestEndTokens(t *testing.T) {
	dir := t.TempDir()
	if err := tinymodel.WriteTokenizer(dir); err != nil {
		t.Fatal(err)
	}
	tok := loadTok(t, dir)
	write := func(name, content string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	check := func(want []int) {
		t.Helper()
		got, err := EndTokens(dir, tok)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, want) {
			t.Errorf("end tokens %v, want %v", got, want)
		}
	}
	// tokenizer_config.json's eos_token is <|eos|> = 256.
	check([]int{tinymodel.EOS})
	write("config.json", `{"eos_token_id": 7}`)
	check([]int{7, tinymodel.EOS})
	write("generation_config.json", `{"eos_token_id": [9, 256, 8]}`)
	check([]int{9, 256, 8})
	write("generation_config.json", `{"eos_token_id": null}`)
	check([]int{7, tinymodel.EOS})
	write("tokenizer_config.json", `{"eos_token": {"content": "<|bos|>"}}`)
	check([]int{7, tinymodel.BOS})
	write("generation_config.json", `{"eos_token_id": "x"}`)
	if _, err := EndTokens(dir, tok); err == nil {
		t.Error("a string eos_token_id accepted")
	}
}
