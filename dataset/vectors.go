package dataset

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"

	"github.com/parquet-go/parquet-go"
)

// Vectors is a matrix of row vectors read from a data file, such as
// precomputed embeddings, with scalar columns of the same rows.
type Vectors struct {
	Rows, Dim int
	Data      []float32           // row-major, Rows x Dim
	Labels    map[string][]string // a requested scalar column's value per row ("" for null); nil when the file lacks it
}

// ReadParquetVectors reads a list column of FLOAT or DOUBLE (a list, a
// fixed-size list or a legacy repeated field) from a Parquet file, plain
// or zstd-compressed, as one vector per row, converted to float32; every
// row must hold a vector of the same length with no null, NaN or
// infinity. The scalar columns named in labels (ids, languages) are read
// alongside; one the file lacks is left out of Labels.
func ReadParquetVectors(path, column string, labels []string) (v *Vectors, err error) {
	defer recoverParquet(path, &err)
	src, cleanup, err := openSource(path, FormatParquet)
	if err != nil {
		return nil, err
	}
	ps := src.(*parquetSource)
	defer func() {
		ps.close()
		for i := len(cleanup) - 1; i >= 0; i-- {
			cleanup[i]()
		}
	}()

	schema := ps.file.Schema()
	var vecPath []string
	labelOf := map[int]string{} // leaf column -> label
	for i, p := range schema.Columns() {
		if p[0] == column {
			if vecPath != nil {
				return nil, fmt.Errorf("dataset: %s: column %q is a group of several columns, want a list of numbers", path, column)
			}
			vecPath = p
		}
		if ps.leaf[i] != "" && slices.Contains(labels, ps.leaf[i]) {
			labelOf[i] = ps.leaf[i]
		}
	}
	if vecPath == nil {
		return nil, fmt.Errorf("dataset: %s: no column %q (columns: %s)", path, column, strings.Join(ps.cols, ", "))
	}
	leaf, _ := schema.Lookup(vecPath...)
	kind := leaf.Node.Type().Kind()
	if leaf.MaxRepetitionLevel != 1 || (kind != parquet.Float && kind != parquet.Double) {
		return nil, fmt.Errorf("dataset: %s: column %q is %v, want a list of FLOAT or DOUBLE", path, column, leaf.Node.Type())
	}

	v = &Vectors{Labels: map[string][]string{}}
	for _, name := range labelOf {
		v.Labels[name] = []string{}
	}
	row := map[string]string{}
	var vec []float32
	for {
		if err := ps.fill(); err == io.EOF {
			break
		} else if err != nil {
			return nil, err
		}
		for _, r := range ps.buf[:ps.n] {
			ps.row++
			vec = vec[:0]
			clear(row)
			null := false
			for _, val := range r {
				switch val.Column() {
				case leaf.ColumnIndex:
					if val.DefinitionLevel() < leaf.MaxDefinitionLevel {
						null = true // a null or empty list, or a null element
						continue
					}
					x := val.Double()
					if kind == parquet.Float {
						x = float64(val.Float())
					}
					vec = append(vec, float32(x))
				default:
					if name, ok := labelOf[val.Column()]; ok && !val.IsNull() {
						row[name] = val.String()
					}
				}
			}
			switch {
			case null && len(vec) == 0:
				return nil, fmt.Errorf("dataset: %s: row %d: %q is null or empty", path, ps.row, column)
			case null:
				return nil, fmt.Errorf("dataset: %s: row %d: %q has a null element", path, ps.row, column)
			case v.Rows == 0:
				v.Dim = len(vec)
				v.Data = make([]float32, 0, vectorCapacity(ps.numRows, ps.file.Size(), v.Dim))
			case len(vec) != v.Dim:
				return nil, fmt.Errorf("dataset: %s: row %d: %q has %d values, the rows before %d", path, ps.row, column, len(vec), v.Dim)
			}
			for i, x := range vec {
				if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
					return nil, fmt.Errorf("dataset: %s: row %d: %q[%d] is %v", path, ps.row, column, i, x)
				}
			}
			v.Data = append(v.Data, vec...)
			v.Rows++
			for name := range v.Labels {
				v.Labels[name] = append(v.Labels[name], row[name])
			}
		}
		ps.pos = ps.n
	}
	return v, nil
}

// vectorCapacity is how many values to reserve for every row's vector of
// dim values: the footer's row count times dim, so that a large file is
// read into one allocation, not grown by copies that peak at twice its
// size. The footer is not trusted beyond what the file could hold: a count
// of more values than the file has bytes (four bytes of float32 per byte:
// random floats do not compress that well; constant ones do, and a forged
// footer would) is left to append's growth.
func vectorCapacity(numRows, fileSize int64, dim int) int {
	if numRows <= 0 || dim <= 0 || numRows > fileSize/int64(dim) {
		return 0
	}
	return int(numRows) * dim
}
