package dataset

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"strings"
)

// Record is one example of a data set.
type Record struct {
	ID       string            // the data's own id, or "file:line" (see the package doc)
	Text     string            // what is embedded and trained on, built by the schema
	Language string            // normalised language code (NormalizeLanguage); may be empty
	Source   string            // "path:N", N the line (JSONL, CSV) or the 1-based row (Parquet)
	Fields   map[string]string // every column of the row as text; arrays and objects as JSON (see the package doc)
	Messages []Message         // the conversation, for the chat schema; nil otherwise
}

// Options say how to read a file. The zero value reads any supported file
// with an automatically chosen schema and stops at the first bad row.
type Options struct {
	Schema   Schema // "" or SchemaAuto: chosen by the columns present
	Format   Format // "": from the file name or its first bytes
	Language string // the language of records whose data names none
	SkipBad  bool   // count and skip bad rows instead of failing
}

// RowError is a row that cannot be read or does not fit the schema.
type RowError struct {
	Path string
	Line int  // the line (JSONL, CSV) or 1-based row (Parquet)
	Row  bool // Line counts Parquet rows, not lines
	Err  error
}

func (e *RowError) Error() string {
	if e.Row {
		return fmt.Sprintf("dataset: %s: row %d: %v", e.Path, e.Line, e.Err)
	}
	return fmt.Sprintf("dataset: %s:%d: %v", e.Path, e.Line, e.Err)
}

func (e *RowError) Unwrap() error { return e.Err }

// row is one row as a source reads it: its scalar values as text, and the
// names of values that are JSON arrays or objects (kept as JSON).
type row struct {
	line   int
	values map[string]string
	nested map[string]bool
}

// source is one file format.
type source interface {
	// columns returns the column names, or nil when each row has its own
	// (JSON Lines).
	columns() []string
	// next returns the next row, io.EOF after the last, a *RowError for a
	// row that cannot be read (the next call goes on after it) and any
	// other error when the file itself cannot be read further.
	next() (row, error)
	// progress returns how much of the file has been read, in [0, 1].
	progress() float64
	close() error
}

// Reader streams the records of one file. Use it like bufio.Scanner:
//
//	for r.Next() {
//		rec := r.Record()
//	}
//	if err := r.Err(); err != nil { ... }
type Reader struct {
	path     string
	opts     Options
	src      source
	schema   Schema
	base     string // the file's base name, for IDs
	fallback string // the language of records whose data names none
	rec      Record
	err      error
	skipped  int
	firstBad error
	cleanup  []func() error
}

// Open opens a data set file for reading. With SchemaAuto, the schema of a
// CSV or Parquet file is chosen here; that of a JSON Lines file by its
// first record.
func Open(path string, opts Options) (*Reader, error) {
	schema := opts.Schema
	if schema == "" {
		schema = SchemaAuto
	}
	if _, err := ParseSchema(string(schema)); err != nil {
		return nil, fmt.Errorf("dataset: %w", err)
	}
	r := &Reader{path: path, opts: opts, schema: schema, base: filepath.Base(path)}
	src, cleanup, err := openSource(path, opts.Format)
	if err != nil {
		return nil, err
	}
	r.src, r.cleanup = src, cleanup
	if cols := src.columns(); schema == SchemaAuto && len(cols) > 0 {
		if r.schema, err = DetectSchema(cols); err != nil {
			r.Close()
			return nil, fmt.Errorf("dataset: %s: %w", path, err)
		}
	}
	if err := r.checkColumns(); err != nil {
		r.Close()
		return nil, err
	}
	r.fallback = r.fallbackLanguage()
	return r, nil
}

// checkColumns fails when a file with a known column list lacks a column
// its schema requires: every row would be bad.
func (r *Reader) checkColumns() error {
	cols := r.src.columns()
	if len(cols) == 0 || r.schema == SchemaAuto {
		return nil // no column list, or an empty file
	}
	have := map[string]bool{}
	for _, c := range cols {
		have[c] = true
	}
	for _, c := range r.schema.required() {
		if !have[c] {
			return fmt.Errorf("dataset: %s: schema %s needs a column %q; the file has %s", r.path, r.schema, c, strings.Join(cols, ", "))
		}
	}
	return nil
}

// fallbackLanguage is Options.Language, or for the benchmarks published
// one config per language, the name of the file's folder when it is an
// ISO 639-1 code.
func (r *Reader) fallbackLanguage() string {
	if r.opts.Language != "" {
		code, _ := NormalizeLanguage(r.opts.Language)
		return code
	}
	if r.schema != SchemaGlobalMMLU && r.schema != SchemaMMLUProX {
		return ""
	}
	dir := filepath.Base(filepath.Dir(r.path))
	if len(dir) == 2 && dir == strings.ToLower(dir) {
		if code, ok := NormalizeLanguage(dir); ok && len(code) == 2 {
			return code
		}
	}
	return ""
}

// Next advances to the next record and reports whether there is one.
func (r *Reader) Next() bool {
	if r.err != nil || r.src == nil {
		return false
	}
	for {
		rw, err := r.src.next()
		if err == io.EOF {
			return false
		}
		if err == nil {
			r.rec, err = r.build(rw)
		}
		var rowErr *RowError
		if errors.As(err, &rowErr) && r.opts.SkipBad {
			r.skipped++
			if r.firstBad == nil {
				r.firstBad = err
			}
			continue
		}
		if err != nil {
			r.err = err
			return false
		}
		return true
	}
}

// Record returns the record Next advanced to.
func (r *Reader) Record() Record { return r.rec }

// Err returns the error that stopped Next, or nil at the end of the file.
func (r *Reader) Err() error { return r.err }

// Schema returns the schema records are read with; for a JSON Lines file
// read with SchemaAuto, SchemaAuto until Next has read the first record.
func (r *Reader) Schema() Schema { return r.schema }

// Skipped returns how many bad rows were skipped (with Options.SkipBad)
// and the first of their errors.
func (r *Reader) Skipped() (n int, first error) { return r.skipped, r.firstBad }

// Progress returns how much of the file has been read, from 0 to 1: the
// share of its bytes (compressed bytes for a zstd file) or of its rows
// (Parquet).
func (r *Reader) Progress() float64 {
	if r.src == nil {
		return 1
	}
	return r.src.progress()
}

// Close releases the file and any temporary file.
func (r *Reader) Close() error {
	var errs []error
	if r.src != nil {
		errs = append(errs, r.src.close())
		r.src = nil
	}
	for i := len(r.cleanup) - 1; i >= 0; i-- {
		errs = append(errs, r.cleanup[i]())
	}
	r.cleanup = nil
	return errors.Join(errs...)
}

// build turns a row into a record by the schema, choosing the schema of a
// JSON Lines file from its first row.
func (r *Reader) build(rw row) (Record, error) {
	if r.schema == SchemaAuto {
		cols := make([]string, 0, len(rw.values))
		for c := range rw.values {
			cols = append(cols, c)
		}
		s, err := DetectSchema(cols)
		if err != nil {
			return Record{}, fmt.Errorf("dataset: %s:%d: %w", r.path, rw.line, err)
		}
		r.schema = s
		r.fallback = r.fallbackLanguage()
	}
	rec, err := r.schema.build(rw, r.fallback)
	if err != nil {
		return Record{}, &RowError{Path: r.path, Line: rw.line, Row: r.isParquet(), Err: err}
	}
	if rec.ID == "" {
		rec.ID = r.base + ":" + strconv.Itoa(rw.line)
	}
	rec.Source = r.path + ":" + strconv.Itoa(rw.line)
	rec.Fields = rw.values
	return rec, nil
}

func (r *Reader) isParquet() bool {
	_, ok := r.src.(*parquetSource)
	return ok
}

// ReadAll reads every record of a file; for files that fit in memory.
func ReadAll(path string, opts Options) ([]Record, error) {
	r, err := Open(path, opts)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	var recs []Record
	for r.Next() {
		recs = append(recs, r.Record())
	}
	return recs, r.Err()
}
