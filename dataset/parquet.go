package dataset

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"

	"github.com/parquet-go/parquet-go"
	"github.com/parquet-go/parquet-go/format"
)

// parquetSource reads the rows of a Parquet file, a batch at a time, so
// that memory holds one batch and the pages being decoded, never the file.
// Top-level scalar columns become values, lists of structs of scalars
// (chat messages) JSON; other lists and groups are left out.
type parquetSource struct {
	path    string
	file    *parquet.File
	groups  []parquet.RowGroup
	rows    parquet.Rows // of the row group being read; nil between groups
	cols    []string     // top-level column names, in schema order
	leaf    []string     // the top-level column of each leaf column, "" for a nested one
	lists   []*structList
	listOf  map[int]*structList // leaf column -> the list of structs it belongs to
	buf     []parquet.Row
	pos, n  int
	row     int // rows returned
	numRows int64
}

// parquetBatch is how many rows are decoded at a time.
const parquetBatch = 64

func newParquetSource(path string, ra io.ReaderAt, size int64) (s *parquetSource, err error) {
	defer recoverParquet(path, &err)
	if err := checkParquetFooter(ra, size); err != nil {
		return nil, fmt.Errorf("dataset: %s: %w", path, err)
	}
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
	s.listOf = map[int]*structList{}
	for _, field := range f.Schema().Fields() {
		if l := newStructList(f.Schema(), field); l != nil {
			s.lists = append(s.lists, l)
			for _, c := range l.cols {
				s.listOf[c] = l
			}
		}
	}
	s.groups = f.RowGroups()
	return s, nil
}

// checkParquetFooter checks that the footer length in the last 8 bytes
// (length, then the magic number) fits in the file: parquet.OpenFile
// allocates that length, up to 4 GiB, before it finds that the file is
// too short to hold it. A file too short for any footer is refused too:
// OpenFile read the 8-byte "PAR1PAR1" as a footer of 789 MiB (the fuzzer
// found it).
func checkParquetFooter(ra io.ReaderAt, size int64) error {
	if size < 12 {
		return fmt.Errorf("%d bytes: too short for a Parquet file (its magic number, footer length and magic number take 12)", size)
	}
	var tail [8]byte
	if _, err := ra.ReadAt(tail[:], size-8); err != nil {
		return err
	}
	// 4 bytes of magic number at the start, 8 of length and magic at the end.
	if n := int64(binary.LittleEndian.Uint32(tail[:4])); n > size-12 {
		return fmt.Errorf("the footer claims %d bytes, more than the %d-byte file holds (truncated or damaged)", n, size)
	}
	return nil
}

// structList decodes a top-level column that is a list of structs whose
// fields are scalars, such as chat messages, from the levels of its leaf
// columns, into a JSON array of objects. Two layouts are read: the LIST
// annotation's three levels (optional group F (LIST) { repeated group list
// { optional group element { fields } } }, written by Arrow, DuckDB and
// Spark) and a bare repeated group of fields (repeated group F { fields }).
type structList struct {
	name    string
	cols    []int    // leaf columns, one per field
	keys    []string // the field of each leaf column
	maxDef  []int    // per field: the definition level of a non-null value
	listDef int      // definition level from which the list is not null
	repDef  int      // definition level from which a value is an element
	elemDef int      // definition level from which the element is not null

	// The row being decoded.
	present bool
	elems   []map[string]any // nil for a null element
	count   []int            // values seen per field
}

// newStructList returns the decoder of a top-level field, or nil when the
// field is not a list of structs of scalars.
func newStructList(schema *parquet.Schema, field parquet.Field) *structList {
	if field.Leaf() {
		return nil
	}
	l := &structList{name: field.Name()}
	def := 0
	if field.Optional() || field.Repeated() {
		def++
	}
	var elem parquet.Node
	var path []string
	switch {
	case field.Repeated():
		l.repDef, l.elemDef = def, def
		elem, path = field, []string{field.Name()}
	case isListType(field):
		l.listDef = def
		inner := field.Fields()
		if len(inner) != 1 || !inner[0].Repeated() || inner[0].Leaf() {
			return nil
		}
		def++
		l.repDef = def
		rep := inner[0]
		path = []string{field.Name(), rep.Name()}
		elem = rep
		if sub := rep.Fields(); len(sub) == 1 && !sub[0].Leaf() {
			// Three levels: the repeated group holds the element.
			if sub[0].Repeated() {
				return nil
			}
			if sub[0].Optional() {
				def++
			}
			elem, path = sub[0], append(path, sub[0].Name())
		}
		l.elemDef = def
	default:
		return nil
	}
	for _, f := range elem.Fields() {
		if !f.Leaf() || f.Repeated() {
			return nil // a nested list or group: not a struct of scalars
		}
		maxDef := l.elemDef
		if f.Optional() {
			maxDef++
		}
		leaf, ok := schema.Lookup(append(path[:len(path):len(path)], f.Name())...)
		if !ok || leaf.MaxRepetitionLevel != 1 || leaf.MaxDefinitionLevel != maxDef {
			return nil // a layout this decoder does not understand
		}
		l.cols = append(l.cols, leaf.ColumnIndex)
		l.keys = append(l.keys, f.Name())
		l.maxDef = append(l.maxDef, maxDef)
	}
	if len(l.cols) == 0 {
		return nil
	}
	l.count = make([]int, len(l.cols))
	return l
}

// isListType reports whether a group carries the LIST annotation.
func isListType(n parquet.Node) bool {
	lt := n.Type().LogicalType()
	if lt == nil {
		return false
	}
	_, ok := lt.Value.(*format.ListType)
	return ok
}

// add decodes one value of the list's leaf column c.
func (l *structList) add(c int, v parquet.Value) {
	k := 0
	for k < len(l.cols) && l.cols[k] != c {
		k++
	}
	if k == len(l.cols) {
		return
	}
	def := v.DefinitionLevel()
	if def >= l.listDef {
		l.present = true
	}
	if def < l.repDef {
		return // a null or empty list
	}
	i := l.count[k]
	l.count[k]++
	for len(l.elems) <= i {
		l.elems = append(l.elems, nil)
	}
	if def < l.elemDef {
		return // a null element
	}
	if l.elems[i] == nil {
		l.elems[i] = make(map[string]any, len(l.cols))
	}
	var x any // JSON null
	if def == l.maxDef[k] {
		x = jsonValue(v)
	}
	l.elems[i][l.keys[k]] = x
}

// finish returns the row's list as JSON, or false when it is null, and
// resets the decoder for the next row.
func (l *structList) finish() (string, bool) {
	defer func() {
		l.present = false
		l.elems = l.elems[:0]
		clear(l.count)
	}()
	if !l.present {
		return "", false
	}
	list := make([]any, len(l.elems))
	for i, e := range l.elems {
		if e != nil {
			list[i] = e
		}
	}
	b, err := json.Marshal(list)
	if err != nil {
		return "", false // jsonValue makes only values json encodes
	}
	return string(b), true
}

// jsonValue is a Parquet scalar as a JSON value.
func jsonValue(v parquet.Value) any {
	switch v.Kind() {
	case parquet.Boolean:
		return v.Boolean()
	case parquet.Int32, parquet.Int64:
		return json.Number(v.String())
	case parquet.Float, parquet.Double:
		x := float64(v.Float())
		if v.Kind() == parquet.Double {
			x = v.Double()
		}
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return v.String()
		}
		return x
	}
	return v.String() // text, bytes, INT96
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
		if l := s.listOf[c]; l != nil {
			l.add(c, v)
			continue
		}
		if c < 0 || c >= len(s.leaf) || s.leaf[c] == "" || v.IsNull() {
			continue
		}
		values[s.leaf[c]] = v.String() // a copy: the row's bytes are reused
	}
	var nested map[string]bool
	for _, l := range s.lists {
		if j, ok := l.finish(); ok {
			values[l.name] = j
			if nested == nil {
				nested = map[string]bool{}
			}
			nested[l.name] = true
		}
	}
	return row{line: s.row, values: values, nested: nested}, nil
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
