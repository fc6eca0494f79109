package dataset

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"unicode/utf8"
)

// maxLineBytes bounds one line of JSON Lines: a longer line (or a file
// that is not line-delimited) is an error naming it, not an unbounded
// read into memory. A variable so that a test can lower it.
var maxLineBytes = 1 << 30

// JSONLines reads JSON Lines one line at a time and keeps the line number
// for error messages. Every JSONL input of the module goes through it: data
// sets, prompt and score inputs, rows files, pool metadata, metrics. Use it
// like bufio.Scanner:
//
//	lines := dataset.NewJSONLines(f, path)
//	for lines.Next() {
//		var rec T
//		if err := lines.Decode(&rec); err != nil {
//			return err // "path line 3: invalid character ..."
//		}
//	}
//	if err := lines.Err(); err != nil { ... }
//
// Lines may be of any length up to 1 GiB; a UTF-8 byte order mark
// before the first line and white space around each line are dropped.
type JSONLines struct {
	in   *bufio.Reader
	name string
	line int
	b    []byte
	err  error
	// KeepBlank makes Next stop at blank lines too, which Decode then
	// refuses: for files whose line i describes row i, where skipping a
	// line would shift every row after it. By default blank lines (a
	// trailing one, say) are skipped.
	KeepBlank bool
}

// NewJSONLines reads r; name (a path, "stdin", or "" for none) starts
// every error message.
func NewJSONLines(r io.Reader, name string) *JSONLines {
	br, ok := r.(*bufio.Reader)
	if !ok {
		br = bufio.NewReaderSize(r, 1<<16)
	}
	return &JSONLines{in: br, name: name}
}

// Next advances to the next line and reports whether there is one. After
// false, Err says whether the input ended or failed.
func (r *JSONLines) Next() bool {
	for r.err == nil {
		b, err := r.readLine()
		if err == io.EOF && len(b) == 0 {
			return false
		}
		if err != nil && err != io.EOF {
			r.err = err
			return false
		}
		r.line++
		if r.line == 1 {
			b = bytes.TrimPrefix(b, utf8BOM)
		}
		r.b = bytes.TrimSpace(b)
		if len(r.b) > 0 || r.KeepBlank {
			return true
		}
	}
	return false
}

// readLine returns the next line, its newline included, refusing one
// longer than maxLineBytes.
func (r *JSONLines) readLine() ([]byte, error) {
	var long []byte
	for {
		b, err := r.in.ReadSlice('\n')
		if err != bufio.ErrBufferFull {
			if long == nil {
				return bytes.Clone(b), err
			}
			return append(long, b...), err
		}
		if len(long)+len(b) > maxLineBytes {
			return nil, fmt.Errorf("line %d is longer than %d bytes", r.line+1, maxLineBytes)
		}
		long = append(long, b...)
	}
}

// Bytes returns the current line without surrounding white space. It is
// valid until the next call to Next.
func (r *JSONLines) Bytes() []byte { return r.b }

// Line returns the number of the current line, counting from 1 (blank
// lines count).
func (r *JSONLines) Line() int { return r.line }

// Decode unmarshals the current line into v; an error names the line.
func (r *JSONLines) Decode(v any) error {
	if len(r.b) == 0 {
		return r.Errorf("blank line")
	}
	if !utf8.Valid(r.b) {
		return r.Errorf("not valid UTF-8") // json.Unmarshal would silently replace the bytes with U+FFFD
	}
	if err := json.Unmarshal(r.b, v); err != nil {
		return r.Errorf("%w", err)
	}
	return nil
}

// Errorf returns an error about the current line: "NAME line N: ..." (or
// "line N: ..." without a name).
func (r *JSONLines) Errorf(format string, a ...any) error {
	if r.name == "" {
		return fmt.Errorf("line %d: %w", r.line, fmt.Errorf(format, a...))
	}
	return fmt.Errorf("%s line %d: %w", r.name, r.line, fmt.Errorf(format, a...))
}

// Err returns the error that stopped Next, or nil at the end of the input.
func (r *JSONLines) Err() error {
	if r.err == nil {
		return nil
	}
	if r.name == "" {
		return fmt.Errorf("after line %d: %w", r.line, r.err)
	}
	return fmt.Errorf("%s: after line %d: %w", r.name, r.line, r.err)
}
