package dataset

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"unicode/utf8"
)

// jsonlSource reads JSON Lines: one JSON object per line.
type jsonlSource struct {
	path  string
	lines *JSONLines
	prog  func() float64
}

func newJSONLSource(path string, in *bufio.Reader, prog func() float64) *jsonlSource {
	return &jsonlSource{path: path, lines: NewJSONLines(in, path), prog: prog}
}

func (s *jsonlSource) columns() []string { return nil }
func (s *jsonlSource) progress() float64 { return s.prog() }
func (s *jsonlSource) close() error      { return nil }
func (s *jsonlSource) rowError(err error) error {
	return &RowError{Path: s.path, Line: s.lines.Line(), Err: err}
}

// next returns the next object; blank lines, such as a trailing one, hold
// no record.
func (s *jsonlSource) next() (row, error) {
	if !s.lines.Next() {
		if err := s.lines.Err(); err != nil {
			return row{}, fmt.Errorf("dataset: %w", err)
		}
		return row{}, io.EOF
	}
	values, nested, err := parseObject(s.lines.Bytes())
	if err != nil {
		return row{}, s.rowError(err)
	}
	return row{line: s.lines.Line(), values: values, nested: nested}, nil
}

// parseObject decodes one JSON object into its scalar values as text and
// its arrays and objects as JSON.
func parseObject(b []byte) (values map[string]string, nested map[string]bool, err error) {
	if b[0] == '[' {
		return nil, nil, errors.New("not a JSON object (JSON Lines hold one object per line; a file that is one JSON array is not read)")
	}
	if b[0] != '{' {
		return nil, nil, errors.New("not a JSON object")
	}
	if !utf8.Valid(b) {
		return nil, nil, errors.New("not valid UTF-8") // the JSON decoder would silently replace the bytes with U+FFFD
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber() // keep numbers as written: ids like 1e3 or 007 stay text
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return nil, nil, fmt.Errorf("invalid JSON: %w", err)
	}
	if dec.InputOffset() != int64(len(b)) {
		return nil, nil, errors.New("invalid JSON: more data after the object")
	}
	values = make(map[string]string, len(m))
	for k, v := range m {
		switch v := v.(type) {
		case nil:
			// null is absent
		case string:
			values[k] = v
		case json.Number:
			values[k] = v.String()
		case bool:
			values[k] = strconv.FormatBool(v)
		default:
			j, err := json.Marshal(v)
			if err != nil {
				return nil, nil, fmt.Errorf("%q: %w", k, err)
			}
			values[k] = string(j)
			if nested == nil {
				nested = map[string]bool{}
			}
			nested[k] = true
		}
	}
	return values, nested, nil
}
