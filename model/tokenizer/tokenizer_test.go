package tokenizer

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// The Split patterns of the three families, as their tokenizer.json files
// write them.
const (
	llama3Pattern = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
	qwen2Pattern  = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
	o200kPattern  = `[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+`
)

// whiteSpace is \s as Oniguruma (and Go's unicode.IsSpace) define it, for
// Go's regexp, whose \s is ASCII only.
const whiteSpace = `\t\n\v\f\r \x{85}\x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000}`

// goRegexp translates a pattern without lookahead into Go's regexp syntax,
// which has the same leftmost-first semantics.
func goRegexp(t *testing.T, pat string) *regexp.Regexp {
	t.Helper()
	pat = strings.ReplaceAll(pat, `[^\s`, `[^`+whiteSpace)
	pat = strings.ReplaceAll(pat, `\s`, `[`+whiteSpace+`]`)
	return regexp.MustCompile(pat)
}

// randomText draws runes from a pool that exercises every branch of the
// patterns: letters of each case, marks, digits, spaces, newlines,
// apostrophes, punctuation, emoji.
func randomText(r *rand.Rand, n int) string {
	pool := []rune("aZsStT'’ ſǅʰé\u0301\u0308 \t\r\n\u00a0\u3000\u2028xyz019٣ⅫПриветمرحبا中文日本語한국🙂👩\u200d💻.,!?/-_\"<>|{}$")
	var b strings.Builder
	for range n {
		b.WriteRune(pool[r.IntN(len(pool))])
	}
	return b.String()
}

// scan returns the pieces the Isolated split of pat makes of s.
func scan(p *pattern, s string) []string {
	var out []string
	gap := 0
	for pos := 0; pos < len(s); {
		end := p.matchAt(s, pos)
		if end < 0 {
			_, size := utf8.DecodeRuneInString(s[pos:])
			pos += size
			continue
		}
		if gap < pos {
			out = append(out, s[gap:pos])
		}
		out = append(out, s[pos:end])
		pos, gap = end, end
	}
	if gap < len(s) {
		out = append(out, s[gap:])
	}
	return out
}

// TestPatternMatchesGoRegexp compares the scanner with Go's regexp on the
// three families' patterns less their lookahead alternative, on random text.
// (The lookahead itself is covered by the parity goldens.)
func TestPatternMatchesGoRegexp(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, pat := range []string{llama3Pattern, qwen2Pattern, o200kPattern} {
		noLookahead := strings.Replace(pat, `|\s+(?!\S)`, "", 1)
		p, err := compilePattern(noLookahead)
		if err != nil {
			t.Fatal(err)
		}
		re := goRegexp(t, noLookahead)
		for range 3000 {
			s := randomText(r, r.IntN(40))
			var want []string
			last := 0
			for _, m := range re.FindAllStringIndex(s, -1) {
				if last < m[0] {
					want = append(want, s[last:m[0]])
				}
				want = append(want, s[m[0]:m[1]])
				last = m[1]
			}
			if last < len(s) {
				want = append(want, s[last:])
			}
			if got := scan(p, s); !slices.Equal(got, want) {
				t.Fatalf("pattern %.30q on %q:\n got %q\nwant %q", pat, s, got, want)
			}
		}
	}
}

func TestPatternLookahead(t *testing.T) {
	p, err := compilePattern(llama3Pattern)
	if err != nil {
		t.Fatal(err)
	}
	for s, want := range map[string][]string{
		"a   b":      {"a", "  ", " b"},
		"a   ":       {"a", "   "},
		"x\n\n  y":   {"x", "\n\n", " ", " y"},
		"I'M 123456": {"I", "'M", " ", "123", "456"},
		"'ſt":        {"'ſ", "t"},
	} {
		if got := scan(p, s); !slices.Equal(got, want) {
			t.Errorf("%q: got %q, want %q", s, got, want)
		}
	}
}

func TestPatternErrors(t *testing.T) {
	for _, pat := range []string{
		`a|`, `(?=x)a`, `[a-z]+`, `\d+`, `.+`, `x*?`, `x++`, `(a)`, `\p{Greek}`, `(?i:a+)`, `\s*`, `a{2,1}`,
		`[abc`, `(?:ab`, `a)`, `\`, `\q`, `(?!ab)c`, `(?i:a)+`, `[[a]]`,
	} {
		if _, err := compilePattern(pat); err == nil {
			t.Errorf("%q: no error", pat)
		}
	}
	for _, pat := range []string{`\s+(?!\S)|\p{L}{2,}|(?:ab|c)?d|[\/\-]`, gpt2Pattern} {
		if _, err := compilePattern(pat); err != nil {
			t.Errorf("supported pattern: %v", err)
		}
	}
}

// TestFixturePatterns: the fixtures' Split patterns are the ones the tests
// above exercise.
func TestFixturePatterns(t *testing.T) {
	for name, want := range map[string]string{"llama3_1": llama3Pattern, "qwen3": qwen2Pattern, "gpt4o": o200kPattern} {
		tok := fixture(t, name)
		if len(tok.splits) != 1 || tok.splits[0].pat.source != want {
			t.Errorf("%s: split patterns %+v", name, tok.splits)
		}
	}
}

// TestRoundTrip: decoding the encoding of valid UTF-8 gives the text back
// (its NFC form for Qwen, whose normalizer is NFC).
func TestRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	texts := []string{}
	for _, l := range readCorpus(t) {
		texts = append(texts, l.Text)
	}
	for range 300 {
		texts = append(texts, randomText(r, r.IntN(200)))
	}
	for _, name := range []string{"llama3_1", "qwen3", "gpt4o"} {
		tok := fixture(t, name)
		for _, s := range texts {
			checkRoundTrip(t, tok, s)
		}
	}
}

func checkRoundTrip(t *testing.T, tok *Tokenizer, s string) {
	t.Helper()
	ids, err := tok.Encode(s, false)
	if err != nil {
		t.Fatalf("%q: %v", s, err)
	}
	got, err := tok.Decode(ids, false)
	if err != nil {
		t.Fatal(err)
	}
	want := s
	if tok.nfc {
		want = norm.NFC.String(s)
	}
	if got != want {
		t.Fatalf("%s: decode(encode(%q)) = %q", tok.path, s, got)
	}
}

// FuzzRoundTrip: valid UTF-8 round-trips, invalid UTF-8 is an error, and
// nothing panics. The seeds run with every `go test`.
func FuzzRoundTrip(f *testing.F) {
	for _, s := range []string{"", " ", "Hello, world!", "  \n\n\t x", "I'M HERE'S", "e\u0301\u0323",
		"<|begin_of_text|><|im_start|>x<|endoftext|>", "👨‍👩‍👧‍👦🇫🇷", "12345678", "\xff\xfe", "a\xe4b", "\xed\xa0\x80",
		strings.Repeat("ab", 100), strings.Repeat(" ", 70) + "x"} {
		f.Add(s)
	}
	toks := []*Tokenizer{fixture(f, "llama3_1"), fixture(f, "qwen3"), fixture(f, "gpt4o")}
	f.Fuzz(func(t *testing.T, s string) {
		for _, tok := range toks {
			if !utf8.ValidString(s) {
				if _, err := tok.Encode(s, true); err == nil {
					t.Fatalf("invalid UTF-8 %q: no error", s)
				}
				continue
			}
			checkRoundTrip(t, tok, s)
		}
	})
}

func TestInvalidUTF8(t *testing.T) {
	tok := fixture(t, "llama3_1")
	_, err := tok.Encode("ok\xffno", false)
	if err == nil || !strings.Contains(err.Error(), "not valid UTF-8 (at byte 2)") {
		t.Errorf("err = %v", err)
	}
	if _, err := tok.Decode([]int{1, tok.VocabSize()}, false); err == nil {
		t.Error("decode of an id outside the vocabulary: no error")
	}
	if _, err := tok.Decode([]int{-1}, false); err == nil {
		t.Error("decode of a negative id: no error")
	}
}

// TestLongWordsMergeAsShortOnes: the heap used for long words applies the
// same merges as the scan used for short ones.
func TestLongWordsMergeAsShortOnes(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for _, name := range []string{"llama3_1", "qwen3", "gpt4o"} {
		m := fixture(t, name).model
		var sc bpeScratch
		for range 2000 {
			w := randomText(r, 1+r.IntN(30))
			if r.IntN(2) == 0 {
				w = strings.Repeat(w, 1+r.IntN(5))
			}
			short := m.mergeShort(w, &sc, nil)
			long := m.mergeLong(w, &sc, nil)
			if !slices.Equal(short, long) {
				t.Fatalf("%s %q: short %v, long %v", name, w, short, long)
			}
		}
	}
}

func TestEncodeBatchAndOffsets(t *testing.T) {
	var texts []string
	for _, l := range readCorpus(t) {
		texts = append(texts, l.Text)
	}
	for _, name := range []string{"llama3_1", "qwen3", "gpt4o-extra"} {
		tok := fixture(t, name)
		batch, err := tok.EncodeBatch(texts, true)
		if err != nil {
			t.Fatal(err)
		}
		for i, s := range texts {
			ids, spans, err := tok.EncodeOffsets(s, true)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(ids, batch[i]) {
				t.Fatalf("%s line %d: batch %v, single %v", name, i+1, batch[i], ids)
			}
			// Spans are in order and within the text (tokens cut from one
			// character that NFC changed overlap on it). BPE tokens' spans
			// hold the bytes the token decodes to when the text is NFC.
			var prev Span
			for j, sp := range spans {
				if sp.Start > sp.End || sp.End > len(s) || sp.End > sp.Start && (sp.Start < prev.Start || sp.End < prev.End) {
					t.Fatalf("%s line %d token %d: span %v after %v in %d bytes", name, i+1, j, sp, prev, len(s))
				}
				if sp.End > sp.Start {
					prev = sp
				}
				if _, added := tok.addedByID[ids[j]]; !added && norm.NFC.IsNormalString(s) && s[sp.Start:sp.End] != string(tok.tokenBytes[ids[j]]) {
					t.Fatalf("%s line %d token %d: span %q, token %q", name, i+1, j, s[sp.Start:sp.End], tok.tokenBytes[ids[j]])
				}
			}
		}
	}
	if _, err := fixture(t, "gpt4o").EncodeBatch([]string{"ok", "\xff"}, false); err == nil {
		t.Error("batch with invalid UTF-8: no error")
	}
}

func TestOffsetsThroughNFC(t *testing.T) {
	tok := fixture(t, "qwen3")
	s := "xe\u0301y cafe\u0301"
	ids, spans, err := tok.EncodeOffsets(s, false)
	if err != nil {
		t.Fatal(err)
	}
	// Each token's span, read from the original text and normalized, is
	// what the token decodes to.
	var joined strings.Builder
	for i, sp := range spans {
		d, err := tok.Decode(ids[i:i+1], false)
		if err != nil {
			t.Fatal(err)
		}
		if got := norm.NFC.String(s[sp.Start:sp.End]); got != d {
			t.Errorf("token %d: span %v = %q, token %q", i, sp, got, d)
		}
		joined.WriteString(s[sp.Start:sp.End])
	}
	if joined.String() != s {
		t.Errorf("spans cover %q, want %q", joined.String(), s)
	}
}

// tinyTokenizer is a byte-level BPE tokenizer.json with the 256 byte tokens,
// one merge ("a b" -> "ab"), and the given changes applied.
func tinyTokenizer(t *testing.T, change func(map[string]any)) string {
	t.Helper()
	vocab := map[string]int{}
	for b, r := range byteChars {
		vocab[string(r)] = b
	}
	vocab["ab"] = 256
	tj := map[string]any{
		"added_tokens": []any{map[string]any{"id": 257, "content": "<eos>", "special": true}},
		"normalizer":   nil,
		"pre_tokenizer": map[string]any{"type": "Sequence", "pretokenizers": []any{
			map[string]any{"type": "Split", "pattern": map[string]any{"Regex": `\p{L}+|\s+`}, "behavior": "Isolated", "invert": false},
			map[string]any{"type": "ByteLevel", "add_prefix_space": false, "use_regex": false},
		}},
		"post_processor": nil,
		"decoder":        map[string]any{"type": "ByteLevel"},
		"model":          map[string]any{"type": "BPE", "vocab": vocab, "merges": []any{"a b"}},
	}
	if change != nil {
		change(tj)
	}
	b, err := json.Marshal(tj)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "tokenizer.json")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestTinyTokenizer(t *testing.T) {
	tok, err := Load(tinyTokenizer(t, nil))
	if err != nil {
		t.Fatal(err)
	}
	ids, err := tok.Encode("ab  ba<eos>", true)
	if err != nil {
		t.Fatal(err)
	}
	if want := []int{256, ' ', ' ', 'b', 'a', 257}; !slices.Equal(ids, want) {
		t.Errorf("ids %v, want %v", ids, want)
	}
	if tok.VocabSize() != 258 || !tok.IsSpecial(257) || tok.IsSpecial(256) {
		t.Errorf("vocab size %d, special %v %v", tok.VocabSize(), tok.IsSpecial(257), tok.IsSpecial(256))
	}
	if d, err := tok.Decode(ids, true); err != nil || d != "ab  ba" {
		t.Errorf("decode skipping special = %q, %v", d, err)
	}
	// The pair form of merges reads the same.
	pairs, err := Load(tinyTokenizer(t, func(tj map[string]any) {
		tj["model"].(map[string]any)["merges"] = []any{[]any{"a", "b"}}
	}))
	if err != nil {
		t.Fatal(err)
	}
	if ids2, _ := pairs.Encode("ab  ba<eos>", true); !slices.Equal(ids, ids2) {
		t.Errorf("pair merges: %v, string merges: %v", ids2, ids)
	}
}

func TestLoadErrors(t *testing.T) {
	set := func(path []string, v any) func(map[string]any) {
		return func(tj map[string]any) {
			m := tj
			for _, k := range path[:len(path)-1] {
				m = m[k].(map[string]any)
			}
			m[path[len(path)-1]] = v
		}
	}
	for _, tc := range []struct {
		change func(map[string]any)
		want   string
	}{
		{set([]string{"model", "type"}, "WordLevel"), `model type "WordLevel"`},
		{set([]string{"model", "type"}, "Unigram"), `model: vocab: invalid JSON`}, // a BPE vocabulary is an object
		{set([]string{"model", "dropout"}, 0.1), "dropout"},
		{set([]string{"model", "continuing_subword_prefix"}, "##"), "continuing_subword_prefix"},
		{set([]string{"model", "merges"}, []any{"a c"}), `token not in vocab`},
		{set([]string{"model", "merges"}, []any{"a b c"}), "two tokens"},
		{set([]string{"model", "merges"}, 7), "merges"},
		{set([]string{"model", "vocab"}, map[string]any{"a": 0}), "byte-level token"},
		{set([]string{"model", "vocab"}, map[string]any{"a": 0, "b": 1 << 30}), `token "b" has id 1073741824, beyond twice the 2 entries`},
		{set([]string{"normalizer"}, map[string]any{"type": "NFKC"}), `normalizer "NFKC"`},
		{set([]string{"pre_tokenizer"}, map[string]any{"type": "Metaspace"}), `"Metaspace" is not supported`},
		{set([]string{"pre_tokenizer"}, nil), "no pre_tokenizer"},
		{set([]string{"pre_tokenizer"}, map[string]any{"type": "ByteLevel", "add_prefix_space": true}), "add_prefix_space"},
		{set([]string{"pre_tokenizer"}, map[string]any{"type": "Split", "pattern": map[string]any{"Regex": `\w+`}, "behavior": "Isolated"}), `unsupported escape \w`},
		{set([]string{"pre_tokenizer"}, map[string]any{"type": "Split", "pattern": map[string]any{"Regex": `a`}, "behavior": "Contiguous"}), `behavior "Contiguous"`},
		{set([]string{"pre_tokenizer"}, map[string]any{"type": "Split", "pattern": map[string]any{"Regex": `a`}, "behavior": "Isolated"}), "no ByteLevel step"},
		{set([]string{"decoder"}, map[string]any{"type": "WordPiece"}), `decoder "WordPiece"`},
		{set([]string{"post_processor"}, map[string]any{"type": "RobertaProcessing"}), `RobertaProcessing: cls must be [token, id]`},
		{set([]string{"post_processor"}, map[string]any{"type": "BertProcessing", "cls": []any{"[CLS]", 1}, "sep": []any{"[SEP]", 1 << 20}}), `sep token "[SEP]" has id 1048576`},
		{set([]string{"post_processor"}, map[string]any{"type": "RoBERTaProcessing"}), `"RoBERTaProcessing" is not supported`},
		{set([]string{"post_processor"}, map[string]any{"type": "TemplateProcessing", "single": []any{map[string]any{"SpecialToken": map[string]any{"id": "<s>"}}}}), `"<s>" not defined`},
	} {
		_, err := Load(tinyTokenizer(t, tc.change))
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "tokenizer.json") {
			t.Errorf("want an error naming tokenizer.json and containing %q, got %v", tc.want, err)
		}
	}
	if _, err := Load(filepath.Join(t.TempDir(), "nothing")); err == nil {
		t.Error("missing file: no error")
	}
	p := filepath.Join(t.TempDir(), "tokenizer.json")
	if err := os.WriteFile(p, []byte("{not json"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(p); err == nil || !strings.Contains(err.Error(), p) {
		t.Errorf("bad JSON: %v", err)
	}
}

// TestAddedTokenIDs: the ids of added tokens are assigned as HF tokenizers
// assigns them on load, not read from the file.
func TestAddedTokenIDs(t *testing.T) {
	tok, err := Load(tinyTokenizer(t, func(tj map[string]any) {
		tj["added_tokens"] = []any{
			map[string]any{"id": 999, "content": "<x>", "special": true},
			map[string]any{"id": 5, "content": "ab"},
			map[string]any{"id": 1000, "content": "<y>"},
			map[string]any{"id": 1001, "content": "<x>", "special": false},
		}
	}))
	if err != nil {
		t.Fatal(err)
	}
	// 257 byte and merge tokens: new ids start at 257; "ab" keeps its
	// vocabulary id; a repeated "<x>" keeps its id and takes the new flags.
	for tokStr, want := range map[string]int{"<x>": 257, "ab": 256, "<y>": 258} {
		if id, ok := tok.TokenID(tokStr); !ok || id != want {
			t.Errorf("%s: id %d, want %d", tokStr, id, want)
		}
	}
	if tok.IsSpecial(257) {
		t.Error("<x> is still special after its redefinition")
	}
}

func TestLossyUTF8(t *testing.T) {
	for in, want := range map[string]string{
		"ok":             "ok",
		"\xe4\xb8":       "\ufffd",
		"\xf0\x9f\x98x":  "\ufffdx",
		"\xed\xa0\x80":   "\ufffd\ufffd\ufffd",
		"\xc0\xaf":       "\ufffd\ufffd",
		"a\xe2\x82\x28b": "a\ufffd(b",
		"\xf4\x90":       "\ufffd\ufffd",
	} {
		if got := lossyUTF8([]byte(in)); got != want {
			t.Errorf("lossyUTF8(%q) = %q, want %q", in, got, want)
		}
	}
}

// FuzzPattern: any pattern either fails to compile or scans any text
// without panicking, and its pieces cover the text.
func FuzzPattern(f *testing.F) {
	for _, p := range []string{llama3Pattern, o200kPattern, gpt2Pattern, `(?i:a|b)?c+`, `[^\s]{2,3}(?!x)`, `\p{`, `[`, `(?:`, `a{`, `\`} {
		f.Add(p, "Hello  world's 123\n\n")
	}
	f.Fuzz(func(t *testing.T, pat, text string) {
		p, err := compilePattern(pat)
		if err != nil || !utf8.ValidString(text) {
			return
		}
		if got := strings.Join(scan(p, text), ""); got != text {
			t.Fatalf("pieces cover %q, want %q", got, text)
		}
	})
}

// One tokenizer encoding from several goroutines at once (batches and
// single texts, as the commands do) gives each text the ids it gets alone.
// Under the race detector (make test runs this package with -race) it
// also checks the pool of idle encoders is shared safely.
func TestEncodeConcurrently(t *testing.T) {
	tok, err := Load(filepath.Join("..", "..", "testdata", "demo", "model"))
	if err != nil {
		t.Fatal(err)
	}
	var texts []string
	for _, l := range readCorpus(t) {
		texts = append(texts, l.Text)
	}
	want := make([][]int, len(texts))
	for i, s := range texts {
		if want[i], err = tok.Encode(s, false); err != nil {
			t.Fatal(err)
		}
	}
	errs := make(chan error, 8)
	for g := range 8 {
		go func() {
			if g%2 == 0 {
				got, err := tok.EncodeBatch(texts, false)
				if err == nil && !slices.EqualFunc(got, want, slices.Equal) {
					err = fmt.Errorf("goroutine %d: a batch's ids differ from the texts' alone", g)
				}
				errs <- err
				return
			}
			for i, s := range texts {
				ids, err := tok.Encode(s, false)
				if err == nil && !slices.Equal(ids, want[i]) {
					err = fmt.Errorf("goroutine %d, text %d: %v, alone %v", g, i, ids, want[i])
				}
				if err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}
