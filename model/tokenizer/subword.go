package tokenizer

import (
	"encoding/json"
	"fmt"
	"strings"
)

// subword is the pipeline of Unigram (SentencePiece: XLM-RoBERTa,
// multilingual-e5) and WordPiece (BERT) tokenizers: normalizers,
// pre-tokenizers, the model, and the decoders, each as tokenizer.json
// configures it. Byte-level BPE tokenizers do not use it.
type subword struct {
	normalizers   []normalizeFunc
	preTokenizers []preTokenizeFunc
	decoders      []decodeFunc
	unigram       *unigramModel   // one of unigram and wordPiece is set
	wordPiece     *wordPieceModel //
	tokens        []string        // id -> the model's token, "" for unused ids
	special       map[string]bool // the contents of special added tokens
}

func (p *subword) normalize(s string) string {
	for _, f := range p.normalizers {
		s = f(s)
	}
	return s
}

// isSubwordModel reports whether tokenizer.json's model is one this
// pipeline handles.
func isSubwordModel(raw json.RawMessage) bool {
	mem, err := members(raw, false) // skips the large vocabulary quickly
	if err != nil {
		return false
	}
	var typ string
	if json.Unmarshal(mem["type"], &typ) != nil {
		return false
	}
	return typ == "Unigram" || typ == "WordPiece"
}

// parseSubword reads a Unigram or WordPiece tokenizer.json.
func (t *Tokenizer) parseSubword(tj tokenizerJSON) error {
	p := &subword{special: map[string]bool{}}
	t.sub = p
	vocab, err := t.parseSubwordModel(tj.Model)
	if err != nil {
		return err
	}
	if p.normalizers, err = parseNormalizers(tj.Normalizer); err != nil {
		return err
	}
	if p.preTokenizers, err = parsePreTokenizers(tj.PreTokenizer); err != nil {
		return err
	}
	if p.decoders, err = parseDecoders(tj.Decoder); err != nil {
		return err
	}
	if err := t.parseAdded(tj.AddedTokens, vocab); err != nil {
		return err
	}
	for _, a := range t.added {
		if a.Special {
			p.special[a.Content] = true
		}
	}
	return t.parsePostProcessor(tj.PostProcessor)
}

type subwordModelJSON struct {
	Type                    string          `json:"type"`
	UnkID                   *int            `json:"unk_id"`
	ByteFallback            bool            `json:"byte_fallback"`
	UnkToken                *string         `json:"unk_token"`
	ContinuingSubwordPrefix *string         `json:"continuing_subword_prefix"`
	MaxInputCharsPerWord    *int            `json:"max_input_chars_per_word"`
	Vocab                   json.RawMessage `json:"vocab"`
}

// parseSubwordModel reads the Unigram or WordPiece model and returns its
// vocabulary.
func (t *Tokenizer) parseSubwordModel(raw json.RawMessage) (map[string]int, error) {
	var mj subwordModelJSON
	mem, err := members(raw, false)
	if err == nil {
		err = unmarshalMembers(mem, &mj, "vocab")
	}
	if err != nil {
		return nil, fmt.Errorf("model: %w", err)
	}
	p := t.sub
	vocab := map[string]int{}
	switch mj.Type {
	case "Unigram":
		pieces, scores, err := parseUnigramVocab(mem["vocab"])
		if err != nil {
			return nil, fmt.Errorf("model: vocab: %w", err)
		}
		unk := -1
		if mj.UnkID != nil {
			if unk = *mj.UnkID; unk < 0 {
				return nil, fmt.Errorf("model: unk_id %d", unk)
			}
		}
		if p.unigram, err = newUnigram(pieces, scores, unk, mj.ByteFallback); err != nil {
			return nil, fmt.Errorf("model: %w", err)
		}
		p.tokens = pieces
		for tok, id := range p.unigram.ids {
			vocab[tok] = int(id)
		}
	case "WordPiece":
		if vocab, err = parseVocab(mem["vocab"]); err != nil {
			return nil, fmt.Errorf("model: vocab: %w", err)
		}
		m := &wordPieceModel{vocab: vocab, prefix: "##", maxChars: 100, unk: "[UNK]"}
		if mj.UnkToken != nil {
			m.unk = *mj.UnkToken
		}
		if mj.ContinuingSubwordPrefix != nil {
			m.prefix = *mj.ContinuingSubwordPrefix
		}
		if mj.MaxInputCharsPerWord != nil {
			m.maxChars = *mj.MaxInputCharsPerWord
		}
		maxID := -1
		for tok, id := range vocab {
			// As for BPE (parseModel): ids index p.tokens.
			if id < 0 || id >= 2*len(vocab) {
				return nil, fmt.Errorf("model: vocab: token %q has id %d, beyond twice the %d entries of the vocabulary", tok, id, len(vocab))
			}
			maxID = max(maxID, id)
		}
		p.tokens = make([]string, maxID+1)
		for tok, id := range vocab {
			p.tokens[id] = tok
		}
		p.wordPiece = m
	default:
		return nil, fmt.Errorf("model type %q is not supported", mj.Type)
	}
	if len(vocab) == 0 {
		return nil, fmt.Errorf("model has no vocab")
	}
	t.vocabSize = len(p.tokens)
	t.modelVocabLen = len(vocab)
	t.tokenIDs = vocab
	return vocab, nil
}

// subSegment encodes text between added tokens through the pipeline.
// first is whether s begins the input.
func (e *encoder) subSegment(s string, first bool) {
	t := e.t
	n := t.sub.normalize(s)
	if t.normAdded == nil {
		e.subWords(n, first)
		return
	}
	parts := t.normAdded.split(n, e.norm[:0])
	e.norm = parts
	for _, p := range parts {
		if p.tok != nil {
			e.emit(int32(p.tok.ID), 0, 0)
		} else {
			e.subWords(n[p.start:p.end], first && p.start == 0)
		}
	}
}

// subWords pre-tokenizes normalized text and encodes each pre-token.
func (e *encoder) subWords(s string, first bool) {
	if s == "" {
		return
	}
	pieces := append(e.pieces[:0], piece{s, first})
	for _, f := range e.t.sub.preTokenizers {
		next := e.pieces2[:0]
		for _, p := range pieces {
			next = f(p, next)
		}
		pieces, e.pieces2 = next, pieces
	}
	e.pieces = pieces
	for _, p := range pieces {
		if p.text != "" && e.err == nil {
			e.subWord(p.text)
		}
	}
}

// subWord appends the tokens of one pre-token, through the cache.
func (e *encoder) subWord(w string) {
	if ent, ok := e.cache[w]; ok {
		e.ids = append(e.ids, e.arena[ent.lo:ent.hi]...)
		return
	}
	first := len(e.ids)
	var err error
	if m := e.t.sub.unigram; m != nil {
		e.ids, err = m.encode(w, &e.uni, e.ids)
	} else {
		e.ids, e.wpBuf, err = e.t.sub.wordPiece.encode(w, e.wpBuf, e.ids)
	}
	if err != nil {
		e.err = fmt.Errorf("tokenizer: encode: %w", err)
		return
	}
	if len(w) > maxCachedWord {
		return
	}
	if len(e.cache) >= maxCached {
		clear(e.cache)
		e.arena = e.arena[:0]
	}
	lo := len(e.arena)
	e.arena = append(e.arena, e.ids[first:]...)
	e.cache[strings.Clone(w)] = cacheEntry{int32(lo), int32(len(e.arena))}
}

// subDecode is Decode for the pipeline: the tokens' strings (an added
// token's content, else the model's token), without the special ones when
// skipSpecial, through the decoders, joined.
func (t *Tokenizer) subDecode(ids []int, skipSpecial bool) (string, error) {
	p := t.sub
	tokens := make([]string, 0, len(ids))
	for i, id := range ids {
		var tok string
		if a, ok := t.addedByID[id]; ok {
			tok = a.Content
		} else if id >= 0 && id < len(p.tokens) && (p.tokens[id] != "" || p.unigram != nil) {
			tok = p.tokens[id]
		} else {
			return "", fmt.Errorf("tokenizer: decode: id %d at position %d is not in the vocabulary (size %d)", id, i, t.vocabSize)
		}
		if skipSpecial && p.special[tok] {
			continue
		}
		tokens = append(tokens, tok)
	}
	if len(p.decoders) == 0 {
		return strings.Join(tokens, " "), nil
	}
	for _, d := range p.decoders {
		tokens = d(tokens)
	}
	return strings.Join(tokens, ""), nil
}
