package tokenizer

import (
	"encoding/json"
	"fmt"
	"strings"
	"unicode"

	"golang.org/x/text/unicode/norm"
	"golang.org/x/text/unicode/rangetable"
)

// The normalizers of Unigram and WordPiece tokenizers (SentencePiece,
// XLM-RoBERTa, BERT): each is a function from text to text, applied in
// order. Byte-level BPE tokenizers keep their own NFC path (encoder.go),
// which also maps offsets back to the input.

type normalizeFunc func(s string) string

// HF tokenizers classifies characters for BertNormalizer and
// BertPreTokenizer with the unicode_categories crate (0.1.1), whose tables
// are Unicode 8.0: a character assigned since then (Adlam's marks, say) is
// in none of its categories, and the few characters whose category has
// changed since are in their old one.
var unicode8 = rangetable.Assigned("8.0.0")

// isControl8 is Cc, Cf or Co in Unicode 8.0.
func isControl8(r rune) bool {
	return unicode.In(r, unicode.Cc, unicode.Cf, unicode.Co) && unicode.Is(unicode8, r)
}

// isNonspacingMark8 is Mn in Unicode 8.0. U+1734 was Mn then; U+1885,
// U+1886 (Lo), U+A9BD (Mc) and U+111C9 (Po) were not.
func isNonspacingMark8(r rune) bool {
	switch r {
	case 0x1734:
		return true
	case 0x1885, 0x1886, 0xA9BD, 0x111C9:
		return false
	}
	return unicode.Is(unicode.Mn, r) && unicode.Is(unicode8, r)
}

// isPunctuation8 is P* in Unicode 8.0, when U+166D and U+111C9 were Po.
func isPunctuation8(r rune) bool {
	return r == 0x166D || r == 0x111C9 || unicode.Is(unicode.P, r) && unicode.Is(unicode8, r)
}

type normalizerJSON struct {
	Type                string            `json:"type"`
	Normalizers         []json.RawMessage `json:"normalizers"`
	PrecompiledCharsmap *string           `json:"precompiled_charsmap"`
	Pattern             *struct {
		String *string `json:"String"`
		Regex  *string `json:"Regex"`
	} `json:"pattern"`
	Content            *string `json:"content"`
	Prepend            *string `json:"prepend"`
	Left               *bool   `json:"left"`
	Right              *bool   `json:"right"`
	StripLeft          *bool   `json:"strip_left"`
	StripRight         *bool   `json:"strip_right"`
	CleanText          *bool   `json:"clean_text"`
	HandleChineseChars *bool   `json:"handle_chinese_chars"`
	StripAccents       *bool   `json:"strip_accents"`
	Lowercase          *bool   `json:"lowercase"`
}

// parseNormalizers reads the normalizer of a Unigram or WordPiece
// tokenizer.json into the functions it applies, in order.
func parseNormalizers(raw json.RawMessage) ([]normalizeFunc, error) {
	if isNull(raw) {
		return nil, nil
	}
	var n normalizerJSON
	if err := json.Unmarshal(raw, &n); err != nil {
		return nil, fmt.Errorf("normalizer: %w", err)
	}
	switch n.Type {
	case "Sequence":
		var out []normalizeFunc
		for _, step := range n.Normalizers {
			fs, err := parseNormalizers(step)
			if err != nil {
				return nil, err
			}
			out = append(out, fs...)
		}
		return out, nil
	case "NFC":
		return []normalizeFunc{norm.NFC.String}, nil
	case "NFD":
		return []normalizeFunc{norm.NFD.String}, nil
	case "NFKC":
		return []normalizeFunc{norm.NFKC.String}, nil
	case "NFKD":
		return []normalizeFunc{norm.NFKD.String}, nil
	case "Lowercase":
		return []normalizeFunc{lowercase}, nil
	case "StripAccents":
		return []normalizeFunc{func(s string) string {
			return strings.Map(func(r rune) rune {
				if unicode.Is(unicode.M, r) {
					return -1
				}
				return r
			}, s)
		}}, nil
	case "Strip":
		// Written strip_left/strip_right; "left"/"right" by older files.
		left, right := n.StripLeft, n.StripRight
		if left == nil {
			left = n.Left
		}
		if right == nil {
			right = n.Right
		}
		if left == nil || right == nil {
			return nil, fmt.Errorf("normalizer Strip: strip_left and strip_right are required")
		}
		l, r := *left, *right
		return []normalizeFunc{func(s string) string {
			if l {
				s = strings.TrimLeftFunc(s, unicode.IsSpace)
			}
			if r {
				s = strings.TrimRightFunc(s, unicode.IsSpace)
			}
			return s
		}}, nil
	case "Prepend":
		if n.Prepend == nil {
			return nil, fmt.Errorf("normalizer Prepend: prepend is required")
		}
		p := *n.Prepend
		return []normalizeFunc{func(s string) string {
			if s == "" {
				return s
			}
			return p + s
		}}, nil
	case "Replace":
		f, err := parseReplace(n)
		if err != nil {
			return nil, fmt.Errorf("normalizer Replace: %w", err)
		}
		return []normalizeFunc{f}, nil
	case "Precompiled":
		if n.PrecompiledCharsmap == nil {
			return nil, fmt.Errorf("normalizer Precompiled: precompiled_charsmap is required")
		}
		m, err := parsePrecompiled(*n.PrecompiledCharsmap)
		if err != nil {
			return nil, fmt.Errorf("normalizer Precompiled: %w", err)
		}
		return []normalizeFunc{func(s string) string {
			return string(m.normalize(s, make([]byte, 0, len(s)+8)))
		}}, nil
	case "BertNormalizer":
		return []normalizeFunc{bertNormalizer(n)}, nil
	}
	return nil, fmt.Errorf("normalizer %q is not supported (supported: Sequence, NFC, NFD, NFKC, NFKD, Lowercase, StripAccents, Strip, Prepend, Replace, Precompiled, BertNormalizer)", n.Type)
}

// parseReplace builds the Replace normalizer: every non-overlapping match
// of a literal string or a regular expression, leftmost first, becomes
// content.
func parseReplace(n normalizerJSON) (normalizeFunc, error) {
	if n.Pattern == nil || n.Content == nil {
		return nil, fmt.Errorf("pattern and content are required")
	}
	content := *n.Content
	switch {
	case n.Pattern.String != nil:
		old := *n.Pattern.String
		if old == "" {
			return nil, fmt.Errorf("an empty pattern is not supported")
		}
		return func(s string) string { return strings.ReplaceAll(s, old, content) }, nil
	case n.Pattern.Regex != nil:
		pat, err := compilePattern(*n.Pattern.Regex) // never matches the empty string
		if err != nil {
			return nil, err
		}
		return func(s string) string { return replacePattern(pat, s, content) }, nil
	}
	return nil, fmt.Errorf("pattern must be a String or a Regex")
}

func replacePattern(pat *pattern, s, content string) string {
	var b strings.Builder
	done := 0
	for pos := 0; pos < len(s); {
		end := pat.matchAt(s, pos)
		if end < 0 {
			_, size := decodeRune(s, pos)
			pos += size
			continue
		}
		b.WriteString(s[done:pos])
		b.WriteString(content)
		pos, done = end, end
	}
	if done == 0 {
		return s
	}
	b.WriteString(s[done:])
	return b.String()
}

// lowercase maps each character to its full lowercase form, as Rust's
// char::to_lowercase does: the same as Go's simple mapping except for
// U+0130, whose lowercase is two characters.
func lowercase(s string) string {
	return strings.Map(unicode.ToLower, strings.ReplaceAll(s, "\u0130", "i\u0307"))
}

// bertNormalizer is HF's BertNormalizer: clean_text drops NUL, U+FFFD and
// control characters (Cc, Cf, Co but tab, newline and carriage return) and
// turns every whitespace into a space; handle_chinese_chars puts spaces
// around CJK ideographs; strip_accents (by default, what lowercase is)
// decomposes (NFD) and drops nonspacing marks; lowercase lowercases.
func bertNormalizer(n normalizerJSON) normalizeFunc {
	clean := n.CleanText == nil || *n.CleanText
	chinese := n.HandleChineseChars == nil || *n.HandleChineseChars
	lower := n.Lowercase == nil || *n.Lowercase
	strip := lower
	if n.StripAccents != nil {
		strip = *n.StripAccents
	}
	return func(s string) string {
		if clean {
			s = strings.Map(func(r rune) rune {
				switch {
				case r == '\t' || r == '\n' || r == '\r':
					return ' '
				case r == 0 || r == 0xFFFD || isControl8(r):
					return -1
				case unicode.IsSpace(r):
					return ' '
				}
				return r
			}, s)
		}
		if chinese {
			var b strings.Builder
			for _, r := range s {
				if isChineseChar(r) {
					b.WriteByte(' ')
					b.WriteRune(r)
					b.WriteByte(' ')
				} else {
					b.WriteRune(r)
				}
			}
			s = b.String()
		}
		if strip {
			s = strings.Map(func(r rune) rune {
				if isNonspacingMark8(r) {
					return -1
				}
				return r
			}, norm.NFD.String(s))
		}
		if lower {
			s = lowercase(s)
		}
		return s
	}
}

// isChineseChar is BERT's test for a CJK ideograph (the CJK Unified
// Ideographs blocks and their extensions, and the compatibility blocks).
func isChineseChar(r rune) bool {
	return r >= 0x4E00 && r <= 0x9FFF || r >= 0x3400 && r <= 0x4DBF ||
		r >= 0x20000 && r <= 0x2A6DF || r >= 0x2A700 && r <= 0x2B73F ||
		r >= 0x2B740 && r <= 0x2B81F || r >= 0x2B920 && r <= 0x2CEAF ||
		r >= 0xF900 && r <= 0xFAFF || r >= 0x2F800 && r <= 0x2FA1F
}
