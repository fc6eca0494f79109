package dataset

import (
	"math"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/parquet-go/parquet-go"
)

// The matrix DuckDB wrote as FLOAT[], DOUBLE[] and FLOAT[4] columns.
func TestReadParquetVectorsDuckDB(t *testing.T) {
	var want []float32
	for i := range 5 {
		f := float32(i)
		want = append(want, f*0.5, -f, 0.25, f*f)
	}
	for _, col := range []string{"embedding", "embedding64", "embedding_fixed"} {
		v, err := ReadParquetVectors(fixture("embeddings.parquet"), col, []string{"id", "language"})
		if err != nil {
			t.Fatalf("%s: %v", col, err)
		}
		wantLabels := map[string][]string{"id": {"e0", "e1", "e2", "e3", "e4"}}
		if v.Rows != 5 || v.Dim != 4 || !reflect.DeepEqual(v.Data, want) || !reflect.DeepEqual(v.Labels, wantLabels) {
			t.Errorf("%s: %+v", col, v)
		}
	}
	v, err := ReadParquetVectors(fixture("embeddings.parquet"), "embedding", nil)
	if err != nil || len(v.Labels) != 0 || v.Rows != 5 {
		t.Errorf("without ids: %+v, %v", v, err)
	}
}

func TestReadParquetVectorsRoundTrip(t *testing.T) {
	type row struct {
		Key string    `parquet:"key"`
		Vec []float32 `parquet:"vec,list"`
		V64 []float64 `parquet:"v64"` // a legacy repeated field
	}
	var rows []row
	for i := range 37 {
		r := row{Key: "k" + string(rune('a'+i%26))}
		for j := range 6 {
			x := float32(i*10+j) / 7
			r.Vec = append(r.Vec, x)
			r.V64 = append(r.V64, float64(x))
		}
		rows = append(rows, r)
	}
	path := filepath.Join(t.TempDir(), "v.parquet")
	writeParquet(t, path, rows, parquet.MaxRowsPerRowGroup(5), parquet.Compression(&parquet.Zstd))
	for _, col := range []string{"vec", "v64"} {
		v, err := ReadParquetVectors(path, col, []string{"key"})
		if err != nil {
			t.Fatalf("%s: %v", col, err)
		}
		if keys := v.Labels["key"]; v.Rows != 37 || v.Dim != 6 || len(keys) != 37 || keys[30] != rows[30].Key {
			t.Fatalf("%s: %d x %d, keys %v", col, v.Rows, v.Dim, keys)
		}
		if cap(v.Data) != len(v.Data) {
			t.Errorf("%s: %d values in a slice of capacity %d: not reserved from the footer's row count", col, len(v.Data), cap(v.Data))
		}
		for i, r := range rows {
			if !reflect.DeepEqual(v.Data[i*6:(i+1)*6], r.Vec) {
				t.Errorf("%s row %d: %v, want %v", col, i, v.Data[i*6:(i+1)*6], r.Vec)
			}
		}
	}

	// Errors name the file, the row and the column.
	bad := []row{{Key: "a", Vec: []float32{1, 2}, V64: []float64{1, 2}}, {Key: "b", Vec: []float32{1, 2, 3}, V64: nil}}
	path = filepath.Join(t.TempDir(), "bad.parquet")
	writeParquet(t, path, bad)
	for _, tc := range []struct{ col, want string }{
		{"vec", `bad.parquet: row 2: "vec" has 3 values, the rows before 2`},
		{"v64", `bad.parquet: row 2: "v64" is null or empty`},
		{"key", `column "key" is STRING, want a list of FLOAT or DOUBLE`},
		{"nope", `no column "nope" (columns: key, vec, v64)`},
	} {
		_, err := ReadParquetVectors(path, tc.col, []string{"key"})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.col, err, tc.want)
		}
	}

	type nullable struct {
		Vec []*float32 `parquet:"vec,list"`
	}
	one := float32(1)
	path = filepath.Join(t.TempDir(), "null.parquet")
	writeParquet(t, path, []nullable{{Vec: []*float32{&one, nil}}})
	if _, err := ReadParquetVectors(path, "vec", nil); err == nil || !strings.Contains(err.Error(), `row 1: "vec" has a null element`) {
		t.Errorf("null element: %v", err)
	}
	nan := float32(math.NaN())
	path = filepath.Join(t.TempDir(), "nan.parquet")
	writeParquet(t, path, []nullable{{Vec: []*float32{&one, &nan}}})
	if _, err := ReadParquetVectors(path, "vec", nil); err == nil || !strings.Contains(err.Error(), `row 1: "vec"[1] is NaN`) {
		t.Errorf("NaN: %v", err)
	}
}

// The footer's row count reserves the vectors' memory only as far as the
// file could hold them: a forged count of a trillion rows must not
// allocate terabytes.
func TestVectorCapacity(t *testing.T) {
	for _, tc := range []struct {
		rows, size int64
		dim, want  int
	}{
		{37, 2000, 6, 222},
		{1000, 4000, 4, 4000},   // 16000 bytes of floats in 4000 of file: plausible
		{1001, 4000, 4, 0},      // more than four times the file
		{1e12, 1 << 20, 768, 0}, // a forged footer
		{0, 1 << 20, 768, 0},    // no count
		{-5, 1 << 20, 768, 0},   // a negative count
		{10, 1 << 20, 0, 0},     // no dimension yet
	} {
		if got := vectorCapacity(tc.rows, tc.size, tc.dim); got != tc.want {
			t.Errorf("vectorCapacity(%d rows, %d bytes, dim %d) = %d, want %d", tc.rows, tc.size, tc.dim, got, tc.want)
		}
	}
}
