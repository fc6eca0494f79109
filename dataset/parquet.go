package dataset

import (
	"fmt"
	"io"

	"github.com/parquet-go/parquet-go"
)

// parquetSource reads the rows of a Parquet file, a batch at a time, so
// that memory holds one batch and the pages being decoded, never the file.
// Top-level scalar columns become values; lists and groups are left out.
type parquetSource struct {
	path    string
	file    *parquet.File
	groups  []parquet.RowGroup
	rows    parquet.Rows // of the row group being read; nil between groups
	cols    []string     // top-level column names, in schema order
	leaf    []string     // the top-level column of each leaf column, "" for a nested one
	buf     []parquet.Row
	pos, n  int
	row     int // rows returned
	numRows int64
}

// parquetBatch is how many rows are decoded at a time.
const parquetBatch = 64

func newParquetSource(path string, ra io.ReaderAt, size int64) (s *parquetSource, err error) {
	defer recoverParquet(path, &err)
	f, err := parquet.OpenFile(ra, size)
	if err != nil {
		return nil, fmt.Errorf("dataset: %s: %w", path, err)
	}
	s = &parquetSource{path: path, file: f, numRows: f.NumRows(), buf: make([]parquet.Row, parquetBatch)}
	for _, field := range f.Schema().Fields() {
		s.cols = append(s.cols, field.Name())
	}
	for _, p := range f.Schema().Columns() {
		name := ""
		if leaf, _ := f.Schema().Lookup(p...); len(p) == 1 && leaf.MaxRepetitionLevel == 0 {
			name = p[0]
		}
		s.leaf = append(s.leaf, name)
	}
	s.groups = f.RowGroups()
	return s, nil
}

// recoverParquet turns a panic of the Parquet decoder on a damaged file
// into an error naming the file: bad input must not crash the program.
func recoverParquet(path string, err *error) {
	if v := recover(); v != nil {
		*err = fmt.Errorf("dataset: %s: damaged Parquet file: %v", path, v)
	}
}

func (s *parquetSource) columns() []string { return s.cols }

func (s *parquetSource) progress() float64 {
	if s.numRows == 0 {
		return 1
	}
	return float64(s.row) / float64(s.numRows)
}

func (s *parquetSource) close() error {
	if s.rows == nil {
		return nil
	}
	err := s.rows.Close()
	s.rows = nil
	return err
}

func (s *parquetSource) next() (rw row, err error) {
	if s.pos == s.n {
		if err := s.fill(); err != nil {
			return row{}, err
		}
	}
	r := s.buf[s.pos]
	s.pos++
	s.row++
	values := make(map[string]string, len(s.cols))
	for _, v := range r {
		c := v.Column()
		if c < 0 || c >= len(s.leaf) || s.leaf[c] == "" || v.IsNull() {
			continue
		}
		values[s.leaf[c]] = v.String() // a copy: the row's bytes are reused
	}
	return row{line: s.row, values: values}, nil
}

// fill decodes the next batch of rows, going from one row group to the
// next; io.EOF after the last.
func (s *parquetSource) fill() (err error) {
	defer recoverParquet(s.path, &err)
	for {
		if s.rows == nil {
			if len(s.groups) == 0 {
				return io.EOF
			}
			s.rows = s.groups[0].Rows()
			s.groups = s.groups[1:]
		}
		n, err := s.rows.ReadRows(s.buf)
		s.pos, s.n = 0, n
		if n > 0 {
			return nil // an io.EOF with rows comes back on the next call
		}
		if err != nil && err != io.EOF {
			return fmt.Errorf("dataset: %s: row %d: %w", s.path, s.row+1, err)
		}
		if err := s.close(); err != nil {
			return fmt.Errorf("dataset: %s: %w", s.path, err)
		}
	}
}
