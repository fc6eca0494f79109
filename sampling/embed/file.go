package embed

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/compassml/compass/dataset"
	"github.com/compassml/compass/internal/atomicfile"
	"github.com/compassml/compass/tensor"
	"github.com/compassml/compass/tensor/safetensors"
)

// Embeddings is a matrix of vectors, one per record, with what is known
// about each record.
type Embeddings struct {
	Vectors  *tensor.Tensor // F32 [N, D] in host memory
	Rows     []Row          // row i's record; nil when the source names none
	Embedder string         // the embedder that made them; "" when unknown
}

// EmbedderID is an embedder's name without the directories its models
// were loaded from: names hold ModelSignature's DIR#HASH, and the same
// checkpoint elsewhere makes the same vectors. Vectors of two embedders
// with different IDs are not comparable.
func EmbedderID(name string) string {
	fields := strings.Split(name, ";")
	for i, f := range fields {
		kind, sig, ok := strings.Cut(f, ":") // "model:/abs/dir#hash"
		if !ok {
			kind, sig = "", f
		}
		if j := strings.LastIndex(sig, "#"); j >= 0 && filepath.IsAbs(sig[:j]) {
			fields[i] = kind + ":" + sig[j+1:]
		}
	}
	return strings.Join(fields, ";")
}

// SameEmbedder checks that the named embedding files, given as pairs of
// what each is and its embedder's name, were made by one embedder; a name
// that is "" (a file that does not say) is taken to agree.
func SameEmbedder(pairs ...string) error {
	first, firstName := "", ""
	for i := 0; i+1 < len(pairs); i += 2 {
		what, name := pairs[i], pairs[i+1]
		if name == "" {
			continue
		}
		if first == "" {
			first, firstName = what, name
			continue
		}
		if EmbedderID(name) != EmbedderID(firstName) {
			return fmt.Errorf("%s was embedded by %s, %s by %s: vectors of different embedders are not comparable (embed them with the same model and options)",
				first, firstName, what, name)
		}
	}
	return nil
}

// Row identifies the record of one row of an embedding matrix.
type Row struct {
	ID       string `json:"id"`
	Language string `json:"language,omitempty"`
	Source   string `json:"source,omitempty"`
}

// TensorName is the name of the matrix in a safetensors file that
// Save writes, and the one Load reads by default.
const TensorName = "embeddings"

// RowsPath returns where the rows of an embedding file are kept: beside
// it, its name with the extension replaced by ".rows.jsonl"
// (embeddings.safetensors -> embeddings.rows.jsonl). Line i is row i:
//
//	{"row": 0, "id": "aya.jsonl:1", "language": "en", "source": "data/aya.jsonl:1"}
func RowsPath(path string) string {
	return strings.TrimSuffix(path, filepath.Ext(path)) + ".rows.jsonl"
}

// Save writes the matrix to path as .npy (float32, C order) or
// .safetensors (an F32 tensor "embeddings", with the embedder's name and
// the rows file in the metadata), and the rows, when there are any, to
// RowsPath(path). Each file is written atomically; the rows go first, so
// a matrix is never newer than its rows.
func Save(path string, e *Embeddings) error {
	if e.Vectors == nil || e.Vectors.DType() != tensor.F32 || e.Vectors.Rank() != 2 {
		return fmt.Errorf("embed: save %s: vectors must be an F32 [N, D] tensor, got %v", path, e.Vectors)
	}
	n, d := e.Vectors.Dim(0), e.Vectors.Dim(1)
	if e.Rows != nil && len(e.Rows) != n {
		return fmt.Errorf("embed: save %s: %d rows for %d vectors", path, len(e.Rows), n)
	}
	var rows func(io.Writer) error
	if e.Rows != nil {
		rows = func(w io.Writer) error {
			rw := newRowsWriter(w)
			for _, r := range e.Rows {
				if err := rw.write(r); err != nil {
					return err
				}
			}
			return nil
		}
	}
	return saveFrom(path, rows, e.Embedder, n, d, bytes.NewReader(e.Vectors.Bytes()))
}

// saveFrom is Save with the rows file written by rows (nil: no rows file)
// and the n x d matrix's little-endian float32 values read from vectors as
// they are written.
func saveFrom(path string, rows func(io.Writer) error, embedder string, n, d int, vectors io.Reader) error {
	if err := checkSaveFormat(path); err != nil {
		return err
	}
	if rows != nil {
		if err := atomicfile.Write(RowsPath(path), rows); err != nil {
			return fmt.Errorf("embed: save %s: %w", RowsPath(path), err)
		}
	}
	if strings.EqualFold(filepath.Ext(path), ".npy") {
		return writeNPYFrom(path, n, d, vectors)
	}
	meta := map[string]string{"format": "compass-embeddings", "count": strconv.Itoa(n)}
	if embedder != "" {
		meta["embedder"] = embedder
	}
	if rows != nil {
		meta["rows"] = filepath.Base(RowsPath(path))
	}
	return safetensors.WriteFrom(path, safetensors.Entry{Name: TensorName, DType: safetensors.F32, Shape: []int{n, d}}, vectors, meta)
}

// checkSaveFormat refuses a path that Save cannot write.
func checkSaveFormat(path string) error {
	ext := strings.ToLower(filepath.Ext(path))
	if ext != ".npy" && ext != ".safetensors" {
		return fmt.Errorf("embed: save %s: unknown format %q (want .npy or .safetensors)", path, ext)
	}
	return nil
}

// rowsWriter writes the lines of a rows file, numbering them from 0.
type rowsWriter struct {
	enc  *json.Encoder
	next int
}

func newRowsWriter(w io.Writer) *rowsWriter {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return &rowsWriter{enc: enc}
}

func (w *rowsWriter) write(r Row) error {
	line := struct {
		Index int `json:"row"`
		Row
	}{w.next, r}
	w.next++
	return w.enc.Encode(line)
}

// readRows reads a rows file; line i must be row i.
func readRows(path string) ([]Row, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	lines := dataset.NewJSONLines(f, path)
	lines.KeepBlank = true // a skipped line would shift the rows after it
	rows := []Row{}
	for lines.Next() {
		var row struct {
			Index *int `json:"row"`
			Row
		}
		if err := lines.Decode(&row); err != nil {
			return nil, err
		}
		if row.Index == nil || *row.Index != lines.Line()-1 {
			return nil, lines.Errorf("want \"row\": %d", lines.Line()-1)
		}
		rows = append(rows, row.Row)
	}
	return rows, lines.Err()
}

// LoadOptions say where the vectors are in a file; zero values take the
// defaults.
type LoadOptions struct {
	// Tensor is the safetensors tensor; default "embeddings", or the only
	// 2-D tensor of the file.
	Tensor string
	// Column is the Parquet list column; default "embedding".
	Column string
	// IDColumn and LanguageColumn are the Parquet columns of each row's ID
	// and language; default "id" and "language" (or "language_code"), each
	// used when the file has it.
	IDColumn, LanguageColumn string
}

// Load reads precomputed embeddings: a .npy file (float32 or
// float64, 2-D, C order), a .safetensors file (a 2-D F32, F64, BF16 or F16
// tensor) or a Parquet file (a list column of FLOAT or DOUBLE, one vector
// per row; .parquet, optionally .zst). Vectors are converted to float32
// and must be finite. For .npy and .safetensors, the rows come from
// RowsPath(path) when it exists; for Parquet, from its id and language
// columns.
func Load(path string, opts LoadOptions) (*Embeddings, error) {
	_, es, err := LoadStacked([]string{path}, opts)
	if err != nil {
		return nil, err
	}
	return es[0], nil
}

// LoadStacked loads several embedding files, each as Load reads it, into
// one F32 [N, D] matrix: their rows one after the other, in the order of
// paths. Each file's Embeddings hold its rows and embedder, and as Vectors
// a view of its rows in the matrix. The .npy and .safetensors vectors are
// read straight into place, so that stacking a large pool with other files
// does not hold it twice; a Parquet file gives its dimension only once
// read, so it is read whole and then copied (unless it is the only file).
// Files that have rows must all have the dimension of the first of them.
func LoadStacked(paths []string, opts LoadOptions) (*tensor.Tensor, []*Embeddings, error) {
	srcs := make([]*vectorSource, len(paths))
	n, d, first := 0, 0, ""
	for i, p := range paths {
		s, err := openVectors(p, opts)
		if err != nil {
			return nil, nil, err
		}
		srcs[i] = s
		if s.rows == 0 {
			continue
		}
		if d != 0 && s.dim != d {
			return nil, nil, fmt.Errorf("embed: %s has vectors of dimension %d, %s %d", p, s.dim, first, d)
		}
		if d == 0 {
			first = p
		}
		n, d = n+s.rows, s.dim
	}
	if d == 0 { // no file has rows
		d = srcs[0].dim
	}
	var all []float32
	if len(srcs) == 1 && srcs[0].e.Vectors != nil {
		all = srcs[0].e.Vectors.F32() // a Parquet file alone: used as read
	} else {
		all = make([]float32, n*d)
	}
	es := make([]*Embeddings, len(srcs))
	off := 0
	for i, s := range srcs {
		dst := all[off : off+s.rows*s.dim]
		off += len(dst)
		if err := s.read(dst); err != nil {
			return nil, nil, err
		}
		v, err := tensor.FromF32(dst, s.rows, s.dim)
		if err != nil {
			return nil, nil, fmt.Errorf("embed: %s: %w", s.path, err)
		}
		if err := checkVectors(s.path, v); err != nil {
			return nil, nil, err
		}
		s.e.Vectors = v
		if s.sidecar {
			if err := s.readSidecar(); err != nil {
				return nil, nil, err
			}
		}
		es[i] = s.e
	}
	x, err := tensor.FromF32(all, n, d)
	if err != nil {
		return nil, nil, fmt.Errorf("embed: %w", err)
	}
	return x, es, nil
}

// vectorSource is an embeddings file whose shape is known and whose
// vectors are still to be read.
type vectorSource struct {
	path      string
	rows, dim int
	read      func(dst []float32) error // the rows*dim values into dst
	e         *Embeddings               // Embedder, and Rows where the file itself has them
	sidecar   bool                      // the rows are in RowsPath(path), if anywhere
}

// openVectors reads path's header (or, for Parquet, the whole file).
func openVectors(path string, opts LoadOptions) (*vectorSource, error) {
	name := strings.ToLower(path)
	for _, z := range []string{".zst", ".zstd"} {
		name = strings.TrimSuffix(name, z)
	}
	s := &vectorSource{path: path, e: &Embeddings{}, sidecar: true}
	switch filepath.Ext(name) {
	case ".npy":
		h, err := readNPYFileHeader(path)
		if err != nil {
			return nil, err
		}
		s.rows, s.dim = h.rows, h.cols
		s.read = func(dst []float32) error { return readNPYInto(path, h, dst) }
	case ".safetensors":
		info, tname, embedder, err := findSafetensor(path, opts.Tensor)
		if err != nil {
			return nil, err
		}
		s.rows, s.dim, s.e.Embedder = info.Shape[0], info.Shape[1], embedder
		s.read = func(dst []float32) error { return readSafetensorInto(path, tname, info, dst) }
	case ".parquet", ".pq":
		e, err := loadParquet(path, opts)
		if err != nil {
			return nil, err
		}
		s.rows, s.dim, s.e, s.sidecar = e.Vectors.Dim(0), e.Vectors.Dim(1), e, false
		s.read = func(dst []float32) error {
			v := e.Vectors.F32()
			if len(dst) > 0 && &dst[0] != &v[0] {
				copy(dst, v)
			}
			e.Vectors = nil // collectable once copied
			return nil
		}
	default:
		return nil, fmt.Errorf("embed: %s: unknown embeddings format (want .npy, .safetensors or .parquet)", path)
	}
	if s.dim == 0 { // every later step would refuse them, less clearly
		return nil, fmt.Errorf("embed: %s: shape [%d 0]: vectors of no dimensions", path, s.rows)
	}
	return s, nil
}

// readSidecar takes the rows from RowsPath(s.path) when that file exists.
func (s *vectorSource) readSidecar() error {
	rows, err := readRows(RowsPath(s.path))
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return fmt.Errorf("embed: %w", err)
	case len(rows) != s.rows:
		return fmt.Errorf("embed: %s has %d rows, %s %d vectors", RowsPath(s.path), len(rows), s.path, s.rows)
	default:
		s.e.Rows = rows
	}
	return nil
}

// findSafetensor opens a safetensors file and finds its embeddings tensor:
// the one named, else TensorName, else the only 2-D tensor. It returns the
// tensor's description and name, and the embedder the metadata names.
func findSafetensor(path, name string) (safetensors.TensorInfo, string, string, error) {
	var none safetensors.TensorInfo
	f, err := safetensors.Open(path)
	if err != nil {
		return none, "", "", fmt.Errorf("embed: %w", err)
	}
	defer f.Close()
	if name == "" {
		name = TensorName
		if _, ok := f.Info(name); !ok {
			var twoD []string
			for _, n := range f.Names() {
				if info, _ := f.Info(n); len(info.Shape) == 2 {
					twoD = append(twoD, n)
				}
			}
			if len(twoD) != 1 {
				return none, "", "", fmt.Errorf("embed: %s: no tensor %q and %d 2-D tensors (%s): name one", path, TensorName, len(twoD), strings.Join(twoD, ", "))
			}
			name = twoD[0]
		}
	}
	info, ok := f.Info(name)
	if !ok {
		return none, "", "", fmt.Errorf("embed: %s: no tensor %q (tensors: %s)", path, name, strings.Join(f.Names(), ", "))
	}
	if len(info.Shape) != 2 {
		return none, "", "", fmt.Errorf("embed: %s: tensor %q has shape %v, want 2-D [N, D]", path, name, info.Shape)
	}
	switch info.DType {
	case safetensors.F64, safetensors.F32, safetensors.BF16, safetensors.F16:
	default:
		return none, "", "", fmt.Errorf("embed: %s: tensor %q is %s, want F32, F64, BF16 or F16", path, name, info.DType)
	}
	return info, name, f.Metadata()["embedder"], nil
}

// readSafetensorInto reads the tensor that findSafetensor found, widened to
// float32, into dst, after checking that the file still describes it so.
func readSafetensorInto(path, name string, want safetensors.TensorInfo, dst []float32) error {
	f, err := safetensors.Open(path)
	if err != nil {
		return fmt.Errorf("embed: %w", err)
	}
	defer f.Close()
	info, ok := f.Info(name)
	if !ok || info.DType != want.DType || !slices.Equal(info.Shape, want.Shape) || info.Shape[0]*info.Shape[1] != len(dst) {
		return fmt.Errorf("embed: %s: tensor %q changed while it was read", path, name)
	}
	if info.DType == safetensors.F64 {
		b, err := f.Bytes(name)
		if err != nil {
			return fmt.Errorf("embed: %w", err)
		}
		for i := range dst {
			dst[i] = float32(math.Float64frombits(binary.LittleEndian.Uint64(b[8*i:])))
		}
		return nil
	}
	t, err := f.Tensor(name) // a view of the mapping, which Close unmaps: copied
	if err != nil {
		return fmt.Errorf("embed: %w", err)
	}
	switch info.DType {
	case safetensors.F32:
		copy(dst, t.F32())
	case safetensors.BF16:
		tensor.ConvertBF16ToF32(dst, t.U16())
	default:
		tensor.ConvertF16ToF32(dst, t.U16())
	}
	return nil
}

func loadParquet(path string, opts LoadOptions) (*Embeddings, error) {
	column := opts.Column
	if column == "" {
		column = "embedding"
	}
	idCols := []string{"id"}
	if opts.IDColumn != "" {
		idCols = []string{opts.IDColumn}
	}
	langCols := []string{"language", "language_code"}
	if opts.LanguageColumn != "" {
		langCols = []string{opts.LanguageColumn}
	}
	v, err := dataset.ReadParquetVectors(path, column, append(slices.Clone(idCols), langCols...))
	if err != nil {
		return nil, fmt.Errorf("embed: %w", err)
	}
	ids := v.Labels[idCols[0]]
	if opts.IDColumn != "" && ids == nil {
		return nil, fmt.Errorf("embed: %s: no column %q", path, opts.IDColumn)
	}
	var langs []string
	for _, c := range langCols {
		if langs = v.Labels[c]; langs != nil {
			break
		}
	}
	if opts.LanguageColumn != "" && langs == nil {
		return nil, fmt.Errorf("embed: %s: no column %q", path, opts.LanguageColumn)
	}
	t, err := tensor.FromF32(v.Data, v.Rows, v.Dim)
	if err != nil {
		return nil, fmt.Errorf("embed: %w", err)
	}
	e := &Embeddings{Vectors: t}
	if ids != nil || langs != nil {
		e.Rows = make([]Row, v.Rows)
		for i := range e.Rows {
			e.Rows[i].Source = path + ":" + strconv.Itoa(i+1)
			e.Rows[i].ID = filepath.Base(path) + ":" + strconv.Itoa(i+1)
			if ids != nil && ids[i] != "" {
				e.Rows[i].ID = ids[i]
			}
			if langs != nil {
				e.Rows[i].Language, _ = dataset.NormalizeLanguage(langs[i])
			}
		}
	}
	return e, nil
}

// checkVectors refuses NaN and infinite values: they would poison every
// distance computed with them.
func checkVectors(path string, t *tensor.Tensor) error {
	d := t.Dim(1)
	for i, x := range t.F32() {
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			return fmt.Errorf("embed: %s: row %d, column %d is %v", path, i/d, i%d, x)
		}
	}
	return nil
}

// npyMagic starts every .npy file.
var npyMagic = []byte("\x93NUMPY")

// npyHeader is what a .npy file's header says of its array.
type npyHeader struct {
	descr      string
	rows, cols int
	size       int // bytes per value: 4 or 8
	order      binary.ByteOrder
	dataStart  int // the header's length in bytes
}

// openNPY opens a .npy file of a 2-D float32 or float64 array in C order
// and reads its header, checking the file's size against it; the reader is
// at the first value.
func openNPY(path string) (*os.File, *bufio.Reader, npyHeader, error) {
	var h npyHeader
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, h, fmt.Errorf("embed: %w", err)
	}
	fail := func(err error) (*os.File, *bufio.Reader, npyHeader, error) {
		f.Close()
		return nil, nil, h, fmt.Errorf("embed: %s: %w", path, err)
	}
	st, err := f.Stat()
	if err != nil {
		return fail(err)
	}
	r := bufio.NewReaderSize(f, 1<<20)
	descr, shape, headerLen, err := readNPYHeader(r)
	if err != nil {
		return fail(err)
	}
	h = npyHeader{descr: descr, rows: shape[0], cols: shape[1], dataStart: headerLen}
	switch descr {
	case "<f4", "=f4":
		h.size, h.order = 4, binary.LittleEndian
	case ">f4":
		h.size, h.order = 4, binary.BigEndian
	case "<f8", "=f8":
		h.size, h.order = 8, binary.LittleEndian
	case ">f8":
		h.size, h.order = 8, binary.BigEndian
	default:
		return fail(fmt.Errorf("dtype %q, want float32 or float64", descr))
	}
	if h.cols > 0 && h.rows > math.MaxInt/h.size/h.cols {
		return fail(fmt.Errorf("shape %v is too large", shape))
	}
	if want := int64(headerLen) + int64(h.rows*h.cols*h.size); st.Size() != want {
		return fail(fmt.Errorf("%d bytes, shape %v of %s needs %d", st.Size(), shape, descr, want))
	}
	return f, r, h, nil
}

// readNPYFileHeader reads the header of a .npy file (openNPY).
func readNPYFileHeader(path string) (npyHeader, error) {
	f, _, h, err := openNPY(path)
	if err != nil {
		return h, err
	}
	f.Close()
	return h, nil
}

// ReadNPY reads a 2-D float32 or float64 array in C order from a NumPy
// .npy file (format versions 1.0 to 3.0) as an F32 [N, D] tensor.
func ReadNPY(path string) (*tensor.Tensor, error) {
	h, err := readNPYFileHeader(path)
	if err != nil {
		return nil, err
	}
	v := make([]float32, h.rows*h.cols)
	if err := readNPYInto(path, h, v); err != nil {
		return nil, err
	}
	return tensor.FromF32(v, h.rows, h.cols)
}

// readNPYInto reads the values of the .npy file whose header was want,
// widened to float32, into dst (of want.rows*want.cols), after checking
// that the header is still the same.
func readNPYInto(path string, want npyHeader, dst []float32) error {
	f, r, h, err := openNPY(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if h != want || len(dst) != h.rows*h.cols {
		return fmt.Errorf("embed: %s: the array changed while it was read", path)
	}
	buf := make([]byte, 1<<16) // a multiple of both sizes
	for i := 0; i < len(dst); {
		chunk := buf[:min(len(buf), (len(dst)-i)*h.size)]
		if _, err := io.ReadFull(r, chunk); err != nil {
			return fmt.Errorf("embed: %s: %w", path, err)
		}
		for off := 0; off < len(chunk); off += h.size {
			if h.size == 4 {
				dst[i] = math.Float32frombits(h.order.Uint32(chunk[off:]))
			} else {
				dst[i] = float32(math.Float64frombits(h.order.Uint64(chunk[off:])))
			}
			i++
		}
	}
	return nil
}

// readNPYHeader reads the magic, version and header dictionary, and
// returns the dtype descriptor, the 2-D shape and the header's total size.
func readNPYHeader(r io.Reader) (descr string, shape []int, size int, err error) {
	pre := make([]byte, 8)
	if _, err := io.ReadFull(r, pre); err != nil || !bytes.Equal(pre[:6], npyMagic) {
		return "", nil, 0, errors.New("not a .npy file (no \\x93NUMPY magic)")
	}
	var n int
	switch pre[6] {
	case 1:
		var b [2]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return "", nil, 0, fmt.Errorf("header: %w", err)
		}
		n, size = int(binary.LittleEndian.Uint16(b[:])), 10
	case 2, 3:
		var b [4]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return "", nil, 0, fmt.Errorf("header: %w", err)
		}
		n, size = int(binary.LittleEndian.Uint32(b[:])), 12
		if n > 1<<24 {
			return "", nil, 0, fmt.Errorf("header of %d bytes", n)
		}
	default:
		return "", nil, 0, fmt.Errorf("format version %d.%d, want 1.0 to 3.0", pre[6], pre[7])
	}
	h := make([]byte, n)
	if _, err := io.ReadFull(r, h); err != nil {
		return "", nil, 0, fmt.Errorf("header: %w", err)
	}
	dict, err := parseNPYDict(string(h))
	if err != nil {
		return "", nil, 0, fmt.Errorf("header %q: %w", strings.TrimSpace(string(h)), err)
	}
	descr, ok := dict["descr"].(string)
	if !ok {
		return "", nil, 0, errors.New("header has no 'descr' string")
	}
	if fortran, ok := dict["fortran_order"].(bool); !ok || fortran {
		return "", nil, 0, errors.New("the array is in Fortran order (or says nothing), want C order")
	}
	shape, ok = dict["shape"].([]int)
	if !ok || len(shape) != 2 {
		return "", nil, 0, fmt.Errorf("shape %v, want 2-D (N, D)", dict["shape"])
	}
	return descr, shape, size + n, nil
}

// parseNPYDict parses the Python dict literal of a .npy header: string
// keys, values that are strings, True/False or tuples of integers.
func parseNPYDict(s string) (map[string]any, error) {
	p := &npyParser{s: s}
	if !p.eat('{') {
		return nil, errors.New("want '{'")
	}
	dict := map[string]any{}
	for {
		if p.eat('}') {
			return dict, nil
		}
		key, err := p.str()
		if err != nil {
			return nil, err
		}
		if !p.eat(':') {
			return nil, errors.New("want ':'")
		}
		var val any
		switch p.skip(); {
		case p.peek() == '\'' || p.peek() == '"':
			val, err = p.str()
		case p.peek() == '(':
			val, err = p.tuple()
		case strings.HasPrefix(p.s[p.i:], "True"):
			val, p.i = true, p.i+4
		case strings.HasPrefix(p.s[p.i:], "False"):
			val, p.i = false, p.i+5
		default:
			return nil, fmt.Errorf("unexpected value at %d", p.i)
		}
		if err != nil {
			return nil, err
		}
		dict[key] = val
		if !p.eat(',') && p.skip() != '}' {
			return nil, errors.New("want ',' or '}'")
		}
	}
}

type npyParser struct {
	s string
	i int
}

// skip passes spaces and returns the next byte (0 at the end).
func (p *npyParser) skip() byte {
	for p.i < len(p.s) && (p.s[p.i] == ' ' || p.s[p.i] == '\n' || p.s[p.i] == '\t') {
		p.i++
	}
	return p.peek()
}

func (p *npyParser) peek() byte {
	if p.i < len(p.s) {
		return p.s[p.i]
	}
	return 0
}

func (p *npyParser) eat(c byte) bool {
	if p.skip() == c {
		p.i++
		return true
	}
	return false
}

func (p *npyParser) str() (string, error) {
	q := p.skip()
	if q != '\'' && q != '"' {
		return "", fmt.Errorf("want a string at %d", p.i)
	}
	end := strings.IndexByte(p.s[p.i+1:], q)
	if end < 0 {
		return "", errors.New("unterminated string")
	}
	v := p.s[p.i+1 : p.i+1+end]
	p.i += end + 2
	return v, nil
}

func (p *npyParser) tuple() ([]int, error) {
	p.eat('(')
	dims := []int{}
	for {
		if p.eat(')') {
			return dims, nil
		}
		start := p.i
		for p.i < len(p.s) && p.s[p.i] >= '0' && p.s[p.i] <= '9' {
			p.i++
		}
		d, err := strconv.Atoi(p.s[start:p.i])
		if err != nil {
			return nil, fmt.Errorf("bad dimension at %d", start)
		}
		dims = append(dims, d)
		if !p.eat(',') && p.skip() != ')' {
			return nil, errors.New("want ',' or ')'")
		}
	}
}

// WriteNPY writes an F32 [N, D] tensor as a .npy file (format 1.0,
// little-endian float32, C order), atomically.
func WriteNPY(path string, t *tensor.Tensor) error {
	if t == nil || t.DType() != tensor.F32 || t.Rank() != 2 {
		return fmt.Errorf("embed: write %s: want an F32 [N, D] tensor, got %v", path, t)
	}
	return writeNPYFrom(path, t.Dim(0), t.Dim(1), bytes.NewReader(t.Bytes()))
}

// writeNPYFrom writes a .npy file of rows x cols float32, as WriteNPY does,
// its little-endian values read from values as they are written.
func writeNPYFrom(path string, rows, cols int, values io.Reader) error {
	dict := fmt.Sprintf("{'descr': '<f4', 'fortran_order': False, 'shape': (%d, %d), }", rows, cols)
	// NumPy pads the header with spaces and a newline so that the data
	// starts at a multiple of 64 bytes.
	pad := 64 - (10+len(dict)+1)%64
	if pad == 64 {
		pad = 0
	}
	header := dict + strings.Repeat(" ", pad) + "\n"
	if len(header) > math.MaxUint16 {
		return fmt.Errorf("embed: write %s: header too long", path)
	}
	err := atomicfile.Write(path, func(w io.Writer) error {
		pre := append(slices.Clone(npyMagic), 1, 0)
		pre = binary.LittleEndian.AppendUint16(pre, uint16(len(header)))
		if _, err := w.Write(pre); err != nil {
			return err
		}
		if _, err := io.WriteString(w, header); err != nil {
			return err
		}
		n := int64(4 * rows * cols)
		if got, err := io.CopyN(w, values, n); err != nil {
			return fmt.Errorf("%d of %d bytes of values: %w", got, n, err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("embed: write %s: %w", path, err)
	}
	return nil
}
