package safetensors

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// jsonReader walks JSON text that json.Valid has accepted, one value at a
// time. It exists because the standard library offers no fast way to see
// duplicate keys: Unmarshal silently keeps the last one, and Decoder.Token
// costs microseconds a token, tens of milliseconds for a header of
// thousands of tensors. Because the text is known to be valid, the reader
// only has to find where values start and end; it still checks every byte
// it relies on, so that no input can make it panic or read out of range.
type jsonReader struct {
	b []byte
	i int // the next byte to read
}

// newJSONReader checks that b is one valid JSON value, with only
// whitespace around it.
func newJSONReader(b []byte, what string) (*jsonReader, error) {
	if !json.Valid(b) {
		// Unmarshal says what is wrong and where.
		var raw json.RawMessage
		err := json.Unmarshal(b, &raw)
		var syntax *json.SyntaxError
		switch {
		case errors.As(err, &syntax):
			return nil, fmt.Errorf("invalid JSON in %s at byte %d: %w", what, syntax.Offset, err)
		case err == nil:
			err = errSyntax
		}
		return nil, fmt.Errorf("invalid JSON in %s: %w", what, err)
	}
	return &jsonReader{b: b}, nil
}

// errSyntax is what the reader reports where json.Valid should have
// refused the text; it cannot happen, but is an error rather than a panic.
var errSyntax = errors.New("invalid JSON")

// peek skips whitespace and returns the next byte, or 0 at the end.
func (r *jsonReader) peek() byte {
	for r.i < len(r.b) {
		switch c := r.b[r.i]; c {
		case ' ', '\t', '\n', '\r':
			r.i++
		default:
			return c
		}
	}
	return 0
}

// expect consumes the byte c, after whitespace.
func (r *jsonReader) expect(c byte) error {
	if r.peek() != c {
		return errSyntax
	}
	r.i++
	return nil
}

// atEnd reports whether only whitespace is left.
func (r *jsonReader) atEnd() bool { return r.peek() == 0 && r.i == len(r.b) }

// describe names the kind of the next value for error messages.
func (r *jsonReader) describe() string {
	switch r.peek() {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	case 0:
		return "nothing"
	}
	start := r.i
	lit := r.literal()
	r.i = start
	return "the number " + lit
}

// object reads an object, calling fn for each key with the reader at the
// key's value, which fn must consume. Duplicate keys are an error: the
// format forbids them.
func (r *jsonReader) object(what string, fn func(key string) error) error {
	if r.peek() != '{' {
		return fmt.Errorf("%s is %s, want a JSON object", what, r.describe())
	}
	r.i++
	if r.peek() == '}' {
		r.i++
		return nil
	}
	seen := map[string]bool{}
	for {
		key, err := r.string()
		if err != nil {
			return err
		}
		if seen[key] {
			return fmt.Errorf("duplicate key %q in %s", key, what)
		}
		seen[key] = true
		if err := r.expect(':'); err != nil {
			return err
		}
		if err := fn(key); err != nil {
			return err
		}
		switch r.peek() {
		case ',':
			r.i++
		case '}':
			r.i++
			return nil
		default:
			return errSyntax
		}
	}
}

// array reads an array, calling fn with the reader at each element, which
// fn must consume.
func (r *jsonReader) array(what string, fn func() error) error {
	if r.peek() != '[' {
		return fmt.Errorf("%s is %s, want an array", what, r.describe())
	}
	r.i++
	if r.peek() == ']' {
		r.i++
		return nil
	}
	for {
		if err := fn(); err != nil {
			return err
		}
		switch r.peek() {
		case ',':
			r.i++
		case ']':
			r.i++
			return nil
		default:
			return errSyntax
		}
	}
}

// string reads a string. Strings without escapes, nearly all of them, are
// sliced out directly; the others are decoded by encoding/json.
func (r *jsonReader) string() (string, error) {
	if r.peek() != '"' {
		return "", errSyntax
	}
	start := r.i + 1
	escaped := false
	for j := start; j < len(r.b); j++ {
		switch r.b[j] {
		case '\\':
			escaped = true
			j++ // the escaped byte cannot end the string
		case '"':
			r.i = j + 1
			if !escaped {
				return string(r.b[start:j]), nil
			}
			var s string
			if err := json.Unmarshal(r.b[start-1:j+1], &s); err != nil {
				return "", fmt.Errorf("invalid JSON string: %w", err)
			}
			return s, nil
		}
	}
	return "", errSyntax
}

// literal reads a number, true, false or null and returns its text.
func (r *jsonReader) literal() string {
	r.peek()
	start := r.i
	for r.i < len(r.b) && isLiteralByte(r.b[r.i]) {
		r.i++
	}
	return string(r.b[start:r.i])
}

func isLiteralByte(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || c == '+' || c == '-' || c == '.'
}

// skip consumes one value of any kind and returns its text.
func (r *jsonReader) skip() ([]byte, error) {
	r.peek()
	start := r.i
	depth := 0
	for {
		switch c := r.peek(); c {
		case '{', '[':
			depth++
			r.i++
		case '}', ']':
			depth--
			r.i++
		case ',', ':':
			if depth == 0 {
				return nil, errSyntax
			}
			r.i++
		case '"':
			if _, err := r.string(); err != nil {
				return nil, err
			}
		case 0:
			return nil, errSyntax
		default:
			if r.literal() == "" {
				return nil, errSyntax
			}
		}
		if depth < 0 {
			return nil, errSyntax
		}
		if depth == 0 {
			return r.b[start:r.i], nil
		}
	}
}

// decode consumes one value and decodes it into v with encoding/json,
// numbers as json.Number.
func (r *jsonReader) decode(v any) error {
	raw, err := r.skip()
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	return dec.Decode(v)
}
