package dataset

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
)

func TestJSONLines(t *testing.T) {
	long := strings.Repeat("x", 300<<10)                                               // several times the reader's buffer
	in := "\ufeff{\"a\": 1}\r\n\n   \n{\"a\": 2, \"s\": \"" + long + "\"}\n{\"a\": 3}" // BOM, CRLF, blank lines, no final newline
	lines := NewJSONLines(strings.NewReader(in), "f.jsonl")
	var got []int
	for lines.Next() {
		var rec struct {
			A int
			S string
		}
		if err := lines.Decode(&rec); err != nil {
			t.Fatal(err)
		}
		if rec.A == 2 && rec.S != long {
			t.Errorf("the long line decoded to %d bytes", len(rec.S))
		}
		got = append(got, rec.A, lines.Line())
	}
	if err := lines.Err(); err != nil || !slices.Equal(got, []int{1, 1, 2, 4, 3, 5}) {
		t.Errorf("values and lines %v, err %v; want 1 on line 1, 2 on line 4, 3 on line 5", got, err)
	}

	// Errors name the input and the line; blank lines count.
	lines = NewJSONLines(strings.NewReader("{}\n\nnot json\n"), "f.jsonl")
	for lines.Next() {
		var v map[string]any
		if err := lines.Decode(&v); err != nil {
			if !strings.HasPrefix(err.Error(), "f.jsonl line 3: invalid character") {
				t.Errorf("error %q", err)
			}
		}
	}
	// Invalid UTF-8 in a string is an error, not U+FFFD.
	lines = NewJSONLines(strings.NewReader("{\"s\": \"caf\xe9\"}\n"), "f.jsonl")
	if lines.Next() {
		var v map[string]any
		if err := lines.Decode(&v); err == nil || err.Error() != "f.jsonl line 1: not valid UTF-8" {
			t.Errorf("invalid UTF-8: %v (decoded %q)", err, v)
		}
	}
	if err := NewJSONLines(strings.NewReader(""), "").Errorf("bad %d", 7); err.Error() != "line 0: bad 7" {
		t.Errorf("unnamed error %q", err)
	}

	// KeepBlank stops at blank lines, and Decode refuses them.
	lines = NewJSONLines(strings.NewReader("{}\n\n{}\n"), "rows")
	lines.KeepBlank = true
	var errs []string
	for lines.Next() {
		var v map[string]any
		if err := lines.Decode(&v); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if len(errs) != 1 || errs[0] != "rows line 2: blank line" {
		t.Errorf("KeepBlank: errors %q", errs)
	}

	// A failing reader and a line over the limit stop Next with an error.
	lines = NewJSONLines(iotest.TimeoutReader(strings.NewReader(strings.Repeat("{}\n", 100000))), "r")
	n := 0
	for lines.Next() {
		n++
	}
	if err := lines.Err(); !errors.Is(err, iotest.ErrTimeout) || !strings.HasPrefix(err.Error(), "r: after line ") {
		t.Errorf("failing reader after %d lines: %v", n, err)
	}
	defer func(old int) { maxLineBytes = old }(maxLineBytes)
	maxLineBytes = 100 << 10
	lines = NewJSONLines(strings.NewReader("{}\n{\"s\": \""+long+"\"}\n"), "big")
	for lines.Next() {
	}
	if err := lines.Err(); err == nil || !strings.Contains(err.Error(), "line 2 is longer than") {
		t.Errorf("over-long line: %v", err)
	}
}
