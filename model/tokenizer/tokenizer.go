// Package tokenizer encodes and decodes text exactly as Hugging Face
// tokenizers does, from a checkpoint's tokenizer.json and
// tokenizer_config.json: byte-level BPE as used by Llama-3.x, Qwen2.5 and the
// o200k family (Phi-4-mini), with added and special tokens, the NFC
// normalizer, the Split pre-tokenizer, the post-processor and the ByteLevel
// decoder; the chat templates of the three families (chat.go); and the
// Unigram (SentencePiece: XLM-RoBERTa, multilingual-e5) and WordPiece (BERT)
// models with their normalizers, pre-tokenizers and decoders (subword.go).
//
// A configuration this package does not implement (another model type,
// normalizer, pre-tokenizer or pattern construct) is an error at Load that
// names it, never an approximation.
package tokenizer

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"unicode/utf8"
)

// Tokenizer is a loaded tokenizer. It is safe for concurrent use.
type Tokenizer struct {
	path   string // tokenizer.json
	model  *bpeModel
	sub    *subword // Unigram and WordPiece tokenizers; nil for byte-level BPE
	nfc    bool
	splits []splitter // pre-tokenizer steps, applied in order

	added     []*addedToken
	addedByID map[int]*addedToken
	rawAdded  *addedMatcher // added tokens matched before normalization
	normAdded *addedMatcher // added tokens matched after it (normalized: true)
	vocabSize int
	// modelVocabLen is the number of entries of the model's vocabulary,
	// from which new added tokens are numbered.
	modelVocabLen int
	tokenBytes    [][]byte // id -> the bytes it decodes to; nil for unused ids
	tokenIDs      map[string]int

	prefix, suffix []int32 // special tokens the post-processor adds

	config *tokenizerConfig // nil without tokenizer_config.json

	// Idle encoders, whose pre-token caches stay warm between calls. A
	// plain free list rather than a sync.Pool: the pool is emptied at every
	// garbage collection, and with it the caches.
	encMu    sync.Mutex
	encoders []*encoder
}

// A splitter is one Split step of the pre-tokenizer. keepMatches and
// keepGaps say which pieces survive: matches, the text between them, or both
// (the Isolated behaviour).
type splitter struct {
	pat         *pattern
	keepMatches bool
	keepGaps    bool
}

// gpt2Pattern is the regular expression of the ByteLevel pre-tokenizer
// when its use_regex is true.
const gpt2Pattern = `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`

// Load reads a tokenizer from path: a tokenizer.json file, or a checkpoint
// directory holding one. tokenizer_config.json beside it, when present,
// supplies the chat template and the bos/eos tokens.
func Load(path string) (*Tokenizer, error) {
	file := path
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		file = filepath.Join(path, "tokenizer.json")
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	t, err := parse(data)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %s: %w", file, err)
	}
	t.path = file
	cfgPath := filepath.Join(filepath.Dir(file), "tokenizer_config.json")
	if cfgData, err := os.ReadFile(cfgPath); err == nil {
		if t.config, err = parseConfig(cfgData); err != nil {
			return nil, fmt.Errorf("tokenizer: %s: %w", cfgPath, err)
		}
		t.config.path = cfgPath
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	return t, nil
}

// The parts of tokenizer.json this package reads.
type tokenizerJSON struct {
	AddedTokens   []*addedToken   `json:"added_tokens"`
	Normalizer    json.RawMessage `json:"normalizer"`
	PreTokenizer  json.RawMessage `json:"pre_tokenizer"`
	Model         json.RawMessage `json:"model"`
	PostProcessor json.RawMessage `json:"post_processor"`
	Decoder       json.RawMessage `json:"decoder"`
}

type modelJSON struct {
	Type                    string          `json:"type"`
	Dropout                 *float64        `json:"dropout"`
	ContinuingSubwordPrefix *string         `json:"continuing_subword_prefix"`
	EndOfWordSuffix         *string         `json:"end_of_word_suffix"`
	IgnoreMerges            bool            `json:"ignore_merges"`
	Vocab                   json.RawMessage `json:"vocab"`
	Merges                  json.RawMessage `json:"merges"`
}

func parse(data []byte) (*Tokenizer, error) {
	var tj tokenizerJSON
	mem, err := members(data, true)
	if err == nil {
		err = unmarshalMembers(mem, &tj, "model")
	}
	if err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	tj.Model = mem["model"]
	t := &Tokenizer{addedByID: map[int]*addedToken{}}
	if isSubwordModel(tj.Model) {
		if err := t.parseSubword(tj); err != nil {
			return nil, err
		}
		return t, nil
	}
	vocab, err := t.parseModel(tj.Model)
	if err != nil {
		return nil, err
	}
	if t.nfc, err = parseNormalizer(tj.Normalizer); err != nil {
		return nil, err
	}
	if t.splits, err = parsePreTokenizer(tj.PreTokenizer); err != nil {
		return nil, err
	}
	if err := parseDecoder(tj.Decoder); err != nil {
		return nil, err
	}
	if err := t.parseAdded(tj.AddedTokens, vocab); err != nil {
		return nil, err
	}
	if err := t.parsePostProcessor(tj.PostProcessor); err != nil {
		return nil, err
	}
	return t, nil
}

// parseModel reads the BPE model and returns its vocabulary.
func (t *Tokenizer) parseModel(raw json.RawMessage) (map[string]int, error) {
	var mj modelJSON
	mem, err := members(raw, false) // a part of the checked file
	if err == nil {
		err = unmarshalMembers(mem, &mj, "vocab", "merges")
	}
	if err != nil {
		return nil, fmt.Errorf("model: %w", err)
	}
	mj.Vocab, mj.Merges = mem["vocab"], mem["merges"]
	switch {
	case mj.Type != "BPE":
		return nil, fmt.Errorf("model type %q is not supported (only byte-level BPE)", mj.Type)
	case mj.Dropout != nil && *mj.Dropout != 0:
		return nil, fmt.Errorf("BPE dropout %g is not supported", *mj.Dropout)
	case mj.ContinuingSubwordPrefix != nil && *mj.ContinuingSubwordPrefix != "":
		return nil, fmt.Errorf("BPE continuing_subword_prefix %q is not supported", *mj.ContinuingSubwordPrefix)
	case mj.EndOfWordSuffix != nil && *mj.EndOfWordSuffix != "":
		return nil, fmt.Errorf("BPE end_of_word_suffix %q is not supported", *mj.EndOfWordSuffix)
	}
	// The vocabulary and the merges are most of the file: decode them side
	// by side.
	var vocab map[string]int
	var pairs [][2]string
	var vocabErr, mergesErr error
	var wg sync.WaitGroup
	wg.Go(func() { pairs, mergesErr = parseMerges(mj.Merges) })
	vocab, vocabErr = parseVocab(mj.Vocab)
	wg.Wait()
	if vocabErr != nil {
		return nil, fmt.Errorf("model: vocab: %w", vocabErr)
	}
	if mergesErr != nil {
		return nil, mergesErr
	}
	if len(vocab) == 0 {
		return nil, fmt.Errorf("model has no vocab")
	}
	m := &bpeModel{ignoreMerges: mj.IgnoreMerges, tokens: make(map[string]int32, len(vocab))}
	maxID := 0
	for tok, id := range vocab {
		// Ids index dense tables (tokenBytes here, each encoder's): they
		// may leave gaps (o200k's specials sit above holes), but an id far
		// beyond the entries would make a tiny file allocate gigabytes.
		if id < 0 || id >= 2*len(vocab) {
			return nil, fmt.Errorf("vocab: token %q has id %d, beyond twice the %d entries of the vocabulary", tok, id, len(vocab))
		}
		maxID = max(maxID, id)
	}
	for b, r := range byteChars {
		id, ok := vocab[string(r)]
		if !ok {
			return nil, fmt.Errorf("vocab lacks the byte-level token %q for byte %#02x: not a byte-level BPE vocabulary", string(r), b)
		}
		m.byteID[b] = int32(id)
	}
	// The byte strings of the tokens and the merge table do not depend on
	// each other: build them side by side.
	t.tokenBytes = make([][]byte, maxID+1)
	m.merges = newMergeTable(len(pairs))
	wg.Go(func() { mergesErr = buildMerges(m.merges, pairs, vocab) })
	var ar arena
	for tok, id := range vocab {
		b, ok := byteLevelDecode(tok)
		if !ok {
			// Not spelled in byte characters: unreachable from text, and
			// the ByteLevel decoder keeps such a token's own bytes.
			t.tokenBytes[id] = []byte(tok)
			continue
		}
		t.tokenBytes[id] = b
		m.tokens[ar.str(b)] = int32(id)
	}
	wg.Wait()
	if mergesErr != nil {
		return nil, mergesErr
	}
	t.model = m
	t.vocabSize = maxID + 1
	t.modelVocabLen = len(vocab)
	t.tokenIDs = vocab // added tokens are registered here too
	return vocab, nil
}

type componentJSON struct {
	Type           string            `json:"type"`
	Normalizers    []json.RawMessage `json:"normalizers"`
	Pretokenizers  []json.RawMessage `json:"pretokenizers"`
	Processors     []json.RawMessage `json:"processors"`
	Decoders       []json.RawMessage `json:"decoders"`
	Pattern        *patternJSON      `json:"pattern"`
	Behavior       string            `json:"behavior"`
	Invert         bool              `json:"invert"`
	AddPrefixSpace bool              `json:"add_prefix_space"`
	UseRegex       *bool             `json:"use_regex"`
	Single         []templateItem    `json:"single"`
	Sep            []json.RawMessage `json:"sep"` // [token, id], of BertProcessing and RobertaProcessing
	Cls            []json.RawMessage `json:"cls"`
	SpecialTokens  map[string]struct {
		IDs []int `json:"ids"`
	} `json:"special_tokens"`
}

type patternJSON struct {
	Regex *string `json:"Regex"`
}

type templateItem struct {
	SpecialToken *struct {
		ID string `json:"id"`
	} `json:"SpecialToken"`
	Sequence *struct {
		ID string `json:"id"`
	} `json:"Sequence"`
}

func isNull(raw json.RawMessage) bool { return len(raw) == 0 || string(raw) == "null" }

// buildMerges puts each merge, by rank, into the table: the ids of its two
// parts and of their concatenation, all of which must be in the vocabulary.
func buildMerges(table *mergeTable, pairs [][2]string, vocab map[string]int) error {
	var buf []byte
	for rank, p := range pairs {
		a, okA := vocab[p[0]]
		b, okB := vocab[p[1]]
		buf = append(append(buf[:0], p[0]...), p[1]...)
		ab, okAB := vocab[string(buf)]
		if !okA || !okB || !okAB {
			return fmt.Errorf("merge %d (%q %q): token not in vocab", rank, p[0], p[1])
		}
		table.put(int32(a), int32(b), int32(rank), int32(ab))
	}
	return nil
}

// parseNormalizer accepts no normalizer, NFC, or a Sequence of those.
func parseNormalizer(raw json.RawMessage) (nfc bool, err error) {
	if isNull(raw) {
		return false, nil
	}
	var c componentJSON
	if err := json.Unmarshal(raw, &c); err != nil {
		return false, fmt.Errorf("normalizer: %w", err)
	}
	switch c.Type {
	case "NFC":
		return true, nil
	case "Sequence":
		for _, n := range c.Normalizers {
			one, err := parseNormalizer(n)
			if err != nil {
				return false, err
			}
			nfc = nfc || one
		}
		return nfc, nil
	}
	return false, fmt.Errorf("normalizer %q is not supported (only NFC)", c.Type)
}

// parsePreTokenizer accepts Split steps followed by a ByteLevel step, in a
// Sequence or alone.
func parsePreTokenizer(raw json.RawMessage) ([]splitter, error) {
	if isNull(raw) {
		return nil, fmt.Errorf("no pre_tokenizer: a byte-level BPE tokenizer needs a ByteLevel pre-tokenizer")
	}
	var c componentJSON
	if err := json.Unmarshal(raw, &c); err != nil {
		return nil, fmt.Errorf("pre_tokenizer: %w", err)
	}
	steps := []json.RawMessage{raw}
	if c.Type == "Sequence" {
		steps = c.Pretokenizers
	}
	var splits []splitter
	byteLevel := false
	for i, step := range steps {
		var s componentJSON
		if err := json.Unmarshal(step, &s); err != nil {
			return nil, fmt.Errorf("pre_tokenizer %d: %w", i, err)
		}
		if byteLevel {
			return nil, fmt.Errorf("pre_tokenizer %d (%s) after ByteLevel is not supported", i, s.Type)
		}
		switch s.Type {
		case "Split":
			sp, err := parseSplit(s)
			if err != nil {
				return nil, fmt.Errorf("pre_tokenizer %d: %w", i, err)
			}
			splits = append(splits, sp)
		case "ByteLevel":
			if s.AddPrefixSpace {
				return nil, fmt.Errorf("pre_tokenizer %d: ByteLevel add_prefix_space is not supported", i)
			}
			if s.UseRegex == nil || *s.UseRegex { // HF's default is true
				pat, err := compilePattern(gpt2Pattern)
				if err != nil {
					return nil, err
				}
				splits = append(splits, splitter{pat: pat, keepMatches: true, keepGaps: true})
			}
			byteLevel = true
		default:
			return nil, fmt.Errorf("pre_tokenizer %d: %q is not supported (only Split and ByteLevel)", i, s.Type)
		}
	}
	if !byteLevel {
		return nil, fmt.Errorf("pre_tokenizer has no ByteLevel step: not a byte-level BPE tokenizer")
	}
	return splits, nil
}

func parseSplit(s componentJSON) (splitter, error) {
	if s.Pattern == nil || s.Pattern.Regex == nil {
		return splitter{}, fmt.Errorf("split pre-tokenizer: only a Regex pattern is supported")
	}
	pat, err := compilePattern(*s.Pattern.Regex)
	if err != nil {
		return splitter{}, fmt.Errorf("split pre-tokenizer: %w", err)
	}
	sp := splitter{pat: pat}
	switch {
	case s.Behavior == "Isolated":
		sp.keepMatches, sp.keepGaps = true, true
	case s.Behavior == "Removed" && s.Invert:
		sp.keepMatches = true
	case s.Behavior == "Removed":
		sp.keepGaps = true
	default:
		return splitter{}, fmt.Errorf("split pre-tokenizer: behavior %q is not supported (only Isolated and Removed)", s.Behavior)
	}
	return sp, nil
}

// parseDecoder accepts the ByteLevel decoder, alone or in a Sequence.
func parseDecoder(raw json.RawMessage) error {
	if isNull(raw) {
		return fmt.Errorf("no decoder: a byte-level BPE tokenizer needs the ByteLevel decoder")
	}
	var c componentJSON
	if err := json.Unmarshal(raw, &c); err != nil {
		return fmt.Errorf("decoder: %w", err)
	}
	if c.Type == "Sequence" && len(c.Decoders) == 1 {
		return parseDecoder(c.Decoders[0])
	}
	if c.Type != "ByteLevel" {
		return fmt.Errorf("decoder %q is not supported (only ByteLevel)", c.Type)
	}
	return nil
}

// parseAdded registers the added tokens as HF tokenizers does when it
// loads a file: the "id" written in the file is not used. A token whose
// content is in the model's vocabulary takes that id; the others are
// numbered in order from the size of the vocabulary (its number of
// entries). A token repeated with the same content replaces the earlier one
// and keeps its id.
func (t *Tokenizer) parseAdded(tokens []*addedToken, modelVocab map[string]int) error {
	nextID := t.modelVocabLen
	byContent := map[string]*addedToken{}
	for _, a := range tokens {
		if a.Content == "" {
			continue // HF ignores empty added tokens
		}
		if prev, ok := byContent[a.Content]; ok {
			id := prev.ID
			*prev = *a
			prev.ID = id
			continue
		}
		if id, ok := modelVocab[a.Content]; ok {
			a.ID = id
		} else {
			a.ID = nextID
			nextID++
		}
		byContent[a.Content] = a
		t.added = append(t.added, a)
	}
	for _, a := range t.added {
		t.addedByID[a.ID] = a
		t.tokenIDs[a.Content] = a.ID
		t.vocabSize = max(t.vocabSize, a.ID+1)
		a.match = a.Content
		if a.Normalized && t.sub != nil {
			a.match = t.sub.normalize(a.Content)
		} else if a.Normalized && t.nfc {
			a.match = nfcString(a.Content)
		}
	}
	for t.sub == nil && len(t.tokenBytes) < t.vocabSize {
		t.tokenBytes = append(t.tokenBytes, nil)
	}
	for _, a := range t.added {
		if t.sub != nil {
			break // decoded through the pipeline's decoders
		}
		if b, ok := byteLevelDecode(a.Content); ok {
			t.tokenBytes[a.ID] = b
		} else {
			t.tokenBytes[a.ID] = []byte(a.Content)
		}
	}
	var raw, norm []*addedToken
	for _, a := range t.added {
		if a.match == "" {
			continue // normalized to nothing: it cannot be found in text
		}
		if a.Normalized {
			norm = append(norm, a)
		} else {
			raw = append(raw, a)
		}
	}
	if len(raw) > 0 {
		t.rawAdded = newAddedMatcher(raw)
	}
	if len(norm) > 0 {
		t.normAdded = newAddedMatcher(norm)
	}
	return nil
}

// parsePostProcessor accepts ByteLevel (which changes only offsets),
// TemplateProcessing, and BertProcessing and RobertaProcessing ([CLS] A
// [SEP], <s> A </s>), alone or in a Sequence. Only single sequences are
// encoded, so only the template's "single" form is used.
func (t *Tokenizer) parsePostProcessor(raw json.RawMessage) error {
	if isNull(raw) {
		return nil
	}
	var c componentJSON
	if err := json.Unmarshal(raw, &c); err != nil {
		return fmt.Errorf("post_processor: %w", err)
	}
	switch c.Type {
	case "ByteLevel":
		return nil
	case "BertProcessing", "RobertaProcessing":
		cls, err := t.processorToken(c.Type, "cls", c.Cls)
		if err != nil {
			return err
		}
		sep, err := t.processorToken(c.Type, "sep", c.Sep)
		if err != nil {
			return err
		}
		t.prefix = append(t.prefix, cls)
		t.suffix = append(t.suffix, sep)
		return nil
	case "Sequence":
		for _, p := range c.Processors {
			if err := t.parsePostProcessor(p); err != nil {
				return err
			}
		}
		return nil
	case "TemplateProcessing":
		seen := false
		for _, it := range c.Single {
			switch {
			case it.Sequence != nil:
				if it.Sequence.ID != "A" || seen {
					return fmt.Errorf("post_processor: single template must hold sequence A once")
				}
				seen = true
			case it.SpecialToken != nil:
				st, ok := c.SpecialTokens[it.SpecialToken.ID]
				if !ok {
					return fmt.Errorf("post_processor: special token %q not defined", it.SpecialToken.ID)
				}
				for _, id := range st.IDs {
					if id < 0 || id >= t.vocabSize {
						return fmt.Errorf("post_processor: special token %q has id %d", it.SpecialToken.ID, id)
					}
					if seen {
						t.suffix = append(t.suffix, int32(id))
					} else {
						t.prefix = append(t.prefix, int32(id))
					}
				}
			}
		}
		if !seen {
			return fmt.Errorf("post_processor: single template lacks sequence A")
		}
		return nil
	}
	return fmt.Errorf("post_processor %q is not supported (only ByteLevel, TemplateProcessing, BertProcessing and RobertaProcessing)", c.Type)
}

// processorToken reads the [token, id] pair of a BertProcessing or
// RobertaProcessing post-processor.
func (t *Tokenizer) processorToken(typ, name string, pair []json.RawMessage) (int32, error) {
	var tok string
	var id int
	if len(pair) != 2 || json.Unmarshal(pair[0], &tok) != nil || json.Unmarshal(pair[1], &id) != nil {
		return 0, fmt.Errorf("post_processor %s: %s must be [token, id]", typ, name)
	}
	if id < 0 || id >= t.vocabSize {
		return 0, fmt.Errorf("post_processor %s: %s token %q has id %d, outside the vocabulary (size %d)", typ, name, tok, id, t.vocabSize)
	}
	return int32(id), nil
}

// VocabSize is one more than the largest token id.
func (t *Tokenizer) VocabSize() int { return t.vocabSize }

// TokenID returns the id of a vocabulary or added token, by its spelling in
// tokenizer.json.
func (t *Tokenizer) TokenID(token string) (int, bool) {
	id, ok := t.tokenIDs[token]
	return id, ok
}

// IsSpecial reports whether id is an added token marked special.
func (t *Tokenizer) IsSpecial(id int) bool {
	a, ok := t.addedByID[id]
	return ok && a.Special
}

// SpecialAround returns the tokens the post-processor puts before and after
// a single sequence (XLM-R's <s> and </s>, BERT's [CLS] and [SEP]), so that
// a caller can truncate the text between them as HF's truncation does.
func (t *Tokenizer) SpecialAround() (prefix, suffix []int) {
	for _, id := range t.prefix {
		prefix = append(prefix, int(id))
	}
	for _, id := range t.suffix {
		suffix = append(suffix, int(id))
	}
	return prefix, suffix
}

// Path is the tokenizer.json file the tokenizer was loaded from.
func (t *Tokenizer) Path() string { return t.path }

// Encode returns the token ids of text. addSpecial applies the
// post-processor (Llama-3's BOS), as add_special_tokens does in HF. Special
// token strings inside text always become their tokens, as in HF. Invalid
// UTF-8 is an error.
func (t *Tokenizer) Encode(text string, addSpecial bool) ([]int, error) {
	e := t.getEncoder()
	defer t.putEncoder(e)
	ids, err := e.encode(text, addSpecial, nil)
	if err != nil {
		return nil, err
	}
	out := make([]int, len(ids))
	for i, id := range ids {
		out[i] = int(id)
	}
	return out, nil
}

// Span is the byte range [Start, End) of input text a token came from.
// Tokens added by the post-processor have an empty span at 0.
type Span struct{ Start, End int }

// EncodeOffsets is Encode that also returns each token's span of text.
func (t *Tokenizer) EncodeOffsets(text string, addSpecial bool) ([]int, []Span, error) {
	if t.sub != nil {
		return nil, nil, fmt.Errorf("tokenizer: offsets are not implemented for Unigram and WordPiece tokenizers")
	}
	e := t.getEncoder()
	defer t.putEncoder(e)
	var spans []Span
	ids, err := e.encode(text, addSpecial, &spans)
	if err != nil {
		return nil, nil, err
	}
	out := make([]int, len(ids))
	for i, id := range ids {
		out[i] = int(id)
	}
	return out, spans, nil
}

// EncodeBatch encodes texts on all CPUs (runtime.GOMAXPROCS) and returns
// their ids in order. The first error stops the batch.
func (t *Tokenizer) EncodeBatch(texts []string, addSpecial bool) ([][]int, error) {
	out := make([][]int, len(texts))
	workers := min(runtime.GOMAXPROCS(0), len(texts))
	errs := make([]error, workers)
	var next sync.Mutex
	i := 0
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e := t.getEncoder()
			defer t.putEncoder(e)
			for {
				// Lines are handed out in chunks so that workers rarely
				// contend for the counter.
				next.Lock()
				lo := i
				i = min(i+64, len(texts))
				hi := i
				next.Unlock()
				if lo == hi {
					return
				}
				for j := lo; j < hi; j++ {
					ids, err := e.encode(texts[j], addSpecial, nil)
					if err != nil {
						errs[w] = fmt.Errorf("text %d: %w", j, err)
						return
					}
					o := make([]int, len(ids))
					for k, id := range ids {
						o[k] = int(id)
					}
					out[j] = o
				}
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return out, nil
}

// Decode returns the text of ids. skipSpecial drops special tokens, as
// skip_special_tokens does in HF. Bytes that do not form valid UTF-8 (a
// sequence cut in the middle of a character) become U+FFFD, one per maximal
// invalid subsequence, as HF's from_utf8_lossy does. An id outside the
// vocabulary is an error.
func (t *Tokenizer) Decode(ids []int, skipSpecial bool) (string, error) {
	if t.sub != nil {
		return t.subDecode(ids, skipSpecial)
	}
	var b []byte
	for i, id := range ids {
		if id < 0 || id >= len(t.tokenBytes) || t.tokenBytes[id] == nil {
			return "", fmt.Errorf("tokenizer: decode: id %d at position %d is not in the vocabulary (size %d)", id, i, t.vocabSize)
		}
		if skipSpecial && t.IsSpecial(id) {
			continue
		}
		b = append(b, t.tokenBytes[id]...)
	}
	return lossyUTF8(b), nil
}

// lossyUTF8 replaces each maximal invalid subsequence of b with U+FFFD (the
// Unicode "substitution of maximal subparts" practice that Rust follows).
func lossyUTF8(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	out := make([]byte, 0, len(b)+8)
	for i := 0; i < len(b); {
		r, size := utf8.DecodeRune(b[i:])
		if r != utf8.RuneError || size > 1 {
			out = append(out, b[i:i+size]...)
			i += size
			continue
		}
		out = utf8.AppendRune(out, utf8.RuneError)
		i += invalidPrefix(b[i:])
	}
	return string(out)
}

// invalidPrefix is the length of the maximal subpart at the start of b,
// which does not begin a valid character: a lead byte followed by as many
// continuation bytes as could still have completed it, or one byte.
func invalidPrefix(b []byte) int {
	c := b[0]
	var need int
	lo, hi := byte(0x80), byte(0xBF) // allowed range of the second byte
	switch {
	case c >= 0xC2 && c <= 0xDF:
		need = 1
	case c >= 0xE0 && c <= 0xEF:
		need = 2
		if c == 0xE0 {
			lo = 0xA0
		} else if c == 0xED {
			hi = 0x9F
		}
	case c >= 0xF0 && c <= 0xF4:
		need = 3
		if c == 0xF0 {
			lo = 0x90
		} else if c == 0xF4 {
			hi = 0x8F
		}
	default:
		return 1
	}
	n := 1
	for k := 0; k < need && n < len(b); k++ {
		x := b[n]
		if k == 0 && (x < lo || x > hi) || k > 0 && (x < 0x80 || x > 0xBF) {
			break
		}
		n++
	}
	return n
}
