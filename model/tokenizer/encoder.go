package tokenizer

import (
	"fmt"
	"sort"
	"strings"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// maxCached bounds an encoder's cache of pre-token encodings; the cache is
// emptied when it fills. Words longer than maxCachedWord are not cached.
const (
	maxCached     = 1 << 16
	maxCachedWord = 256
)

// An encoder holds the buffers and the pre-token cache of one goroutine's
// encoding. Each encoder is used by one goroutine at a time, so its cache
// needs no lock; idle encoders wait in the Tokenizer's free list.
type encoder struct {
	t      *Tokenizer
	ids    []int32
	spans  *[]Span
	splits []addedSplit
	norm   []addedSplit
	bpe    bpeScratch
	cache  map[string]cacheEntry
	arena  []int32 // token ids of the cached words

	err     error // of the Unigram or WordPiece model
	pieces  []piece
	pieces2 []piece
	uni     unigramScratch
	wpBuf   []byte

	nfcBuf    []byte
	alignNorm []int // boundaries of NFC segments in the normalized text...
	alignOrig []int // ...and where they start in the original text
}

type cacheEntry struct{ lo, hi int32 }

func (t *Tokenizer) getEncoder() *encoder {
	t.encMu.Lock()
	defer t.encMu.Unlock()
	if n := len(t.encoders); n > 0 {
		e := t.encoders[n-1]
		t.encoders = t.encoders[:n-1]
		return e
	}
	return &encoder{t: t, cache: make(map[string]cacheEntry)}
}

func (t *Tokenizer) putEncoder(e *encoder) {
	t.encMu.Lock()
	defer t.encMu.Unlock()
	t.encoders = append(t.encoders, e)
}

// encode tokenizes text into e.ids, and its spans into *spans when spans is
// not nil.
func (e *encoder) encode(text string, addSpecial bool, spans *[]Span) ([]int32, error) {
	if !utf8.ValidString(text) {
		return nil, fmt.Errorf("tokenizer: encode: text is not valid UTF-8 (at byte %d)", invalidOffset(text))
	}
	t := e.t
	e.ids, e.spans, e.err = e.ids[:0], spans, nil
	if addSpecial {
		for _, id := range t.prefix {
			e.emit(id, 0, 0)
		}
	}
	if t.rawAdded == nil {
		e.segment(text, 0)
	} else {
		e.splits = t.rawAdded.split(text, e.splits[:0])
		for _, s := range e.splits {
			if s.tok != nil {
				e.emit(int32(s.tok.ID), s.start, s.end)
			} else {
				e.segment(text[s.start:s.end], s.start)
			}
		}
	}
	if e.err != nil {
		return nil, e.err
	}
	if addSpecial {
		for _, id := range t.suffix {
			e.emit(id, 0, 0)
		}
	}
	return e.ids, nil
}

func invalidOffset(s string) int {
	for i, r := range s {
		if r == utf8.RuneError {
			if _, size := utf8.DecodeRuneInString(s[i:]); size == 1 {
				return i
			}
		}
	}
	return len(s)
}

func (e *encoder) emit(id int32, start, end int) {
	e.ids = append(e.ids, id)
	if e.spans != nil {
		*e.spans = append(*e.spans, Span{start, end})
	}
}

// segment encodes text between added tokens: normalize, split out the
// normalized added tokens, pre-tokenize, BPE. base is s's offset in the
// input.
func (e *encoder) segment(s string, base int) {
	t := e.t
	if t.sub != nil {
		e.subSegment(s, base == 0)
		return
	}
	n := s
	normalized := false
	if t.nfc && !norm.NFC.IsNormalString(s) {
		n = e.nfc(s)
		normalized = true
	}
	first := len(e.ids)
	if t.normAdded == nil {
		e.words(n, 0, 0)
	} else {
		parts := t.normAdded.split(n, e.norm[:0])
		e.norm = parts
		for _, p := range parts {
			if p.tok != nil {
				e.emit(int32(p.tok.ID), p.start, p.end)
			} else {
				e.words(n[p.start:p.end], 0, p.start)
			}
		}
	}
	if e.spans == nil {
		return
	}
	spans := (*e.spans)[first:]
	for i := range spans {
		if normalized {
			spans[i] = Span{e.origStart(spans[i].Start), e.origEnd(spans[i].End)}
		}
		spans[i].Start += base
		spans[i].End += base
	}
}

// nfc returns the NFC form of s and records how its segments align with s.
func (e *encoder) nfc(s string) string {
	var it norm.Iter
	it.InitString(norm.NFC, s)
	e.nfcBuf, e.alignNorm, e.alignOrig = e.nfcBuf[:0], e.alignNorm[:0], e.alignOrig[:0]
	for !it.Done() {
		e.alignNorm = append(e.alignNorm, len(e.nfcBuf))
		e.alignOrig = append(e.alignOrig, it.Pos())
		e.nfcBuf = append(e.nfcBuf, it.Next()...)
	}
	e.alignNorm = append(e.alignNorm, len(e.nfcBuf))
	e.alignOrig = append(e.alignOrig, len(s))
	return string(e.nfcBuf)
}

func nfcString(s string) string { return norm.NFC.String(s) }

// origStart maps an offset in the normalized text to the start of the
// original segment holding it; origEnd to the end of it.
func (e *encoder) origStart(p int) int {
	k := sort.SearchInts(e.alignNorm, p+1) - 1
	return e.alignOrig[max(k, 0)]
}

func (e *encoder) origEnd(p int) int {
	k := sort.SearchInts(e.alignNorm, p)
	return e.alignOrig[min(k, len(e.alignOrig)-1)]
}

// words runs the pre-tokenizer's split steps from level on and encodes each
// resulting pre-token. base is s's offset in the segment.
func (e *encoder) words(s string, level, base int) {
	if level == len(e.t.splits) {
		e.word(s, base)
		return
	}
	sp := &e.t.splits[level]
	gap := 0
	for pos := 0; pos < len(s); {
		end := sp.pat.matchAt(s, pos)
		if end < 0 {
			_, size := decodeRune(s, pos)
			pos += size
			continue
		}
		if gap < pos && sp.keepGaps {
			e.words(s[gap:pos], level+1, base+gap)
		}
		if sp.keepMatches {
			e.words(s[pos:end], level+1, base+pos)
		}
		pos, gap = end, end
	}
	if gap < len(s) && sp.keepGaps {
		e.words(s[gap:], level+1, base+gap)
	}
}

// word appends the tokens of one pre-token.
func (e *encoder) word(w string, base int) {
	first := len(e.ids)
	switch ent, ok := e.cache[w]; {
	case ok:
		e.ids = append(e.ids, e.arena[ent.lo:ent.hi]...)
	case len(w) > maxCachedWord || len(w) == 1:
		e.ids = e.t.model.encodeWord(w, &e.bpe, e.ids)
	default:
		e.ids = e.t.model.encodeWord(w, &e.bpe, e.ids)
		if len(e.cache) >= maxCached {
			clear(e.cache)
			e.arena = e.arena[:0]
		}
		lo := len(e.arena)
		e.arena = append(e.arena, e.ids[first:]...)
		e.cache[strings.Clone(w)] = cacheEntry{int32(lo), int32(len(e.arena))}
	}
	if e.spans != nil {
		at := base
		for _, id := range e.ids[first:] {
			n := len(e.t.tokenBytes[id])
			*e.spans = append(*e.spans, Span{at, at + n})
			at += n
		}
	}
}
