package tokenizer

import (
	"encoding/json"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// The pre-tokenizers of Unigram and WordPiece tokenizers: Metaspace
// (SentencePiece's "▁" for spaces), WhitespaceSplit, BertPreTokenizer, and
// a Sequence of those. Each splits every piece of text into smaller ones;
// empty pieces are dropped, as HF tokenizers does.

// A piece is a pre-token. first is whether it begins the input text, which
// Metaspace's prepend_scheme "first" asks.
type piece struct {
	text  string
	first bool
}

type preTokenizeFunc func(p piece, out []piece) []piece

type preTokenizerJSON struct {
	Type           string            `json:"type"`
	Pretokenizers  []json.RawMessage `json:"pretokenizers"`
	Replacement    *string           `json:"replacement"`
	AddPrefixSpace *bool             `json:"add_prefix_space"`
	PrependScheme  *string           `json:"prepend_scheme"`
	Split          *bool             `json:"split"`
}

// metaspace is the Metaspace pre-tokenizer and decoder's configuration.
type metaspace struct {
	replacement string // one character
	prepend     string // "always", "first" or "never"
	split       bool
}

// parseMetaspace reads a Metaspace pre-tokenizer or decoder as HF does:
// prepend_scheme defaults to "always", an add_prefix_space of false (older
// files) means "never" and contradicts any other explicit scheme, split
// defaults to true.
func parseMetaspace(c preTokenizerJSON) (metaspace, error) {
	if c.Replacement == nil || utf8.RuneCountInString(*c.Replacement) != 1 {
		return metaspace{}, fmt.Errorf("metaspace: replacement must be one character")
	}
	m := metaspace{replacement: *c.Replacement, prepend: "always", split: true}
	if c.PrependScheme != nil {
		m.prepend = *c.PrependScheme
	}
	switch m.prepend {
	case "always", "first", "never":
	default:
		return metaspace{}, fmt.Errorf("metaspace: prepend_scheme %q is not one of always, first, never", m.prepend)
	}
	if c.AddPrefixSpace != nil && !*c.AddPrefixSpace {
		if m.prepend != "never" {
			return metaspace{}, fmt.Errorf("metaspace: add_prefix_space does not match declared prepend_scheme")
		}
	}
	if c.Split != nil {
		m.split = *c.Split
	}
	return m, nil
}

// parsePreTokenizers reads the pre-tokenizer of a Unigram or WordPiece
// tokenizer.json.
func parsePreTokenizers(raw json.RawMessage) ([]preTokenizeFunc, error) {
	if isNull(raw) {
		return nil, nil
	}
	var c preTokenizerJSON
	if err := json.Unmarshal(raw, &c); err != nil {
		return nil, fmt.Errorf("pre_tokenizer: %w", err)
	}
	switch c.Type {
	case "Sequence":
		var out []preTokenizeFunc
		for _, step := range c.Pretokenizers {
			fs, err := parsePreTokenizers(step)
			if err != nil {
				return nil, err
			}
			out = append(out, fs...)
		}
		return out, nil
	case "Metaspace":
		m, err := parseMetaspace(c)
		if err != nil {
			return nil, fmt.Errorf("pre_tokenizer: %w", err)
		}
		return []preTokenizeFunc{m.preTokenize}, nil
	case "WhitespaceSplit":
		return []preTokenizeFunc{splitWhitespace}, nil
	case "BertPreTokenizer":
		return []preTokenizeFunc{splitWhitespace, splitPunctuation}, nil
	}
	return nil, fmt.Errorf("pre_tokenizer %q is not supported (supported here: Sequence, Metaspace, WhitespaceSplit, BertPreTokenizer)", c.Type)
}

// preTokenize replaces spaces with the replacement character, prepends one
// as the scheme says, and splits before every replacement character.
func (m metaspace) preTokenize(p piece, out []piece) []piece {
	s := strings.ReplaceAll(p.text, " ", m.replacement)
	if !strings.HasPrefix(s, m.replacement) && (m.prepend == "always" || m.prepend == "first" && p.first) {
		s = m.replacement + s
	}
	if !m.split {
		return append(out, piece{s, p.first})
	}
	start := 0
	for {
		i := strings.Index(s[start+1:], m.replacement)
		if i < 0 {
			break
		}
		end := start + 1 + i
		out = append(out, piece{s[start:end], p.first && start == 0})
		start = end
	}
	return append(out, piece{s[start:], p.first && start == 0})
}

// splitWhitespace splits on whitespace and drops it.
func splitWhitespace(p piece, out []piece) []piece {
	s := p.text
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if unicode.IsSpace(r) {
			i += size
			continue
		}
		j := i + size
		for j < len(s) {
			r, size := utf8.DecodeRuneInString(s[j:])
			if unicode.IsSpace(r) {
				break
			}
			j += size
		}
		out = append(out, piece{s[i:j], p.first && i == 0})
		i = j
	}
	return out
}

// splitPunctuation isolates every punctuation character, as
// BertPreTokenizer does: ASCII punctuation and the P* categories of
// Unicode 8.0 (see isPunctuation8).
func splitPunctuation(p piece, out []piece) []piece {
	s := p.text
	start := 0
	for i, r := range s {
		if !isBertPunctuation(r) {
			continue
		}
		if start < i {
			out = append(out, piece{s[start:i], p.first && start == 0})
		}
		end := i + utf8.RuneLen(r)
		out = append(out, piece{s[i:end], p.first && i == 0})
		start = end
	}
	if start < len(s) {
		out = append(out, piece{s[start:], p.first && start == 0})
	}
	return out
}

func isBertPunctuation(r rune) bool {
	if r < 0x80 {
		return r >= '!' && r <= '/' || r >= ':' && r <= '@' || r >= '[' && r <= '`' || r >= '{' && r <= '~'
	}
	return isPunctuation8(r)
}
