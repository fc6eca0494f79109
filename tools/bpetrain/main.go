// Command bpetrain trains a byte-level BPE tokenizer on the "text" of JSONL
// files and writes it as a Hugging Face tokenizer.json (Llama-3's
// pre-tokenizer, byte-level alphabet, merges, special tokens, a
// <|begin_of_text|> template) and tokenizer_config.json, which compass's
// model/tokenizer and HF tokenizers both load. It builds the demo model's
// tokenizer (tools/demo); it is never imported by compass.
//
//	go run ./tools/bpetrain -vocab 4096 -out DIR FILE.jsonl...
//
// Text is split into pre-tokens exactly as Llama-3's Split pattern splits
// it (splitLlama3, a hand-written matcher: Go's regexp has no lookahead);
// the pair counts are then merged greedily, most frequent first, ties to
// the smaller pair of ids, until the vocabulary (bytes, merges and special
// tokens) has -vocab entries or no pair occurs twice.
package main

import (
	"bufio"
	"bytes"
	"container/heap"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"unicode"
)

// llama3Pattern is Llama-3's (and tiktoken cl100k's) pre-tokenizer regex.
const llama3Pattern = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`

// specialTokens follow the merges, in this order.
var specialTokens = []string{"<|begin_of_text|>", "<|end_of_text|>", "<|pad|>"}

func main() {
	vocabSize := flag.Int("vocab", 4096, "vocabulary size: 256 bytes, the merges and the special tokens")
	out := flag.String("out", "", "directory to write tokenizer.json and tokenizer_config.json into")
	minCount := flag.Int("min-count", 2, "stop when the most frequent pair occurs fewer times")
	flag.Parse()
	if *out == "" || flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: bpetrain -vocab N -out DIR FILE.jsonl...")
		os.Exit(2)
	}
	if err := run(*vocabSize, *minCount, *out, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "bpetrain:", err)
		os.Exit(1)
	}
}

func run(vocabSize, minCount int, out string, files []string) error {
	nMerges := vocabSize - 256 - len(specialTokens)
	if nMerges < 0 {
		return fmt.Errorf("-vocab %d: at least %d (bytes and special tokens)", vocabSize, 256+len(specialTokens))
	}
	words := map[string]int{}
	for _, path := range files {
		if err := countWords(path, words); err != nil {
			return err
		}
	}
	fmt.Fprintf(os.Stderr, "bpetrain: %d distinct pre-tokens\n", len(words))
	merges := train(words, nMerges, minCount)
	fmt.Fprintf(os.Stderr, "bpetrain: %d merges\n", len(merges))
	if err := os.MkdirAll(out, 0o755); err != nil {
		return fmt.Errorf("output: %w", err)
	}
	return write(out, merges)
}

// countWords adds the pre-tokens of every "text" in a JSONL file to words.
func countWords(path string, words map[string]int) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("reading data: %w", err)
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 1<<20)
	for line := 1; ; line++ {
		b, err := r.ReadBytes('\n')
		if len(strings.TrimSpace(string(b))) > 0 {
			var rec struct {
				Text *string `json:"text"`
			}
			if jerr := json.Unmarshal(b, &rec); jerr != nil {
				return fmt.Errorf("%s:%d: %w", path, line, jerr)
			}
			if rec.Text == nil {
				return fmt.Errorf("%s:%d: no \"text\"", path, line)
			}
			for _, w := range splitLlama3(*rec.Text) {
				words[w]++
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading %s: %w", path, err)
		}
	}
}

// ---------------------------------------------------------------------------
// Pre-tokenizer: llama3Pattern, alternative by alternative
// ---------------------------------------------------------------------------

// splitLlama3 splits s as HF tokenizers' Split(llama3Pattern, Isolated)
// does: at each position the first alternative that matches, with the
// greedy quantifiers' backtracking worked out by hand.
func splitLlama3(s string) []string {
	rs := []rune(s)
	var out []string
	for i := 0; i < len(rs); {
		n := matchLlama3(rs, i)
		out = append(out, string(rs[i:i+n]))
		i += n
	}
	return out
}

func isL(r rune) bool      { return unicode.IsLetter(r) }
func isN(r rune) bool      { return unicode.IsNumber(r) }
func isS(r rune) bool      { return unicode.IsSpace(r) }
func isCRLF(r rune) bool   { return r == '\r' || r == '\n' }
func isPunct(r rune) bool  { return !isS(r) && !isL(r) && !isN(r) }    // [^\s\p{L}\p{N}]
func isPrefix(r rune) bool { return !isCRLF(r) && !isL(r) && !isN(r) } // [^\r\n\p{L}\p{N}]

// matchLlama3 returns the length in runes of the match at rs[i:] (at least 1).
func matchLlama3(rs []rune, i int) int {
	at := func(j int) rune {
		if j < len(rs) {
			return rs[j]
		}
		return -1
	}
	// (?i:'s|'t|'re|'ve|'m|'ll|'d)
	if rs[i] == '\'' {
		a, b := unicode.ToLower(at(i+1)), unicode.ToLower(at(i+2))
		switch {
		case a == 's' || a == 't' || a == 'm' || a == 'd':
			return 2
		case (a == 'r' || a == 'v') && b == 'e', a == 'l' && b == 'l':
			return 3
		}
	}
	// [^\r\n\p{L}\p{N}]?\p{L}+
	j := i
	if isPrefix(rs[j]) && isL(at(j+1)) {
		j++
	}
	if isL(at(j)) {
		for j < len(rs) && isL(rs[j]) {
			j++
		}
		return j - i
	}
	// \p{N}{1,3}
	if isN(rs[i]) {
		j = i
		for j < len(rs) && j-i < 3 && isN(rs[j]) {
			j++
		}
		return j - i
	}
	//  ?[^\s\p{L}\p{N}]+[\r\n]*
	j = i
	if rs[j] == ' ' && isPunct(at(j+1)) {
		j++
	}
	if isPunct(at(j)) {
		for j < len(rs) && isPunct(rs[j]) {
			j++
		}
		for j < len(rs) && isCRLF(rs[j]) {
			j++
		}
		return j - i
	}
	// Here rs[i] is whitespace. The run of whitespace is rs[i:end].
	end := i
	for end < len(rs) && isS(rs[end]) {
		end++
	}
	// \s*[\r\n]+: up to and including the run's last line break.
	for k := end - 1; k >= i; k-- {
		if isCRLF(rs[k]) {
			return k + 1 - i
		}
	}
	// \s+(?!\S): the run, less its last character when text follows.
	if end == len(rs) {
		return end - i
	}
	if end-i >= 2 {
		return end - 1 - i
	}
	return 1 // \s+
}

// ---------------------------------------------------------------------------
// Training
// ---------------------------------------------------------------------------

type word struct {
	syms  []int32
	count int64
}

type pairKey uint64

func pairOf(a, b int32) pairKey     { return pairKey(uint64(a)<<32 | uint64(uint32(b))) }
func (p pairKey) ids() (a, b int32) { return int32(p >> 32), int32(uint32(p)) }

// pairHeap orders candidate pairs by count, then by the smaller pair. An
// entry can be stale (its pair's count has fallen since); pop checks.
type pairEntry struct {
	count int64
	pair  pairKey
}
type pairHeap []pairEntry

func (h pairHeap) Len() int { return len(h) }
func (h pairHeap) Less(i, j int) bool {
	if h[i].count != h[j].count {
		return h[i].count > h[j].count
	}
	return h[i].pair < h[j].pair
}
func (h pairHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *pairHeap) Push(x any)   { *h = append(*h, x.(pairEntry)) }
func (h *pairHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// train returns up to n merges, each a pair of token ids; merge k makes
// token 256+k.
func train(counts map[string]int, n, minCount int) [][2]int32 {
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Strings(keys) // a fixed order: the result does not depend on map iteration
	words := make([]word, len(keys))
	pairs := map[pairKey]int64{}
	where := map[pairKey][]int32{}
	for wi, k := range keys {
		syms := make([]int32, len(k))
		for i := 0; i < len(k); i++ {
			syms[i] = int32(k[i])
		}
		words[wi] = word{syms, int64(counts[k])}
		for i := 0; i+1 < len(syms); i++ {
			p := pairOf(syms[i], syms[i+1])
			pairs[p] += words[wi].count
			where[p] = append(where[p], int32(wi))
		}
	}
	h := make(pairHeap, 0, len(pairs))
	for p, c := range pairs {
		h = append(h, pairEntry{c, p})
	}
	heap.Init(&h)

	var merges [][2]int32
	seen := make([]int32, len(words)) // the merge that last rewrote each word, +1
	for len(merges) < n && h.Len() > 0 {
		e := heap.Pop(&h).(pairEntry)
		if c := pairs[e.pair]; c != e.count {
			if c > 0 {
				heap.Push(&h, pairEntry{c, e.pair})
			}
			continue
		}
		if e.count < int64(minCount) {
			break
		}
		a, b := e.pair.ids()
		id := int32(256 + len(merges))
		merges = append(merges, [2]int32{a, b})
		grown := map[pairKey]bool{}
		for _, wi := range where[e.pair] {
			if seen[wi] == id+1 {
				continue
			}
			seen[wi] = id + 1
			w := &words[wi]
			merged := make([]int32, 0, len(w.syms))
			for i := 0; i < len(w.syms); i++ {
				if i+1 < len(w.syms) && w.syms[i] == a && w.syms[i+1] == b {
					merged = append(merged, id)
					i++
				} else {
					merged = append(merged, w.syms[i])
				}
			}
			if len(merged) == len(w.syms) {
				continue // a stale index entry
			}
			for i := 0; i+1 < len(w.syms); i++ {
				pairs[pairOf(w.syms[i], w.syms[i+1])] -= w.count
			}
			for i := 0; i+1 < len(merged); i++ {
				p := pairOf(merged[i], merged[i+1])
				pairs[p] += w.count
				if merged[i] == id || merged[i+1] == id {
					where[p] = append(where[p], wi)
					grown[p] = true
				}
			}
			w.syms = merged
		}
		delete(where, e.pair)
		delete(pairs, e.pair)
		// Only pairs with the new token gain counts; the others only fall,
		// and their stale entries are corrected when popped.
		grownList := make([]pairKey, 0, len(grown))
		for p := range grown {
			grownList = append(grownList, p)
		}
		sort.Slice(grownList, func(i, j int) bool { return grownList[i] < grownList[j] })
		for _, p := range grownList {
			if c := pairs[p]; c > 0 {
				heap.Push(&h, pairEntry{c, p})
			}
		}
	}
	return merges
}

// ---------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------

// byteLevelAlphabet is GPT-2's bytes_to_unicode.
func byteLevelAlphabet() []rune {
	out := make([]rune, 256)
	n := 0
	for b := range 256 {
		if (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF) {
			out[b] = rune(b)
		} else {
			out[b] = rune(256 + n)
			n++
		}
	}
	return out
}

func write(dir string, merges [][2]int32) error {
	alphabet := byteLevelAlphabet()
	tokens := make([]string, 256, 256+len(merges))
	for b := range 256 {
		tokens[b] = string(alphabet[b])
	}
	mergeStrings := make([]string, len(merges))
	for i, m := range merges {
		tokens = append(tokens, tokens[m[0]]+tokens[m[1]])
		mergeStrings[i] = tokens[m[0]] + " " + tokens[m[1]]
	}
	vocab := make(map[string]int, len(tokens))
	for id, t := range tokens {
		if _, dup := vocab[t]; dup {
			return fmt.Errorf("merge %d makes %q a second time", id-256, t)
		}
		vocab[t] = id
	}
	var added []map[string]any
	for i, s := range specialTokens {
		added = append(added, map[string]any{"id": len(tokens) + i, "content": s, "single_word": false,
			"lstrip": false, "rstrip": false, "normalized": false, "special": true})
	}
	bos := len(tokens)
	tok := map[string]any{
		"version":      "1.0",
		"truncation":   nil,
		"padding":      nil,
		"added_tokens": added,
		"normalizer":   nil,
		"pre_tokenizer": map[string]any{"type": "Sequence", "pretokenizers": []any{
			map[string]any{"type": "Split", "pattern": map[string]any{"Regex": llama3Pattern}, "behavior": "Isolated", "invert": false},
			map[string]any{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false},
		}},
		"post_processor": map[string]any{"type": "Sequence", "processors": []any{
			map[string]any{"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true},
			map[string]any{"type": "TemplateProcessing",
				"single": []any{
					map[string]any{"SpecialToken": map[string]any{"id": specialTokens[0], "type_id": 0}},
					map[string]any{"Sequence": map[string]any{"id": "A", "type_id": 0}},
				},
				"pair": []any{
					map[string]any{"SpecialToken": map[string]any{"id": specialTokens[0], "type_id": 0}},
					map[string]any{"Sequence": map[string]any{"id": "A", "type_id": 0}},
					map[string]any{"SpecialToken": map[string]any{"id": specialTokens[0], "type_id": 1}},
					map[string]any{"Sequence": map[string]any{"id": "B", "type_id": 1}},
				},
				"special_tokens": map[string]any{specialTokens[0]: map[string]any{"id": specialTokens[0], "ids": []int{bos}, "tokens": []string{specialTokens[0]}}},
			},
		}},
		"decoder": map[string]any{"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
		"model": map[string]any{"type": "BPE", "dropout": nil, "unk_token": nil, "continuing_subword_prefix": nil,
			"end_of_word_suffix": nil, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
			"vocab": vocab, "merges": mergeStrings},
	}
	decoder := map[string]any{}
	for i, s := range specialTokens {
		decoder[fmt.Sprint(len(tokens)+i)] = map[string]any{"content": s, "lstrip": false, "normalized": false,
			"rstrip": false, "single_word": false, "special": true}
	}
	cfg := map[string]any{
		"added_tokens_decoder":         decoder,
		"bos_token":                    specialTokens[0],
		"eos_token":                    specialTokens[1],
		"pad_token":                    specialTokens[2],
		"clean_up_tokenization_spaces": false,
		"model_input_names":            []string{"input_ids", "attention_mask"},
		"model_max_length":             1024,
		"tokenizer_class":              "PreTrainedTokenizerFast",
	}
	if err := writeJSON(filepath.Join(dir, "tokenizer.json"), tok); err != nil {
		return err
	}
	return writeJSON(filepath.Join(dir, "tokenizer_config.json"), cfg)
}

// writeJSON writes v indented, keys sorted (encoding/json sorts map keys),
// without HTML escaping, through a temporary file so that a failure leaves
// no partial file.
func writeJSON(path string, v any) error {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", " ")
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, buf.Bytes(), 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
