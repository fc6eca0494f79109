package tokenizer

import (
	"sort"
	"strings"
	"unicode"
	"unicode/utf8"
)

// addedToken is an entry of tokenizer.json's added_tokens.
type addedToken struct {
	ID         int    `json:"id"`
	Content    string `json:"content"`
	SingleWord bool   `json:"single_word"`
	LStrip     bool   `json:"lstrip"`
	RStrip     bool   `json:"rstrip"`
	Normalized bool   `json:"normalized"`
	Special    bool   `json:"special"`

	// match is the text the token is found as: its content, or for a
	// normalized token under the NFC normalizer, the NFC form of it.
	match string
}

// addedMatcher finds added tokens in text the way HF tokenizers'
// AddedVocabulary does: an Aho-Corasick scan with leftmost-longest
// semantics, then the single_word, lstrip and rstrip rules on each match.
// Added tokens are few and mostly start with '<', so candidates are indexed
// by their first byte and tried longest first.
type addedMatcher struct {
	byFirst [256][]*addedToken
	first   [256]bool
}

func newAddedMatcher(tokens []*addedToken) *addedMatcher {
	m := &addedMatcher{}
	for _, t := range tokens {
		c := t.match[0]
		m.byFirst[c] = append(m.byFirst[c], t)
		m.first[c] = true
	}
	for i := range m.byFirst {
		c := m.byFirst[i]
		sort.SliceStable(c, func(a, b int) bool { return len(c[a].match) > len(c[b].match) })
	}
	return m
}

// addedSplit is a piece of text: an added token (tok != nil) or plain text.
type addedSplit struct {
	start, end int
	tok        *addedToken
}

// split cuts s into plain text and added tokens, appending to out.
func (m *addedMatcher) split(s string, out []addedSplit) []addedSplit {
	done := 0 // end of the last emitted piece
	for i := 0; i < len(s); {
		if !m.first[s[i]] {
			i++
			continue
		}
		var tok *addedToken
		for _, t := range m.byFirst[s[i]] {
			if strings.HasPrefix(s[i:], t.match) {
				tok = t
				break
			}
		}
		if tok == nil {
			i++
			continue
		}
		start, stop := i, i+len(tok.match)
		// The next match is searched after this one whether or not it is
		// kept, as Aho-Corasick's non-overlapping iteration does.
		i = stop
		if tok.SingleWord && (start > 0 && endsWithWord(s[:start]) || stop < len(s) && startsWithWord(s[stop:])) {
			continue
		}
		if tok.LStrip {
			start = max(len(strings.TrimRightFunc(s[:start], unicode.IsSpace)), done)
		}
		if tok.RStrip {
			stop = len(s) - len(strings.TrimLeftFunc(s[stop:], unicode.IsSpace))
			i = max(i, stop)
		}
		if done < start {
			out = append(out, addedSplit{start: done, end: start})
		}
		out = append(out, addedSplit{start: start, end: stop, tok: tok})
		done = stop
	}
	if done < len(s) {
		out = append(out, addedSplit{start: done, end: len(s)})
	}
	return out
}

// isWordRune is the Rust regex crate's \w: Alphabetic (letters, Nl and
// Other_Alphabetic), marks, decimal digits, connector punctuation and the
// joiners.
func isWordRune(r rune) bool {
	return unicode.In(r, unicode.L, unicode.Nl, unicode.Other_Alphabetic, unicode.M, unicode.Nd, unicode.Pc, unicode.Join_Control)
}

func endsWithWord(s string) bool {
	r, _ := utf8.DecodeLastRuneInString(s)
	return isWordRune(r)
}

func startsWithWord(s string) bool {
	r, _ := utf8.DecodeRuneInString(s)
	return isWordRune(r)
}
