package embed

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/compassml/compass/dataset"
	"github.com/compassml/compass/tensor"
	"github.com/compassml/compass/tensor/safetensors"
	"github.com/parquet-go/parquet-go"
)

const embedFixtures = "../../testdata/datasets"

// embedFixtureMatrix is the 5 x 4 matrix of the embeddings fixtures.
func embedFixtureMatrix() []float32 {
	var m []float32
	for i := range 5 {
		f := float32(i)
		m = append(m, f*0.5, -f, 0.25, f*f)
	}
	return m
}

func embedMatrixOf(t *testing.T, rows, cols int, v []float32) *tensor.Tensor {
	t.Helper()
	m, err := tensor.FromF32(v, rows, cols)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestNPY(t *testing.T) {
	// Files written by NumPy.
	for _, name := range []string{"embeddings-f4.npy", "embeddings-f8.npy"} {
		m, err := ReadNPY(filepath.Join(embedFixtures, name))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !reflect.DeepEqual(m.Shape(), []int{5, 4}) || !reflect.DeepEqual(m.F32(), embedFixtureMatrix()) {
			t.Errorf("%s: %v %v", name, m, m.F32())
		}
	}
	if _, err := ReadNPY(filepath.Join(embedFixtures, "embeddings-fortran.npy")); err == nil || !strings.Contains(err.Error(), "Fortran order") {
		t.Errorf("Fortran order: %v", err)
	}

	// Round trip, with odd sizes and the header padded to 64 bytes.
	dir := t.TempDir()
	for _, shape := range [][2]int{{3, 7}, {1, 1}, {0, 5}, {200, 33}} {
		v := make([]float32, shape[0]*shape[1])
		for i := range v {
			v[i] = float32(i)*0.37 - 11
		}
		path := filepath.Join(dir, "m.npy")
		if err := WriteNPY(path, embedMatrixOf(t, shape[0], shape[1], v)); err != nil {
			t.Fatal(err)
		}
		data, _ := os.ReadFile(path)
		if hl := int(binary.LittleEndian.Uint16(data[8:])); (10+hl)%64 != 0 || data[10+hl-1] != '\n' {
			t.Errorf("%v: header of %d bytes", shape, hl)
		}
		got, err := ReadNPY(path)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got.Shape(), shape[:]) || (len(v) > 0 && !reflect.DeepEqual(got.F32(), v)) {
			t.Errorf("%v: round trip gave %v", shape, got)
		}
	}

	// Bad files.
	header := func(dict string) []byte {
		h := append([]byte("\x93NUMPY\x01\x00"), 0, 0)
		binary.LittleEndian.PutUint16(h[8:], uint16(len(dict)))
		return append(h, dict...)
	}
	for name, tc := range map[string]struct {
		data []byte
		want string
	}{
		"1d":        {append(header("{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }\n"), make([]byte, 12)...), "want 2-D"},
		"int":       {append(header("{'descr': '<i4', 'fortran_order': False, 'shape': (1, 3), }\n"), make([]byte, 12)...), `dtype "<i4"`},
		"short":     {append(header("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }\n"), make([]byte, 12)...), "needs"},
		"not npy":   {[]byte("hello, world"), "not a .npy file"},
		"bad dict":  {header("{'descr' '<f4'}"), "want ':'"},
		"version 9": {[]byte("\x93NUMPY\x09\x00\x00\x00"), "format version 9.0"},
	} {
		path := filepath.Join(dir, "bad.npy")
		if err := os.WriteFile(path, tc.data, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := ReadNPY(path); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", name, err, tc.want)
		}
	}
	// Big-endian float64, as NumPy writes '>f8'.
	be := header("{'descr': '>f8', 'fortran_order': False, 'shape': (1, 2), }\n")
	be = binary.BigEndian.AppendUint64(be, math.Float64bits(1.5))
	be = binary.BigEndian.AppendUint64(be, math.Float64bits(-2))
	path := filepath.Join(dir, "be.npy")
	if err := os.WriteFile(path, be, 0o644); err != nil {
		t.Fatal(err)
	}
	if m, err := ReadNPY(path); err != nil || !reflect.DeepEqual(m.F32(), []float32{1.5, -2}) {
		t.Errorf("big-endian: %v %v", m, err)
	}
}

// NumPy reads what WriteNPY writes (when Debian's python3-numpy is there).
func TestNPYReadByNumPy(t *testing.T) {
	python := "/usr/bin/python3"
	if err := exec.Command(python, "-c", "import numpy").Run(); err != nil {
		t.Skip("no NumPy:", err)
	}
	path := filepath.Join(t.TempDir(), "m.npy")
	if err := WriteNPY(path, embedMatrixOf(t, 5, 4, embedFixtureMatrix())); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(python, "-c", `
import sys, numpy as np
m = np.load(sys.argv[1])
want = np.array([[i * 0.5, -i, 0.25, i * i] for i in range(5)], dtype='<f4')
assert m.dtype == np.float32 and m.flags['C_CONTIGUOUS'] and (m == want).all(), m
print('ok')
`, path).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "ok" {
		t.Errorf("NumPy: %v\n%s", err, out)
	}
}

func TestSaveLoadEmbeddings(t *testing.T) {
	dir := t.TempDir()
	e := &Embeddings{
		Vectors:  embedMatrixOf(t, 5, 4, embedFixtureMatrix()),
		Rows:     []Row{{"a", "en", "x.jsonl:1"}, {"b", "sw", "x.jsonl:2"}, {"c", "", "x.jsonl:3"}, {"d", "ary", "x.jsonl:4"}, {"e", "zh", "x.jsonl:5"}},
		Embedder: "model:/m#1234;pool=mean;maxlen=512",
	}
	for _, name := range []string{"e.safetensors", "e.npy"} {
		path := filepath.Join(dir, name)
		if err := Save(path, e); err != nil {
			t.Fatal(err)
		}
		got, err := Load(path, LoadOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got.Vectors.F32(), e.Vectors.F32()) || !reflect.DeepEqual(got.Rows, e.Rows) {
			t.Errorf("%s: %+v", name, got)
		}
		if name == "e.safetensors" && got.Embedder != e.Embedder {
			t.Errorf("%s: embedder %q", name, got.Embedder)
		}
	}
	rows, err := os.ReadFile(filepath.Join(dir, "e.rows.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	if first := strings.SplitN(string(rows), "\n", 2)[0]; first != `{"row":0,"id":"a","language":"en","source":"x.jsonl:1"}` {
		t.Errorf("rows file line 1: %s", first)
	}
	f, err := safetensors.Open(filepath.Join(dir, "e.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	if md := f.Metadata(); md["rows"] != "e.rows.jsonl" || md["count"] != "5" || md["format"] != "compass-embeddings" {
		t.Errorf("metadata %v", md)
	}
	f.Close()

	// Rows that do not match the matrix are an error.
	if err := os.WriteFile(filepath.Join(dir, "e.rows.jsonl"), rows[:len(rows)/2], 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(filepath.Join(dir, "e.npy"), LoadOptions{}); err == nil {
		t.Errorf("a rows file shorter than the matrix was accepted")
	}
	// An empty matrix (no records) saves and loads.
	empty := &Embeddings{Vectors: embedMatrixOf(t, 0, 32, nil), Rows: []Row{}}
	path := filepath.Join(dir, "empty.safetensors")
	if err := Save(path, empty); err != nil {
		t.Fatal(err)
	}
	if got, err := Load(path, LoadOptions{}); err != nil || !reflect.DeepEqual(got.Vectors.Shape(), []int{0, 32}) || len(got.Rows) != 0 {
		t.Errorf("empty: %+v, %v", got, err)
	}
	if err := Save(filepath.Join(dir, "e.csv"), e); err == nil {
		t.Errorf("unknown extension accepted")
	}
}

func TestLoadEmbeddingsSafetensorsDTypes(t *testing.T) {
	dir := t.TempDir()
	want := embedFixtureMatrix()
	f64 := make([]byte, 0, 8*len(want))
	for _, x := range want {
		f64 = binary.LittleEndian.AppendUint64(f64, math.Float64bits(float64(x)))
	}
	bf16 := tensor.New(tensor.BF16, 5, 4)
	if err := tensor.NewCPU().Copy(bf16, embedMatrixOf(t, 5, 4, want)); err != nil {
		t.Fatal(err)
	}
	entries := []safetensors.Entry{
		{Name: "vecs64", DType: safetensors.F64, Shape: []int{5, 4}, Data: f64},
		safetensors.EntryFromTensor("vecs16", bf16),
		{Name: "bias", DType: safetensors.F32, Shape: []int{4}, Data: make([]byte, 16)},
	}
	path := filepath.Join(dir, "x.safetensors")
	if err := safetensors.Write(path, entries, nil); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"vecs64", "vecs16"} {
		e, err := Load(path, LoadOptions{Tensor: name})
		if err != nil || !reflect.DeepEqual(e.Vectors.F32(), want) {
			t.Errorf("%s: %v, %v", name, e, err) // every value is exact in bf16
		}
	}
	if _, err := Load(path, LoadOptions{}); err == nil || !strings.Contains(err.Error(), "2 2-D tensors (vecs16, vecs64): name one") {
		t.Errorf("ambiguous: %v", err)
	}
	if _, err := Load(path, LoadOptions{Tensor: "bias"}); err == nil || !strings.Contains(err.Error(), "want 2-D") {
		t.Errorf("1-D: %v", err)
	}
	// NaN is refused.
	nan := embedFixtureMatrix()
	nan[6] = float32(math.NaN())
	path = filepath.Join(dir, "nan.npy")
	if err := WriteNPY(path, embedMatrixOf(t, 5, 4, nan)); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path, LoadOptions{}); err == nil || !strings.Contains(err.Error(), "row 1, column 2 is NaN") {
		t.Errorf("NaN: %v", err)
	}
	// So are rows without columns, which NumPy writes as (N, 0).
	path = filepath.Join(dir, "empty-rows.npy")
	if err := WriteNPY(path, embedMatrixOf(t, 3, 0, nil)); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path, LoadOptions{}); err == nil || !strings.Contains(err.Error(), "shape [3 0]: vectors of no dimensions") {
		t.Errorf("(3, 0): %v", err)
	}
}

func TestLoadEmbeddingsParquet(t *testing.T) {
	// Written by DuckDB: ids, no language.
	e, err := Load(filepath.Join(embedFixtures, "embeddings.parquet"), LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(e.Vectors.F32(), embedFixtureMatrix()) || len(e.Rows) != 5 || e.Rows[3].ID != "e3" || e.Rows[3].Language != "" {
		t.Errorf("DuckDB file: %+v", e.Rows)
	}
	if e, err := Load(filepath.Join(embedFixtures, "embeddings.parquet"), LoadOptions{Column: "embedding64"}); err != nil || !reflect.DeepEqual(e.Vectors.F32(), embedFixtureMatrix()) {
		t.Errorf("DOUBLE column: %v", err)
	}

	// Written by parquet-go, with Aya's language_code column.
	type row struct {
		Code string    `parquet:"language_code"`
		Emb  []float32 `parquet:"emb,list"`
	}
	rows := []row{{"eng", []float32{1, 0}}, {"arb", []float32{0, 1}}, {"ary", []float32{0.6, 0.8}}}
	path := filepath.Join(t.TempDir(), "pool.parquet")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	w := parquet.NewGenericWriter[row](f)
	if _, err := w.Write(rows); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	e, err = Load(path, LoadOptions{Column: "emb"})
	if err != nil {
		t.Fatal(err)
	}
	var langs []string
	for _, r := range e.Rows {
		langs = append(langs, r.Language)
	}
	if !reflect.DeepEqual(langs, []string{"en", "ar", "ary"}) || e.Rows[1].ID != "pool.parquet:2" {
		t.Errorf("rows %+v", e.Rows)
	}
	if _, err := Load(path, LoadOptions{Column: "emb", IDColumn: "uid"}); err == nil || !strings.Contains(err.Error(), `no column "uid"`) {
		t.Errorf("missing id column: %v", err)
	}
}

// Records reads a data set through an embedder into the matrix and
// its rows, and an empty data set into an empty matrix.
func TestEmbedRecords(t *testing.T) {
	inner := &embedCountingEmbedder{name: "fake", dim: 6}
	r, err := dataset.Open(filepath.Join(embedFixtures, "aya.jsonl.zst"), dataset.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	e, err := Records(context.Background(), r, inner, 6, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(e.Vectors.Shape(), []int{7, 6}) || len(e.Rows) != 7 || e.Rows[1].Language != "ar" || e.Rows[1].ID != "aya.jsonl.zst:2" || e.Embedder != "fake" {
		t.Errorf("aya: %v %+v", e.Vectors, e.Rows)
	}
	want, _ := inner.Embed([]string{"Mji mkuu wa Tanzania ni upi?\nDodoma ni mji mkuu wa Tanzania."})
	if !reflect.DeepEqual(e.Vectors.F32()[2*6:3*6], want[0]) {
		t.Errorf("row 2 is not the vector of record 3")
	}

	path := filepath.Join(t.TempDir(), "empty.jsonl")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	r2, err := dataset.Open(path, dataset.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	e, err = Records(context.Background(), r2, inner, 6, nil)
	if err != nil || !reflect.DeepEqual(e.Vectors.Shape(), []int{0, 6}) || len(e.Rows) != 0 {
		t.Errorf("empty: %+v, %v", e, err)
	}

	// A text that cannot be embedded is named by its record.
	path = filepath.Join(t.TempDir(), "bad.jsonl")
	if err := os.WriteFile(path, []byte("{\"text\": \"fine\"}\n{\"text\": \"bad\"}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r3, err := dataset.Open(path, dataset.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r3.Close()
	if _, err := Records(context.Background(), r3, inner, 6, nil); err == nil || !strings.Contains(err.Error(), "bad.jsonl:2: cannot embed") {
		t.Errorf("bad text: %v", err)
	}

	// A cancelled context stops it before the embedder sees a text.
	r4, err := dataset.Open(filepath.Join(embedFixtures, "aya.jsonl.zst"), dataset.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r4.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	calls := len(inner.calls)
	if _, err := Records(ctx, r4, inner, 6, nil); !errors.Is(err, context.Canceled) || len(inner.calls) != calls {
		t.Errorf("cancelled: %v after %d embedder calls, want context.Canceled and none", err, len(inner.calls)-calls)
	}
}

// The same checkpoint in two directories is one embedder; another
// checkpoint, or other options, another.
func TestSameEmbedder(t *testing.T) {
	a := "model:/data/m#0123456789abcdef;pool=mean;maxlen=512"
	moved := "model:/elsewhere/copy#0123456789abcdef;pool=mean;maxlen=512"
	other := "model:/data/m2#fedcba9876543210;pool=mean;maxlen=512"
	shorter := "model:/data/m#0123456789abcdef;pool=mean;maxlen=256"
	enc := "encoder;model:/data/e5#aaaaaaaaaaaaaaaa;pool=mean;maxlen=512;prefix=\"query: \";norm=l2"
	encMoved := "encoder;model:/tmp/e5#aaaaaaaaaaaaaaaa;pool=mean;maxlen=512;prefix=\"query: \";norm=l2"
	if EmbedderID(a) != EmbedderID(moved) || EmbedderID(enc) != EmbedderID(encMoved) {
		t.Errorf("a moved checkpoint: %q and %q, %q and %q", EmbedderID(a), EmbedderID(moved), EmbedderID(enc), EmbedderID(encMoved))
	}
	for _, c := range []struct {
		pairs []string
		ok    bool
	}{
		{[]string{"pool", a, "usage", moved}, true},
		{[]string{"pool", a, "usage", "", "data", moved}, true}, // a file that does not say
		{[]string{"pool", a, "usage", other}, false},
		{[]string{"pool", a, "usage", shorter}, false},
		{[]string{"pool", "", "usage", a, "data", enc}, false},
	} {
		err := SameEmbedder(c.pairs...)
		if (err == nil) != c.ok {
			t.Errorf("%v: %v, want ok %v", c.pairs, err, c.ok)
		}
	}
	if err := SameEmbedder("pool", a, "usage", other); err == nil || !strings.Contains(err.Error(), "pool was embedded by "+a+", usage by "+other) {
		t.Errorf("the error names neither file's embedder: %v", err)
	}
}

// LoadStacked reads every file into one matrix, in order: the values and
// rows of each file are those Load gives, each file's Vectors are its rows
// of the matrix itself (no copy), and an empty file adds no row.
func TestLoadStacked(t *testing.T) {
	dir := t.TempDir()
	fixture := embedFixtureMatrix()
	a := &Embeddings{Vectors: embedMatrixOf(t, 5, 4, fixture), Rows: []Row{{ID: "a0"}, {ID: "a1"}, {ID: "a2"}, {ID: "a3"}, {ID: "a4"}}, Embedder: "enc"}
	b := &Embeddings{Vectors: embedMatrixOf(t, 2, 4, []float32{1, 2, 3, 4, 5, 6, 7, 8})}
	empty := &Embeddings{Vectors: embedMatrixOf(t, 0, 4, nil)}
	paths := []string{filepath.Join(dir, "a.safetensors"), filepath.Join(dir, "b.npy"), filepath.Join(dir, "none.npy"), filepath.Join(embedFixtures, "embeddings.parquet")}
	for i, e := range []*Embeddings{a, b, empty} {
		if err := Save(paths[i], e); err != nil {
			t.Fatal(err)
		}
	}
	x, es, err := LoadStacked(paths, LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(x.Shape(), []int{12, 4}) || len(es) != 4 {
		t.Fatalf("stacked %v, %d files", x.Shape(), len(es))
	}
	all := x.F32()
	off := 0
	for i, p := range paths {
		one, err := Load(p, LoadOptions{})
		if err != nil {
			t.Fatal(err)
		}
		got := es[i].Vectors.F32()
		if !reflect.DeepEqual(got, one.Vectors.F32()) || !reflect.DeepEqual(es[i].Rows, one.Rows) || es[i].Embedder != one.Embedder {
			t.Errorf("%s: stacked %v %+v %q, alone %v %+v %q", p, got, es[i].Rows, es[i].Embedder, one.Vectors.F32(), one.Rows, one.Embedder)
		}
		if len(got) > 0 && &got[0] != &all[off] {
			t.Errorf("%s: its vectors are not rows %d.. of the matrix", p, off/4)
		}
		off += len(got)
	}
	if es[0].Embedder != "enc" || len(es[3].Rows) != 5 || es[2].Vectors.Dim(0) != 0 {
		t.Errorf("embedder %q, Parquet rows %d, empty file %v", es[0].Embedder, len(es[3].Rows), es[2].Vectors.Shape())
	}

	// A file of another dimension is named, with the first file's.
	narrow := filepath.Join(dir, "narrow.npy")
	if err := WriteNPY(narrow, embedMatrixOf(t, 1, 3, []float32{1, 2, 3})); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadStacked([]string{paths[2], paths[0], narrow}, LoadOptions{}); err == nil || !strings.Contains(err.Error(), "narrow.npy has vectors of dimension 3, "+paths[0]+" 4") {
		t.Errorf("dimensions 4 and 3: %v", err)
	}
	// A NaN in a later file is found at its own row.
	nan := []float32{1, 2, 3, 4, 5, float32(math.NaN()), 7, 8}
	if err := WriteNPY(paths[1], embedMatrixOf(t, 2, 4, nan)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadStacked(paths, LoadOptions{}); err == nil || !strings.Contains(err.Error(), "b.npy: row 1, column 1 is NaN") {
		t.Errorf("NaN: %v", err)
	}
}

// The vectors are read after every header: a file whose array changed in
// between is an error, not values of another shape in the matrix.
func TestLoadStackedChangedFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "x.npy")
	if err := WriteNPY(p, embedMatrixOf(t, 2, 2, []float32{1, 2, 3, 4})); err != nil {
		t.Fatal(err)
	}
	h, err := readNPYFileHeader(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteNPY(p, embedMatrixOf(t, 1, 4, []float32{1, 2, 3, 4})); err != nil {
		t.Fatal(err)
	}
	if err := readNPYInto(p, h, make([]float32, 4)); err == nil || !strings.Contains(err.Error(), "changed while it was read") {
		t.Errorf("npy: %v", err)
	}
	s := filepath.Join(dir, "x.safetensors")
	if err := Save(s, &Embeddings{Vectors: embedMatrixOf(t, 2, 2, []float32{1, 2, 3, 4})}); err != nil {
		t.Fatal(err)
	}
	info, name, _, err := findSafetensor(s, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := Save(s, &Embeddings{Vectors: embedMatrixOf(t, 4, 1, []float32{1, 2, 3, 4})}); err != nil {
		t.Fatal(err)
	}
	if err := readSafetensorInto(s, name, info, make([]float32, 4)); err == nil || !strings.Contains(err.Error(), "changed while it was read") {
		t.Errorf("safetensors: %v", err)
	}
}

// RecordsToFile writes the files Records and Save write, byte for byte,
// over more than one chunk of records, in both formats; it leaves no
// scratch file behind, whether it succeeds, fails or is cancelled; and an
// input without a record writes nothing.
func TestRecordsToFile(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "pool.jsonl")
	var lines []string
	for i := range 2*Chunk + 7 {
		lines = append(lines, fmt.Sprintf(`{"id": "r%d", "language": "sw", "text": "record %d"}`, i, i))
	}
	if err := os.WriteFile(data, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	open := func(path string) *dataset.Reader {
		t.Helper()
		r, err := dataset.Open(path, dataset.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		return r
	}
	inner := &embedCountingEmbedder{name: "fake", dim: 6}
	scratch := func(dir string) []string {
		t.Helper()
		left, _ := filepath.Glob(filepath.Join(dir, ".*")) // the scratch files are hidden
		return left
	}
	for _, name := range []string{"e.npy", "e.safetensors"} {
		want, err := Records(context.Background(), open(data), inner, 6, nil)
		if err != nil {
			t.Fatal(err)
		}
		ref, out := filepath.Join(dir, "ref", name), filepath.Join(dir, "out", name)
		if err := Save(ref, want); err != nil {
			t.Fatal(err)
		}
		n, err := RecordsToFile(context.Background(), open(data), inner, 6, nil, out)
		if err != nil || n != len(lines) {
			t.Fatalf("%s: %d rows, %v", name, n, err)
		}
		for _, f := range []string{name, RowsPath(name)} {
			a, errA := os.ReadFile(filepath.Join(dir, "ref", f))
			b, errB := os.ReadFile(filepath.Join(dir, "out", f))
			if errA != nil || errB != nil || !bytes.Equal(a, b) {
				t.Errorf("%s: not the bytes Records and Save write (%v, %v)", f, errA, errB)
			}
		}
		if left := scratch(filepath.Join(dir, "out")); len(left) > 0 {
			t.Errorf("%s: scratch files left: %v", name, left)
		}
	}

	// A text that cannot be embedded, past the first chunk: an error,
	// and neither the output nor the scratch file.
	bad := filepath.Join(dir, "bad.jsonl")
	if err := os.WriteFile(bad, []byte(strings.Join(lines[:Chunk+3], "\n")+"\n{\"text\": \"bad\"}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "bad", "e.npy")
	if _, err := RecordsToFile(context.Background(), open(bad), inner, 6, nil, out); err == nil || !strings.Contains(err.Error(), "cannot embed") {
		t.Errorf("bad text: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := RecordsToFile(ctx, open(data), inner, 6, nil, out); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
	empty := filepath.Join(dir, "empty.jsonl")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := RecordsToFile(context.Background(), open(empty), inner, 6, nil, out); !errors.Is(err, ErrNoRecords) {
		t.Errorf("no records: %v", err)
	}
	if left, _ := os.ReadDir(filepath.Join(dir, "bad")); len(left) > 0 {
		t.Errorf("after a failure, a cancel and no records: %v left", left)
	}
	// An output Save cannot write fails before any text is embedded.
	calls := len(inner.calls)
	if _, err := RecordsToFile(context.Background(), open(data), inner, 6, nil, filepath.Join(dir, "e.csv")); err == nil || len(inner.calls) != calls {
		t.Errorf("a .csv output: %v after %d embedder calls", err, len(inner.calls)-calls)
	}
}
