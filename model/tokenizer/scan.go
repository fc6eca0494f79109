package tokenizer

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
	"unsafe"
)

// A tokenizer.json of a 128k-200k vocabulary is about 10 MB, almost all of
// it the vocabulary object and the merges array. encoding/json decodes
// them through reflection with an allocation per entry (0.6 s for o200k);
// this scanner reads them in one pass, straight into compact tables: the
// token strings of the vocabulary share one byte arena. It accepts exactly
// JSON (RFC 8259) and reports the byte offset of what it rejects; the small
// rest of the file still goes through encoding/json.

// scanner walks a JSON text.
type scanner struct {
	b []byte
	i int
}

var errSyntax = errors.New("invalid JSON")

func (s *scanner) fail(what string) error {
	return fmt.Errorf("%w at byte %d: %s", errSyntax, s.i, what)
}

func (s *scanner) skipSpace() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// expect consumes the byte c after optional space.
func (s *scanner) expect(c byte) error {
	s.skipSpace()
	if s.i >= len(s.b) || s.b[s.i] != c {
		return s.fail(fmt.Sprintf("want %q", c))
	}
	s.i++
	return nil
}

// peek returns the next non-space byte, or 0 at the end.
func (s *scanner) peek() byte {
	s.skipSpace()
	if s.i >= len(s.b) {
		return 0
	}
	return s.b[s.i]
}

// str reads a string and appends its decoded bytes to dst.
func (s *scanner) str(dst []byte) ([]byte, error) {
	if err := s.expect('"'); err != nil {
		return dst, err
	}
	for {
		start := s.i
		for s.i < len(s.b) && s.b[s.i] != '"' && s.b[s.i] != '\\' && s.b[s.i] >= 0x20 {
			s.i++
		}
		dst = append(dst, s.b[start:s.i]...)
		if s.i >= len(s.b) {
			return dst, s.fail("unterminated string")
		}
		switch c := s.b[s.i]; {
		case c == '"':
			s.i++ // the input's UTF-8 was checked whole by members
			return dst, nil
		case c < 0x20:
			return dst, s.fail("control character in a string")
		}
		s.i++ // the backslash
		if s.i >= len(s.b) {
			return dst, s.fail("unterminated escape")
		}
		e := s.b[s.i]
		s.i++
		switch e {
		case '"', '\\', '/':
			dst = append(dst, e)
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'n':
			dst = append(dst, '\n')
		case 'r':
			dst = append(dst, '\r')
		case 't':
			dst = append(dst, '\t')
		case 'u':
			r, err := s.hex4()
			if err != nil {
				return dst, err
			}
			if utf16.IsSurrogate(r) {
				// A high surrogate followed by \u and a low one is one rune;
				// a lone surrogate becomes U+FFFD, as encoding/json does.
				if s.i+6 <= len(s.b) && s.b[s.i] == '\\' && s.b[s.i+1] == 'u' {
					save := s.i
					s.i += 2
					r2, err := s.hex4()
					if err != nil {
						return dst, err
					}
					if d := utf16.DecodeRune(r, r2); d != utf8.RuneError {
						r = d
					} else {
						s.i, r = save, utf8.RuneError
					}
				} else {
					r = utf8.RuneError
				}
			}
			dst = utf8.AppendRune(dst, r)
		default:
			return dst, s.fail(fmt.Sprintf("bad escape \\%c", e))
		}
	}
}

func (s *scanner) hex4() (rune, error) {
	if s.i+4 > len(s.b) {
		return 0, s.fail("short \\u escape")
	}
	v, err := strconv.ParseUint(string(s.b[s.i:s.i+4]), 16, 32)
	if err != nil {
		return 0, s.fail("bad \\u escape")
	}
	s.i += 4
	return rune(v), nil
}

// integer reads a JSON number that must be an integer.
func (s *scanner) integer() (int, error) {
	s.skipSpace()
	start := s.i
	for s.i < len(s.b) && (s.b[s.i] == '-' || s.b[s.i] >= '0' && s.b[s.i] <= '9' || s.b[s.i] == '.' || s.b[s.i] == 'e' || s.b[s.i] == 'E' || s.b[s.i] == '+') {
		s.i++
	}
	v, err := strconv.Atoi(string(s.b[start:s.i]))
	if err != nil {
		s.i = start
		return 0, s.fail("want an integer")
	}
	return v, nil
}

// skipValue steps over one JSON value and returns its bytes. Strings are
// checked as it goes; a value under 64 KiB is checked whole by
// encoding/json. Larger ones (the model, its vocabulary and merges) are
// checked by the parser that reads them.
func (s *scanner) skipValue() ([]byte, error) {
	s.skipSpace()
	start := s.i
	if s.i >= len(s.b) {
		return nil, s.fail("unexpected end")
	}
	switch s.b[s.i] {
	case '"':
		if err := s.skipString(); err != nil {
			return nil, err
		}
	case '{', '[':
		depth := 0
		for depth > 0 || s.i == start {
			if s.i >= len(s.b) {
				return nil, s.fail("unexpected end")
			}
			switch s.b[s.i] {
			case '"':
				if err := s.skipString(); err != nil {
					return nil, err
				}
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
			}
			s.i++
		}
	default: // a number, true, false or null
		for s.i < len(s.b) && !isDelimiter(s.b[s.i]) {
			s.i++
		}
	}
	return s.checked(start)
}

// skipString steps over a string without decoding it (the parser that
// reads the value later decodes and checks it).
func (s *scanner) skipString() error {
	s.i++ // the opening quote
	for {
		j := bytes.IndexByte(s.b[s.i:], '"')
		if j < 0 {
			return s.fail("unterminated string")
		}
		s.i += j + 1
		// The quote ends the string unless an odd number of backslashes
		// escapes it.
		n := 0
		for k := s.i - 2; k >= 0 && s.b[k] == '\\'; k-- {
			n++
		}
		if n%2 == 0 {
			return nil
		}
	}
}

func isDelimiter(c byte) bool {
	switch c {
	case ',', '}', ']', ':', ' ', '\t', '\n', '\r':
		return true
	}
	return false
}

// checked returns the value from start to the scanner, checked by
// encoding/json when it is small.
func (s *scanner) checked(start int) ([]byte, error) {
	raw := s.b[start:s.i]
	if len(raw) < 64<<10 && !json.Valid(raw) {
		return nil, fmt.Errorf("%w at byte %d", errSyntax, start)
	}
	return raw, nil
}

// object calls fn for each member of the object at the scanner, with the
// scanner on the member's value; fn must consume the value.
func (s *scanner) object(fn func(key string) error) error {
	if err := s.expect('{'); err != nil {
		return err
	}
	if s.peek() == '}' {
		s.i++
		return nil
	}
	var key []byte
	for {
		var err error
		if key, err = s.str(key[:0]); err != nil {
			return err
		}
		if err := s.expect(':'); err != nil {
			return err
		}
		if err := fn(string(key)); err != nil {
			return err
		}
		switch s.peek() {
		case ',':
			s.i++
		case '}':
			s.i++
			return nil
		default:
			return s.fail("want , or }")
		}
	}
}

// array calls fn for each element, with the scanner on it.
func (s *scanner) array(fn func(i int) error) error {
	if err := s.expect('['); err != nil {
		return err
	}
	if s.peek() == ']' {
		s.i++
		return nil
	}
	for n := 0; ; n++ {
		if err := fn(n); err != nil {
			return err
		}
		switch s.peek() {
		case ',':
			s.i++
		case ']':
			s.i++
			return nil
		default:
			return s.fail("want , or ]")
		}
	}
}

// end checks that only space follows.
func (s *scanner) end() error {
	if s.peek() != 0 {
		return s.fail("data after the value")
	}
	return nil
}

// members splits a JSON object into its members' raw values. A duplicated
// key keeps the last value, as encoding/json does. The whole text's UTF-8
// is checked here (checkUTF8), once: the scanner's strings rely on it.
func members(b []byte, checkUTF8 bool) (map[string]json.RawMessage, error) {
	if checkUTF8 && !utf8.Valid(b) {
		// encoding/json would replace invalid bytes; a tokenizer file with
		// them is damaged.
		return nil, fmt.Errorf("%w: invalid UTF-8", errSyntax)
	}
	s := &scanner{b: b}
	out := map[string]json.RawMessage{}
	err := s.object(func(key string) error {
		raw, err := s.skipValue()
		out[key] = raw
		return err
	})
	if err == nil {
		err = s.end()
	}
	return out, err
}

// unmarshalMembers decodes the members of an object, but those named in
// skip, into v with encoding/json (they are the small part of the file).
func unmarshalMembers(mem map[string]json.RawMessage, v any, skip ...string) error {
	small := make(map[string]json.RawMessage, len(mem))
	for k, raw := range mem {
		if !slices.Contains(skip, k) {
			small[k] = raw
		}
	}
	data, err := json.Marshal(small)
	if err != nil {
		return err
	}
	return json.Unmarshal(data, v)
}

// arena holds the bytes of many strings in a few large blocks.
type arena struct{ block []byte }

// str returns b as a string stored in the arena.
func (a *arena) str(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	if cap(a.block)-len(a.block) < len(b) {
		a.block = make([]byte, 0, max(1<<20, len(b)))
	}
	start := len(a.block)
	a.block = append(a.block, b...)
	return unsafe.String(&a.block[start], len(b))
}

// parseVocab reads the vocabulary object {"token": id, ...}.
func parseVocab(raw []byte) (map[string]int, error) {
	s := &scanner{b: raw}
	vocab := make(map[string]int, len(raw)/24)
	var ar arena
	var buf []byte
	if err := s.expect('{'); err != nil {
		return nil, err
	}
	if s.peek() == '}' {
		s.i++
		return vocab, s.end()
	}
	for {
		var err error
		if buf, err = s.str(buf[:0]); err != nil {
			return nil, err
		}
		if err := s.expect(':'); err != nil {
			return nil, err
		}
		id, err := s.integer()
		if err != nil {
			return nil, err
		}
		vocab[ar.str(buf)] = id
		switch s.peek() {
		case ',':
			s.i++
		case '}':
			s.i++
			return vocab, s.end()
		default:
			return nil, s.fail("want , or }")
		}
	}
}

// parseMerges reads merges in either on-disk form: ["a b", ...] (older
// files) or [["a", "b"], ...]. The pairs' strings share an arena.
func parseMerges(raw json.RawMessage) ([][2]string, error) {
	s := &scanner{b: raw}
	pairs := make([][2]string, 0, len(raw)/16)
	var ar arena
	var a, b []byte
	err := s.array(func(n int) error {
		var err error
		switch s.peek() {
		case '[':
			if err := s.expect('['); err != nil {
				return err
			}
			if a, err = s.str(a[:0]); err != nil {
				return err
			}
			if err := s.expect(','); err != nil {
				return err
			}
			if b, err = s.str(b[:0]); err != nil {
				return err
			}
			if err := s.expect(']'); err != nil {
				return fmt.Errorf("merges: entry %d is not a pair: %w", n+1, err)
			}
			pairs = append(pairs, [2]string{ar.str(a), ar.str(b)})
		case '"':
			if a, err = s.str(a[:0]); err != nil {
				return err
			}
			if len(a) >= 8 && string(a[:8]) == "#version" {
				return nil
			}
			sp := -1
			for i, c := range a {
				if c == ' ' {
					if sp >= 0 {
						sp = -2
						break
					}
					sp = i
				}
			}
			if sp < 0 {
				return fmt.Errorf("merges: line %d %q is not two tokens separated by one space", n+1, a)
			}
			pairs = append(pairs, [2]string{ar.str(a[:sp]), ar.str(a[sp+1:])})
		default:
			return fmt.Errorf("merges: neither [\"a b\", ...] nor [[\"a\", \"b\"], ...]: entry %d", n+1)
		}
		return nil
	})
	if err == nil {
		err = s.end()
	}
	if err != nil {
		return nil, fmt.Errorf("merges: %w", err)
	}
	return pairs, nil
}
