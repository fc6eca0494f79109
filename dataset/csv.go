package dataset

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"slices"
)

// csvSource reads comma- or tab-separated values with a header row. Every
// cell is text; an empty cell is the empty string (CSV has no null).
type csvSource struct {
	path   string
	r      *csv.Reader
	header []string
	prog   func() float64
}

func newCSVSource(path string, in *bufio.Reader, tabs bool, prog func() float64) (*csvSource, error) {
	r := csv.NewReader(in)
	if tabs {
		r.Comma = '\t'
	}
	r.ReuseRecord = true
	s := &csvSource{path: path, r: r, prog: prog}
	header, err := r.Read()
	if err == io.EOF {
		return s, nil // an empty file: no columns, no rows
	}
	if err != nil {
		return nil, fmt.Errorf("dataset: %s: header: %w", path, err)
	}
	s.header = slices.Clone(header)
	s.header[0] = string(bytes.TrimPrefix([]byte(s.header[0]), utf8BOM))
	seen := map[string]bool{}
	for _, h := range s.header {
		if seen[h] {
			return nil, fmt.Errorf("dataset: %s:1: column %q appears twice in the header", path, h)
		}
		seen[h] = true
	}
	return s, nil
}

func (s *csvSource) columns() []string {
	if s.header == nil {
		return []string{}
	}
	return s.header
}

func (s *csvSource) progress() float64 { return s.prog() }
func (s *csvSource) close() error      { return nil }

func (s *csvSource) next() (row, error) {
	if s.header == nil {
		return row{}, io.EOF
	}
	rec, err := s.r.Read()
	if err == io.EOF {
		return row{}, io.EOF
	}
	if pe, ok := err.(*csv.ParseError); ok {
		// A malformed record; the reader goes on after it.
		return row{}, &RowError{Path: s.path, Line: pe.StartLine, Err: pe.Err}
	}
	if err != nil {
		return row{}, fmt.Errorf("dataset: %s: %w", s.path, err)
	}
	line, _ := s.r.FieldPos(0)
	if len(rec) != len(s.header) {
		// encoding/csv reports this as a ParseError; kept for safety.
		return row{}, &RowError{Path: s.path, Line: line, Err: errors.New("wrong number of fields")}
	}
	values := make(map[string]string, len(rec))
	for i, v := range rec {
		values[s.header[i]] = v
	}
	return row{line: line, values: values}, nil
}
