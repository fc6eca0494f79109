package engine

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/compassml/compass/model"
	"github.com/compassml/compass/model/tokenizer"
)

// GenerateOptions say how Generate continues prompts. The logits
// processors run in HF transformers' order: repetition penalty, then (when
// sampling) temperature, top-k, top-p and min-p.
type GenerateOptions struct {
	MaxTokens         int      // new tokens at most per request
	Temperature       float64  // 0: greedy
	TopK              int      // 0: off
	TopP              float64  // 0 or 1: off
	MinP              float64  // 0: off
	RepetitionPenalty float64  // 0 or 1: off (HF's: logits of seen tokens divided/multiplied by it)
	Seed              uint64   // request i samples from PCG(Seed, i): the same seed gives the same text
	StopIDs           []int    // end tokens (e.g. the checkpoint's eos ids); generation stops after emitting one (not included in IDs)
	Stop              []string // stop strings: the text is cut before the first occurrence
}

// GenerateResult is one request's continuation.
type GenerateResult struct {
	IDs          []int  // the continuation's token ids (after stop handling)
	Text         string // decoded continuation
	FinishReason string // "stop" (end token or stop string) or "length"
}

// check validates the options.
func (o *GenerateOptions) check() error {
	switch {
	case o.MaxTokens <= 0:
		return fmt.Errorf("generate: max tokens %d must be positive", o.MaxTokens)
	case !(o.Temperature >= 0) || math.IsInf(o.Temperature, 0):
		return fmt.Errorf("generate: temperature %v must be >= 0", o.Temperature)
	case o.TopK < 0:
		return fmt.Errorf("generate: top-k %d must be >= 0", o.TopK)
	case !(o.TopP >= 0 && o.TopP <= 1):
		return fmt.Errorf("generate: top-p %v must be in [0, 1]", o.TopP)
	case !(o.MinP >= 0 && o.MinP <= 1):
		return fmt.Errorf("generate: min-p %v must be in [0, 1]", o.MinP)
	case !(o.RepetitionPenalty >= 0) || math.IsInf(o.RepetitionPenalty, 0):
		return fmt.Errorf("generate: repetition penalty %v must be >= 0", o.RepetitionPenalty)
	}
	for _, s := range o.Stop {
		if s == "" {
			return fmt.Errorf("generate: empty stop string")
		}
	}
	return nil
}

// request is the state of one prompt being continued.
type request struct {
	prompt  []int
	limit   int // new tokens at most
	gen     []int
	seen    map[int]bool // prompt and generated tokens, for the repetition penalty
	rng     *rand.Rand
	text    string // the decoded continuation so far
	emitted int    // bytes of text passed to onToken
	done    bool
	result  GenerateResult
}

// Generate continues each prompt (token ids) with the model (adapter
// attached unmerged, if any) using a KV cache; prompts of different lengths
// form one batch. tok decodes (for stop strings and Text; special tokens
// are left out of Text, as skip_special_tokens does); it may be nil when
// neither is wanted. onToken, when not nil, is called with (request index,
// the new text piece) as tokens are produced (streaming): the pieces of a
// request add up to its Text, and text that may still turn into a stop
// string or complete a character is held back until it cannot.
//
// A request also ends, with "length", when it reaches the model's
// max_position_embeddings; a prompt longer than that is an error.
func Generate(m *model.Model, tok *tokenizer.Tokenizer, prompts [][]int, opts GenerateOptions,
	onToken func(i int, piece string)) ([]GenerateResult, error) {
	if err := opts.check(); err != nil {
		return nil, err
	}
	if len(prompts) == 0 {
		return nil, nil
	}
	if tok == nil && len(opts.Stop) > 0 {
		return nil, fmt.Errorf("generate: stop strings need a tokenizer")
	}
	maxPos := m.Config.MaxPositionEmbeddings
	reqs := make([]*request, len(prompts))
	maxLen := 0
	for i, p := range prompts {
		if len(p) == 0 {
			return nil, fmt.Errorf("generate: prompt %d is empty", i)
		}
		limit := opts.MaxTokens
		if maxPos > 0 {
			if len(p) >= maxPos {
				return nil, fmt.Errorf("generate: prompt %d has %d tokens; the model takes %d (max_position_embeddings) in all",
					i, len(p), maxPos)
			}
			limit = min(limit, maxPos-len(p))
		}
		r := &request{prompt: p, limit: limit, seen: map[int]bool{}, rng: rand.New(rand.NewPCG(opts.Seed, uint64(i)))}
		for _, id := range p {
			r.seen[id] = true
		}
		reqs[i] = r
		maxLen = max(maxLen, len(p)+limit)
	}

	cache, err := m.NewKVCache(len(prompts), maxLen, 0)
	if err != nil {
		return nil, fmt.Errorf("generate: %w", err)
	}
	defer cache.Close()
	logits, err := m.Prefill(cache, prompts)
	if err != nil {
		return nil, fmt.Errorf("generate: %w", err)
	}
	V := m.Config.VocabSize
	scores := make([]float32, V)
	next := make([]int, len(reqs))
	for {
		active := 0
		for i, r := range reqs {
			next[i] = -1
			if r.done {
				continue
			}
			copy(scores, logits.F32()[i*V:(i+1)*V])
			id := pickToken(scores, r.seen, &opts, r.rng)
			if slices.Contains(opts.StopIDs, id) {
				if err := r.finish(tok, "stop", i, onToken); err != nil {
					return nil, err
				}
				continue
			}
			r.gen = append(r.gen, id)
			r.seen[id] = true
			if err := r.advance(tok, &opts, i, onToken); err != nil {
				return nil, err
			}
			if !r.done {
				next[i] = id
				active++
			}
		}
		if active == 0 {
			break
		}
		if logits, err = m.Decode(cache, next); err != nil {
			return nil, fmt.Errorf("generate: %w", err)
		}
	}
	out := make([]GenerateResult, len(reqs))
	for i, r := range reqs {
		out[i] = r.result
	}
	return out, nil
}

// advance decodes the continuation after a new token, ends the request at
// a stop string or its length limit, and streams what is safe to show.
func (r *request) advance(tok *tokenizer.Tokenizer, opts *GenerateOptions, i int, onToken func(int, string)) error {
	if tok != nil {
		text, err := decodeText(tok, r.gen)
		if err != nil {
			return fmt.Errorf("generate: request %d: %w", i, err)
		}
		r.text = text
		if cut, ok := firstStop(text, opts.Stop); ok {
			r.text = text[:cut]
			return r.finish(tok, "stop", i, onToken)
		}
	}
	if len(r.gen) >= r.limit {
		return r.finish(tok, "length", i, onToken)
	}
	if onToken != nil && tok != nil {
		if safe := safeEnd(r.text, opts.Stop); safe > r.emitted {
			onToken(i, r.text[r.emitted:safe])
			r.emitted = safe
		}
	}
	return nil
}

// finish ends a request: its result, and the rest of its text streamed.
func (r *request) finish(tok *tokenizer.Tokenizer, reason string, i int, onToken func(int, string)) error {
	r.done = true
	ids := r.gen
	if tok != nil {
		// After a stop string, keep the tokens whose text lies before it.
		for k := len(ids); k >= 0; k-- {
			t, err := decodeText(tok, ids[:k])
			if err != nil {
				return fmt.Errorf("generate: request %d: %w", i, err)
			}
			if strings.HasPrefix(r.text, t) {
				ids = ids[:k]
				break
			}
		}
	}
	r.result = GenerateResult{IDs: slices.Clone(ids), Text: r.text, FinishReason: reason}
	if r.result.IDs == nil {
		r.result.IDs = []int{}
	}
	if onToken != nil && tok != nil && len(r.text) > r.emitted {
		onToken(i, r.text[r.emitted:])
		r.emitted = len(r.text)
	}
	return nil
}

// firstStop returns where the earliest stop string in text begins.
func firstStop(text string, stops []string) (int, bool) {
	cut, found := len(text), false
	for _, s := range stops {
		if k := strings.Index(text, s); k >= 0 && k < cut {
			cut, found = k, true
		}
	}
	return cut, found
}

// safeEnd is how much of text can be shown while generation goes on: not a
// trailing U+FFFD (the bytes of a character cut between tokens, which the
// next token may complete), nor a tail that begins a stop string.
func safeEnd(text string, stops []string) int {
	end := len(text)
	for end > 0 {
		r, size := utf8.DecodeLastRuneInString(text[:end])
		if r != utf8.RuneError {
			break
		}
		end -= size
	}
	hold := 0
	for _, s := range stops {
		for k := min(len(s)-1, end); k > hold; k-- {
			if strings.HasSuffix(text[:end], s[:k]) {
				hold = k
				break
			}
		}
	}
	return end - hold
}

// decodeText decodes generated ids without special tokens. Ids the
// tokenizer does not have (a model's vocabulary is often padded past the
// tokenizer's) are left out, as HF's tokenizers leave them out.
func decodeText(tok *tokenizer.Tokenizer, ids []int) (string, error) {
	known := make([]int, 0, len(ids))
	for _, id := range ids {
		if id >= 0 && id < tok.VocabSize() {
			known = append(known, id)
		}
	}
	return tok.Decode(known, true)
}

// pickToken applies the logits processors to scores (modified in place)
// and returns the greedy choice or a sample.
func pickToken(scores []float32, seen map[int]bool, o *GenerateOptions, rng *rand.Rand) int {
	if o.RepetitionPenalty > 0 && o.RepetitionPenalty != 1 {
		repetitionPenalty(scores, seen, float32(o.RepetitionPenalty))
	}
	if o.Temperature == 0 {
		return argmax(scores)
	}
	if o.Temperature != 1 {
		// Shifted by the top score, and divided in float64: the same
		// distribution, and a tiny temperature sends the other scores to
		// -Inf instead of every score to +-Inf (1e-39 gave NaN
		// probabilities and the last token, not the likeliest).
		top := scores[argmax(scores)]
		for i, s := range scores {
			scores[i] = float32(float64(s-top) / o.Temperature)
		}
	}
	if o.TopK > 0 {
		topK(scores, o.TopK)
	}
	if o.TopP > 0 && o.TopP < 1 {
		topP(scores, o.TopP)
	}
	if o.MinP > 0 {
		minP(scores, o.MinP)
	}
	return sample(scores, rng)
}

var negInf = float32(math.Inf(-1))

// repetitionPenalty is HF's RepetitionPenaltyLogitsProcessor: the score of
// every token seen so far (prompt included) is divided by p when positive,
// multiplied by p when negative.
func repetitionPenalty(scores []float32, seen map[int]bool, p float32) {
	for id := range seen {
		if id < 0 || id >= len(scores) {
			continue
		}
		if s := scores[id]; s < 0 {
			scores[id] = s * p
		} else {
			scores[id] = s / p
		}
	}
}

// argmax is the first index of the largest score.
func argmax(scores []float32) int {
	best := 0
	for i, s := range scores {
		if s > scores[best] {
			best = i
		}
	}
	return best
}

// topK keeps the scores at least as large as the k-th largest (ties with it
// kept, as HF's TopKLogitsWarper) and sets the rest to -inf.
func topK(scores []float32, k int) {
	if k >= len(scores) {
		return
	}
	sorted := slices.Clone(scores)
	slices.Sort(sorted)
	kth := sorted[len(sorted)-k]
	for i, s := range scores {
		if s < kth {
			scores[i] = negInf
		}
	}
}

// softmax returns the probabilities of scores, in float64.
func softmax(scores []float32) []float64 {
	m := float64(negInf)
	for _, s := range scores {
		m = max(m, float64(s))
	}
	p := make([]float64, len(scores))
	sum := 0.0
	for i, s := range scores {
		p[i] = math.Exp(float64(s) - m)
		sum += p[i]
	}
	for i := range p {
		p[i] /= sum
	}
	return p
}

// topP is HF's TopPLogitsWarper: sorted by ascending score, the tokens whose
// cumulative probability is at most 1-p are removed, the most likely token
// always kept.
func topP(scores []float32, p float64) {
	probs := softmax(scores)
	order := make([]int, len(scores))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return scores[order[a]] < scores[order[b]] })
	cum := 0.0
	for j, i := range order[:len(order)-1] {
		cum += probs[i]
		if cum > 1-p {
			break
		}
		scores[order[j]] = negInf
	}
}

// minP is HF's MinPLogitsWarper: tokens less likely than p times the most
// likely token are removed.
func minP(scores []float32, p float64) {
	probs := softmax(scores)
	top := slices.Max(probs)
	for i, q := range probs {
		if q < p*top {
			scores[i] = negInf
		}
	}
}

// sample draws a token from softmax(scores).
func sample(scores []float32, rng *rand.Rand) int {
	probs := softmax(scores)
	u := rng.Float64()
	cum := 0.0
	last := 0
	for i, q := range probs {
		if q == 0 {
			continue
		}
		cum += q
		last = i
		if u < cum {
			return i
		}
	}
	return last // u beyond the rounded total
}

// EndTokens returns the checkpoint's end-of-generation ids:
// generation_config.json's eos_token_id (int or list), else config.json's
// eos_token_id, plus tokenizer_config.json's eos_token when it is a token
// of tok (tok may be nil). Missing files give no ids, not an error.
func EndTokens(modelDir string, tok *tokenizer.Tokenizer) ([]int, error) {
	var ids []int
	for _, name := range []string{"generation_config.json", "config.json"} {
		found, err := readEOS(filepath.Join(modelDir, name), &ids)
		if err != nil {
			return nil, err
		}
		if found {
			break
		}
	}
	if tok != nil {
		path := filepath.Join(modelDir, "tokenizer_config.json")
		data, err := os.ReadFile(path)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("generate: end tokens: %w", err)
		}
		if err == nil {
			var cfg struct {
				EOS json.RawMessage `json:"eos_token"`
			}
			if err := json.Unmarshal(data, &cfg); err != nil {
				return nil, fmt.Errorf("generate: end tokens: %s: %w", path, err)
			}
			if name := tokenContent(cfg.EOS); name != "" {
				if id, ok := tok.TokenID(name); ok && !slices.Contains(ids, id) {
					ids = append(ids, id)
				}
			}
		}
	}
	return ids, nil
}

// readEOS appends path's eos_token_id (an int or a list of ints) to ids and
// reports whether the file had one.
func readEOS(path string, ids *[]int) (bool, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("generate: end tokens: %w", err)
	}
	var cfg struct {
		EOS json.RawMessage `json:"eos_token_id"`
	}
	if err := json.Unmarshal(data, &cfg); err != nil {
		return false, fmt.Errorf("generate: end tokens: %s: %w", path, err)
	}
	if len(cfg.EOS) == 0 || string(cfg.EOS) == "null" {
		return false, nil
	}
	var one int
	if err := json.Unmarshal(cfg.EOS, &one); err == nil {
		*ids = append(*ids, one)
		return true, nil
	}
	var list []int
	if err := json.Unmarshal(cfg.EOS, &list); err != nil {
		return false, fmt.Errorf("generate: end tokens: %s: eos_token_id is neither an int nor a list of ints: %s", path, cfg.EOS)
	}
	for _, id := range list {
		if !slices.Contains(*ids, id) {
			*ids = append(*ids, id)
		}
	}
	return len(list) > 0, nil
}

// tokenContent reads a special token written as a string or as an
// AddedToken object {"content": ...}; "" for anything else.
func tokenContent(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var obj struct {
		Content string `json:"content"`
	}
	if json.Unmarshal(raw, &obj) == nil {
		return obj.Content
	}
	return ""
}
