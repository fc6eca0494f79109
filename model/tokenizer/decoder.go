package tokenizer

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// The decoders of Unigram and WordPiece tokenizers. As in HF tokenizers,
// each decoder maps the list of token strings to a new list, and the last
// list is joined; without a decoder the tokens are joined with spaces.

type decodeFunc func(tokens []string) []string

type decoderJSON struct {
	Type     string            `json:"type"`
	Decoders []json.RawMessage `json:"decoders"`
	Prefix   *string           `json:"prefix"`
	Cleanup  *bool             `json:"cleanup"`
	Content  *string           `json:"content"`
	Start    int               `json:"start"`
	Stop     int               `json:"stop"`
	Pattern  *struct {
		String *string `json:"String"`
	} `json:"pattern"`
	preTokenizerJSON
}

func parseDecoders(raw json.RawMessage) ([]decodeFunc, error) {
	if isNull(raw) {
		return nil, nil
	}
	var d decoderJSON
	if err := json.Unmarshal(raw, &d); err != nil {
		return nil, fmt.Errorf("decoder: %w", err)
	}
	d.preTokenizerJSON.Type = d.Type
	switch d.Type {
	case "Sequence":
		var out []decodeFunc
		for _, step := range d.Decoders {
			fs, err := parseDecoders(step)
			if err != nil {
				return nil, err
			}
			out = append(out, fs...)
		}
		return out, nil
	case "Metaspace":
		m, err := parseMetaspace(d.preTokenizerJSON)
		if err != nil {
			return nil, fmt.Errorf("decoder: %w", err)
		}
		return []decodeFunc{m.decode}, nil
	case "WordPiece":
		prefix, cleanup := "##", true
		if d.Prefix != nil {
			prefix = *d.Prefix
		}
		if d.Cleanup != nil {
			cleanup = *d.Cleanup
		}
		return []decodeFunc{func(tokens []string) []string { return wordPieceDecode(tokens, prefix, cleanup) }}, nil
	case "ByteFallback":
		return []decodeFunc{byteFallbackDecode}, nil
	case "Fuse":
		return []decodeFunc{func(tokens []string) []string { return []string{strings.Join(tokens, "")} }}, nil
	case "Strip":
		if d.Content == nil || utf8.RuneCountInString(*d.Content) != 1 || d.Start < 0 || d.Stop < 0 {
			return nil, fmt.Errorf("decoder Strip: content must be one character, start and stop counts")
		}
		c, _ := utf8.DecodeRuneInString(*d.Content)
		return []decodeFunc{func(tokens []string) []string { return stripDecode(tokens, c, d.Start, d.Stop) }}, nil
	case "Replace":
		if d.Pattern == nil || d.Pattern.String == nil || *d.Pattern.String == "" || d.Content == nil {
			return nil, fmt.Errorf("decoder Replace: only a non-empty String pattern is supported")
		}
		old, content := *d.Pattern.String, *d.Content
		return []decodeFunc{func(tokens []string) []string {
			for i, t := range tokens {
				tokens[i] = strings.ReplaceAll(t, old, content)
			}
			return tokens
		}}, nil
	}
	return nil, fmt.Errorf("decoder %q is not supported (supported here: Sequence, Metaspace, WordPiece, ByteFallback, Fuse, Strip, Replace)", d.Type)
}

// decode turns the replacement character back into spaces, dropping those
// of the first token unless nothing was prepended.
func (m metaspace) decode(tokens []string) []string {
	for i, t := range tokens {
		if i == 0 && m.prepend != "never" {
			tokens[i] = strings.ReplaceAll(t, m.replacement, "")
		} else {
			tokens[i] = strings.ReplaceAll(t, m.replacement, " ")
		}
	}
	return tokens
}

// wordPieceDecode glues continuation pieces to the previous token and puts
// a space before the others; cleanup removes the space BERT's tokenization
// put before punctuation and English contractions.
func wordPieceDecode(tokens []string, prefix string, cleanup bool) []string {
	for i, t := range tokens {
		if i != 0 {
			if rest, ok := strings.CutPrefix(t, prefix); ok {
				t = rest
			} else {
				t = " " + t
			}
		}
		if cleanup {
			for _, r := range wordPieceCleanup {
				t = strings.ReplaceAll(t, r[0], r[1])
			}
		}
		tokens[i] = t
	}
	return tokens
}

// wordPieceCleanup is HF's cleanup, replacements applied one after another
// (not in one pass: " ' ." becomes " '." as in HF, not "'.").
var wordPieceCleanup = [][2]string{
	{" .", "."}, {" ?", "?"}, {" !", "!"}, {" ,", ","}, {" ' ", "'"}, {" n't", "n't"},
	{" 'm", "'m"}, {" do not", " don't"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"},
}

// byteFallbackDecode turns runs of <0xXX> tokens into the text their bytes
// spell, or into one U+FFFD per byte when they are not valid UTF-8.
func byteFallbackDecode(tokens []string) []string {
	var out []string
	var pending []byte
	flush := func() {
		if len(pending) == 0 {
			return
		}
		if utf8.Valid(pending) {
			out = append(out, string(pending))
		} else {
			for range pending {
				out = append(out, "\uFFFD")
			}
		}
		pending = pending[:0]
	}
	for _, t := range tokens {
		if len(t) == 6 && strings.HasPrefix(t, "<0x") && t[5] == '>' {
			// Rust's from_str_radix, which HF uses, accepts a plus sign.
			if b, err := strconv.ParseUint(strings.TrimPrefix(t[3:5], "+"), 16, 8); err == nil {
				pending = append(pending, byte(b))
				continue
			}
		}
		flush()
		out = append(out, t)
	}
	flush()
	return out
}

// stripDecode removes up to start leading and stop trailing c characters
// from every token.
func stripDecode(tokens []string, c rune, start, stop int) []string {
	for i, t := range tokens {
		rs := []rune(t)
		lo := 0
		for lo < start && lo < len(rs) && rs[lo] == c {
			lo++
		}
		hi := len(rs)
		for k := 0; k < stop && hi > lo && rs[hi-1] == c; k++ {
			hi--
		}
		tokens[i] = string(rs[lo:hi])
	}
	return tokens
}
