package embed

import (
	"crypto/sha256"
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/compassml/compass/internal/fuzzguard"
	"github.com/compassml/compass/tensor"
)

// checkEmbeddings checks what Load accepted: finite vectors of the shape
// it says, one row per vector when there are rows, and no more values
// than the file could hold. (Vectors of no values, [N, 0], are let
// through: the consumers refuse them, matrix.Check's "has no columns".)
func checkEmbeddings(t *testing.T, e *Embeddings, fileSize int) {
	t.Helper()
	v := e.Vectors
	if v == nil || v.Rank() != 2 || v.DType() != tensor.F32 {
		t.Fatalf("vectors %v, want F32 [N, D]", v)
	}
	if len(v.F32()) != v.Dim(0)*v.Dim(1) {
		t.Fatalf("%d values for shape %v", len(v.F32()), v.Shape())
	}
	if v.Dim(1) > 0 && v.Dim(0)*v.Dim(1) > fileSize {
		t.Fatalf("shape %v from a file of %d bytes", v.Shape(), fileSize)
	}
	for i, x := range v.F32() {
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			t.Fatalf("value %d is %v", i, x)
		}
	}
	if e.Rows != nil && len(e.Rows) != v.Dim(0) {
		t.Fatalf("%d rows for %d vectors", len(e.Rows), v.Dim(0))
	}
}

// fuzzSeedFile writes a seed with Save and returns its bytes and those of
// its rows file.
func fuzzSeedFile(f *testing.F, name string, rows []Row, n, d int) (data, rowsFile []byte) {
	f.Helper()
	v := make([]float32, n*d)
	for i := range v {
		v[i] = float32(i) - 1.5
	}
	m, err := tensor.FromF32(v, n, d)
	if err != nil {
		f.Fatal(err)
	}
	path := filepath.Join(f.TempDir(), name)
	if err := Save(path, &Embeddings{Vectors: m, Rows: rows, Embedder: "model:/m#abc"}); err != nil {
		f.Fatal(err)
	}
	if data, err = os.ReadFile(path); err != nil {
		f.Fatal(err)
	}
	rowsFile, _ = os.ReadFile(RowsPath(path))
	return data, rowsFile
}

// FuzzLoadNPY feeds Load a .npy file and its rows file (none when
// empty). Whatever the bytes, Load must return an error or embeddings
// that are what the file holds.
func FuzzLoadNPY(f *testing.F) {
	rows := []Row{{ID: "a:1", Language: "en"}, {ID: "a:2", Source: "a.jsonl:2"}}
	npy, rowsFile := fuzzSeedFile(f, "e.npy", rows, 2, 3)
	f.Add(npy, rowsFile)
	f.Add(npy, []byte{})
	empty, _ := fuzzSeedFile(f, "z.npy", nil, 0, 4)
	f.Add(empty, []byte{})
	for _, name := range []string{"embeddings-f4.npy", "embeddings-f8.npy", "embeddings-fortran.npy"} {
		b, err := os.ReadFile(filepath.Join(embedFixtures, name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, []byte{})
	}
	// Version 2.0, big-endian float64.
	v2 := append([]byte("\x93NUMPY\x02\x00"), 0, 0, 0, 0)
	hdr := "{'descr': '>f8', 'fortran_order': False, 'shape': (1, 2), }\n"
	binary.LittleEndian.PutUint32(v2[8:], uint32(len(hdr)))
	v2 = append(v2, hdr...)
	v2 = binary.BigEndian.AppendUint64(v2, math.Float64bits(1))
	v2 = binary.BigEndian.AppendUint64(v2, math.Float64bits(-2))
	f.Add(v2, []byte{})

	f.Fuzz(func(t *testing.T, npy, rowsFile []byte) { loadFuzzed(t, "e.npy", npy, rowsFile) })
}

// loadFuzzed writes an embedding file named name (and its rows file,
// when rowsFile is not empty) and loads it: an error, or embeddings that
// pass checkEmbeddings.
func loadFuzzed(t *testing.T, name string, data, rowsFile []byte) {
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if len(rowsFile) > 0 {
		if err := os.WriteFile(RowsPath(path), rowsFile, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	defer fuzzguard.Start(t, 256<<20)()
	e, err := Load(path, LoadOptions{})
	if err != nil {
		return
	}
	checkEmbeddings(t, e, len(data))
}

// FuzzLoadSafetensors feeds Load a .safetensors file: the header parser
// has its own target (tensor/safetensors FuzzParseHeader); this one is
// about choosing the tensor and converting it.
func FuzzLoadSafetensors(f *testing.F) {
	st, rowsFile := fuzzSeedFile(f, "e.safetensors", []Row{{ID: "x"}}, 1, 2)
	f.Add(st, rowsFile)
	st, _ = fuzzSeedFile(f, "e.safetensors", nil, 3, 2)
	f.Add(st, []byte{})
	for _, seed := range []struct {
		hdr  string
		data int
	}{
		{`{"v":{"dtype":"F64","shape":[1,2],"data_offsets":[0,16]}}`, 16},
		{`{"v":{"dtype":"BF16","shape":[2,1],"data_offsets":[0,4]},"w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, 8},
		{`{"embeddings":{"dtype":"F16","shape":[2,0],"data_offsets":[0,0]}}`, 0},
	} {
		b := binary.LittleEndian.AppendUint64(nil, uint64(len(seed.hdr)))
		b = append(b, seed.hdr...)
		f.Add(append(b, make([]byte, seed.data)...), []byte{})
	}

	f.Fuzz(func(t *testing.T, data, rowsFile []byte) { loadFuzzed(t, "e.safetensors", data, rowsFile) })
}

// FuzzLoadParquet feeds Load a Parquet file of vectors, through
// dataset.ReadParquetVectors and the Parquet decoder.
func FuzzLoadParquet(f *testing.F) {
	for _, name := range []string{"embeddings.parquet", "text.parquet"} {
		b, err := os.ReadFile(filepath.Join(embedFixtures, name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(t.TempDir(), "e.parquet")
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		defer fuzzguard.Start(t, 256<<20)()
		e, err := Load(path, LoadOptions{})
		if err != nil {
			return
		}
		checkEmbeddings(t, e, math.MaxInt) // Parquet compresses: any shape may be in a small file
	})
}

// FuzzOpenCache opens a cache file of any content: OpenCache must refuse
// it or keep the good records before the first bad one, and every record
// it indexes must then read back.
func FuzzOpenCache(f *testing.F) {
	const name = "fuzz-embedder"
	dir := f.TempDir()
	c, err := OpenCache(dir, name, nil)
	if err != nil {
		f.Fatal(err)
	}
	var hashes [][32]byte
	var vecs [][]float32
	for i, text := range []string{"a", "b", "c"} {
		hashes = append(hashes, sha256.Sum256([]byte(text)))
		vecs = append(vecs, []float32{float32(i), -1, 0.5})
	}
	if err := c.Put(hashes, vecs); err != nil {
		f.Fatal(err)
	}
	c.Close()
	good, err := os.ReadFile(c.Path())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(good[:len(good)-7])         // an interrupted append
	f.Add(good[:16+len(name)])        // the header alone
	f.Add([]byte("CMPEMBC1\x00\x00")) // a cut header

	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		probe, err := OpenCache(dir, name, nil) // for the file's name
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(probe.Path(), data, 0o644); err != nil {
			t.Fatal(err)
		}
		done := fuzzguard.Start(t, 256<<20)
		c, err := OpenCache(dir, name, nil)
		done()
		if err != nil {
			return
		}
		defer c.Close()
		if c.dim <= 0 {
			t.Fatalf("opened with dimension %d", c.dim)
		}
		for h := range c.index {
			v, ok, err := c.Get(h)
			if err != nil || !ok || len(v) != c.dim {
				t.Fatalf("indexed record: %d values, %v, %v", len(v), ok, err)
			}
		}
		// Appends go on from a record boundary: the file reopens with one
		// more vector.
		if c.dim > 1<<10 {
			return
		}
		n := c.Len()
		h := sha256.Sum256([]byte("new text"))
		if _, ok := c.index[h]; ok {
			return
		}
		if err := c.Put([][32]byte{h}, [][]float32{make([]float32, c.dim)}); err != nil {
			t.Fatal(err)
		}
		c.Close()
		c, err = OpenCache(dir, name, nil)
		if err != nil {
			t.Fatalf("reopen after an append: %v", err)
		}
		defer c.Close()
		if c.Len() != n+1 {
			t.Fatalf("reopened with %d vectors, want %d", c.Len(), n+1)
		}
	})
}
