package tokenizer

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// The scanner reads the vocabulary and merges of the real tokenizer.json
// files exactly as encoding/json does.
func TestScannerMatchesEncodingJSON(t *testing.T) {
	for name := range fixturePackages {
		data, err := os.ReadFile(filepath.Join(fixtureDir(t, name), "tokenizer.json"))
		if err != nil {
			t.Fatal(err)
		}
		var want struct {
			Model struct {
				Vocab  map[string]int  `json:"vocab"`
				Merges json.RawMessage `json:"merges"`
			} `json:"model"`
		}
		if err := json.Unmarshal(data, &want); err != nil {
			t.Fatal(err)
		}
		mem, err := members(data, true)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		model, err := members(mem["model"], false)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		vocab, err := parseVocab(model["vocab"])
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !reflect.DeepEqual(vocab, want.Model.Vocab) {
			t.Errorf("%s: the vocabularies differ", name)
		}
		pairs, err := parseMerges(model["merges"])
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var asPairs [][2]string
		if json.Unmarshal(want.Model.Merges, &asPairs) != nil {
			asPairs = nil
			var lines []string
			if err := json.Unmarshal(want.Model.Merges, &lines); err != nil {
				t.Fatal(err)
			}
			for _, l := range lines {
				a, b, _ := strings.Cut(l, " ")
				asPairs = append(asPairs, [2]string{a, b})
			}
		}
		if len(pairs) != len(asPairs) {
			t.Errorf("%s: %d merges, encoding/json %d", name, len(pairs), len(asPairs))
		}
		for i := range min(len(pairs), len(asPairs)) {
			if pairs[i] != asPairs[i] {
				t.Errorf("%s: merge %d is %q, encoding/json %q", name, i, pairs[i], asPairs[i])
				break
			}
		}
	}
}

// Escapes decode as encoding/json decodes them, and what is not JSON is
// an error.
func TestScannerStrings(t *testing.T) {
	good := []string{
		`{"a": 1, "\u00e9\u20ac": 2, "\ud83d\ude00": 3, "\/\\\"\b\f\n\r\t": 4, "\ud800x": 5, "Ġ": 6, "": 7}`,
		`{}`,
		` { "x" : -0 } `,
	}
	for _, g := range good {
		var want map[string]int
		if err := json.Unmarshal([]byte(g), &want); err != nil {
			t.Fatal(err)
		}
		got, err := parseVocab([]byte(g))
		if err != nil {
			t.Errorf("%s: %v", g, err)
			continue
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: %v, encoding/json %v", g, got, want)
		}
	}
	for _, bad := range []string{
		`{"a": 1`, `{"a" 1}`, `{"a": 1,}`, `{"a": 1} x`, `{"a\x01": 1}`, `{"\q": 1}`, `{"\u12": 1}`,
		`{"a": 1.5}`, `{"a": "1"}`, `{"a": 1 "b": 2}`, `["a"]`, `{"a": 1e400}`,
	} {
		if _, err := parseVocab([]byte(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
	for _, bad := range []string{`["a b c"]`, `["ab"]`, `[["a"]]`, `[["a", "b", "c"]]`, `[1]`, `["a b"] x`, `["a b",]`} {
		if _, err := parseMerges([]byte(bad)); err == nil {
			t.Errorf("merges %q: no error", bad)
		}
	}
	for _, bad := range []string{`{"a": [1, 2}`, `{"a": tru}`, `{"a": "x\xff"}`, `{"a": {"b": 1,}}`, `{"a"}`} {
		if _, err := members([]byte(bad), true); err == nil {
			t.Errorf("members %q: no error", bad)
		}
	}
	got, err := parseMerges([]byte(`["#version: 0.2", "a b", ["c", "d e"]]`))
	if err != nil || !reflect.DeepEqual(got, [][2]string{{"a", "b"}, {"c", "d e"}}) {
		t.Errorf("merges: %q, %v", got, err)
	}
}
