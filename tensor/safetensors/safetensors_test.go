package safetensors

import (
	"bytes"
	"encoding/binary"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"github.com/compassml/compass/tensor"
)

// rawFile returns a file made of header's length, header and n zero bytes.
func rawFile(header string, n int) []byte {
	b := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
	b = append(b, header...)
	return append(b, make([]byte, n)...)
}

// writeFile writes contents to name in a new temporary directory.
func writeFile(t testing.TB, name string, contents []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, contents, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func randomBytes(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

func mustOpen(t testing.TB, path string) *File {
	t.Helper()
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func TestDTypeNames(t *testing.T) {
	names := strings.Fields("BOOL U8 I8 I16 U16 I32 U32 I64 U64 F16 BF16 F32 F64 C64 " +
		"F8_E5M2 F8_E4M3 F8_E8M0 F8_E4M3FNUZ F8_E5M2FNUZ F4 F6_E2M3 F6_E3M2")
	if len(names) != numDTypes-1 {
		t.Fatalf("%d names for %d dtypes", len(names), numDTypes-1)
	}
	for _, name := range names {
		d, err := ParseDType(name)
		if err != nil {
			t.Fatal(err)
		}
		if d.String() != name {
			t.Errorf("ParseDType(%q).String() = %q", name, d)
		}
	}
	bits := map[DType]int{F4: 4, F6E2M3: 6, F6E3M2: 6, Bool: 8, F8E8M0: 8, BF16: 16, F32: 32, C64: 64, U64: 64}
	for d, want := range bits {
		if d.Bits() != want {
			t.Errorf("%s.Bits() = %d, want %d", d, d.Bits(), want)
		}
	}
	if _, err := ParseDType("bf16"); err == nil || !strings.Contains(err.Error(), `"bf16"`) {
		t.Errorf("ParseDType(bf16) = %v, want an error naming it", err)
	}
	if DType(0).Valid() || DType(numDTypes).Valid() || DType(0).Bits() != 0 {
		t.Error("out-of-range DType is valid")
	}
	for _, dt := range []tensor.DType{tensor.F32, tensor.BF16, tensor.F16, tensor.I32} {
		d, ok := FromTensorDType(dt)
		back, ok2 := d.TensorDType()
		if !ok || !ok2 || back != dt || d.String() != dt.String() {
			t.Errorf("%s -> %s -> %s", dt, d, back)
		}
	}
	if _, ok := I64.TensorDType(); ok {
		t.Error("I64 has a tensor.DType")
	}
}

func TestByteLen(t *testing.T) {
	tests := []struct {
		d     DType
		shape []int
		want  int64 // -1: error
	}{
		{F32, nil, 4},
		{F32, []int{2, 3}, 24},
		{F32, []int{2, 0, 3}, 0},
		{F4, []int{2}, 1},
		{F4, []int{3}, -1},
		{F4, nil, -1}, // a scalar F4 is half a byte
		{F6E2M3, []int{4}, 3},
		{F6E3M2, []int{2}, -1},
		{C64, []int{3}, 24},
		{U8, []int{-1}, -1},
		{U8, []int{1 << 32, 1 << 32}, -1},
		{I32, []int{2, 1<<63 - 1}, -1},
		{U8, []int{0, 1 << 40, 1 << 40}, 0},  // the running product stays 0
		{U8, []int{1 << 40, 1 << 40, 0}, -1}, // the reference overflows too
	}
	for _, tt := range tests {
		got, err := tt.d.ByteLen(tt.shape)
		if tt.want < 0 {
			if err == nil {
				t.Errorf("%s%v: %d bytes, want an error", tt.d, tt.shape, got)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("%s%v: %d, %v; want %d", tt.d, tt.shape, got, err, tt.want)
		}
	}
}

// allDTypeEntries returns tensors of every dtype in several shapes:
// a scalar where the type is a whole byte, a zero-size one and a matrix.
func allDTypeEntries(rng *rand.Rand) []Entry {
	var entries []Entry
	for d := Bool; d < numDTypes; d++ {
		shapes := [][]int{{0, 3}, {2, 4}, {8}}
		if d.Bits()%8 == 0 {
			shapes = append(shapes, []int{})
		}
		for i, shape := range shapes {
			n, err := d.ByteLen(shape)
			if err != nil {
				panic(err)
			}
			entries = append(entries, Entry{
				Name:  d.String() + "." + string(rune('a'+i)),
				DType: d,
				Shape: shape,
				Data:  randomBytes(rng, int(n)),
			})
		}
	}
	return entries
}

func TestRoundTripEveryDType(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	entries := allDTypeEntries(rng)
	rng.Shuffle(len(entries), func(i, j int) { entries[i], entries[j] = entries[j], entries[i] })
	metadata := map[string]string{"format": "pt", "note": "<&> \"quoted\" \u00e9\n"}
	path := filepath.Join(t.TempDir(), "all.safetensors")
	if err := Write(path, entries, metadata); err != nil {
		t.Fatal(err)
	}
	f := mustOpen(t, path)

	var want []string
	for _, e := range entries {
		want = append(want, e.Name)
	}
	slices.Sort(want)
	if got := f.Names(); !slices.Equal(got, want) {
		t.Fatalf("Names() = %v, want %v", got, want)
	}
	if got := f.Metadata(); !reflect.DeepEqual(got, metadata) {
		t.Errorf("Metadata() = %v, want %v", got, metadata)
	}
	fi, _ := os.Stat(path)
	if f.Size() != fi.Size() || f.Path() != path {
		t.Errorf("Size, Path = %d, %s; want %d, %s", f.Size(), f.Path(), fi.Size(), path)
	}
	for _, e := range entries {
		info, ok := f.Info(e.Name)
		if !ok {
			t.Fatalf("no info for %q", e.Name)
		}
		if info.Name != e.Name || info.DType != e.DType || !slices.Equal(info.Shape, e.Shape) ||
			info.End-info.Begin != int64(len(e.Data)) || info.File != path {
			t.Errorf("Info(%q) = %+v, want %s%v of %d bytes", e.Name, info, e.DType, e.Shape, len(e.Data))
		}
		if e.Shape != nil && info.Shape == nil {
			t.Errorf("Info(%q).Shape is nil, want []", e.Name)
		}
		// The reference's layout aligns every tensor to its element size.
		if size := int64(e.DType.Bits() / 8); size > 0 && info.Begin%size != 0 {
			t.Errorf("%q starts at %d, not aligned to %d", e.Name, info.Begin, size)
		}
		b, err := f.Bytes(e.Name)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b, e.Data) {
			t.Errorf("Bytes(%q) differ", e.Name)
		}
	}
	if _, ok := f.Info("missing"); ok {
		t.Error("Info(missing) is ok")
	}
	if _, err := f.Bytes("missing"); err == nil || !strings.Contains(err.Error(), `"missing"`) {
		t.Errorf("Bytes(missing) = %v", err)
	}
}

func TestTensor(t *testing.T) {
	f32, _ := tensor.FromF32([]float32{1, -2, 3.5, 4, 5, 6}, 2, 3)
	bf16 := tensor.New(tensor.BF16, 3)
	copy(bf16.U16(), []uint16{tensor.F32ToBF16(1.5), tensor.F32ToBF16(-2), 0})
	f16 := tensor.New(tensor.F16)
	f16.U16()[0] = tensor.F32ToF16(0.25)
	entries := []Entry{
		EntryFromTensor("f32", f32),
		EntryFromTensor("bf16", bf16),
		EntryFromTensor("f16", f16),
		{Name: "ids", DType: I64, Shape: []int{2}, Data: make([]byte, 16)},
	}
	path := filepath.Join(t.TempDir(), "t.safetensors")
	if err := Write(path, entries, nil); err != nil {
		t.Fatal(err)
	}
	f := mustOpen(t, path)
	for _, want := range []*tensor.Tensor{f32, bf16, f16} {
		name := strings.ToLower(want.DType().String())
		got, err := f.Tensor(name)
		if err != nil {
			t.Fatal(err)
		}
		if got.DType() != want.DType() || !got.SameShape(want) || !slices.Equal(got.ToF32(), want.ToF32()) {
			t.Errorf("Tensor(%q) = %v %v, want %v %v", name, got, got.ToF32(), want, want.ToF32())
		}
		b, _ := f.Bytes(name)
		if len(b) > 0 && unsafe.SliceData(got.Bytes()) != unsafe.SliceData(b) {
			t.Errorf("Tensor(%q) is a copy, want a view of the mapping", name)
		}
	}
	if _, err := f.Tensor("ids"); err == nil || !strings.Contains(err.Error(), "I64") || !strings.Contains(err.Error(), `"ids"`) || !strings.Contains(err.Error(), path) {
		t.Errorf("Tensor(ids) = %v, want an error naming the dtype, tensor and file", err)
	}
}

func TestTensorMisaligned(t *testing.T) {
	// A writer that does not align: one byte of U8, then an F32 at offset 1.
	hdr := `{"b":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"w":{"dtype":"F32","shape":[2],"data_offsets":[1,9]}}`
	contents := rawFile(hdr, 0)
	contents = append(contents, 7)
	contents = binary.LittleEndian.AppendUint32(contents, 0x3fc00000) // 1.5
	contents = binary.LittleEndian.AppendUint32(contents, 0xc0000000) // -2
	f := mustOpen(t, writeFile(t, "m.safetensors", contents))
	w, err := f.Tensor("w")
	if err != nil {
		t.Fatal(err)
	}
	if got := w.F32(); !slices.Equal(got, []float32{1.5, -2}) {
		t.Errorf("w = %v", got)
	}
}

// The byte vectors of the reference's own tests (safetensors/src/tensor.rs).
func TestReferenceVectors(t *testing.T) {
	f32 := func(vals ...float32) []byte {
		var b []byte
		for _, v := range vals {
			b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
		}
		return b
	}
	tests := []struct {
		name     string
		entries  []Entry
		metadata map[string]string
		want     []byte
	}{
		{"test_serialization", []Entry{{"attn.0", F32, []int{1, 2, 3}, f32(0, 1, 2, 3, 4, 5)}}, nil,
			append(rawFile(`{"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}}`, 0), f32(0, 1, 2, 3, 4, 5)...)},
		{"test_serialization_forced_alignement", []Entry{{"attn0", F32, []int{1, 1, 2, 3}, f32(0, 1, 2, 3, 4, 5)}}, nil,
			append(rawFile(`{"attn0":{"dtype":"F32","shape":[1,1,2,3],"data_offsets":[0,24]}}       `, 0), f32(0, 1, 2, 3, 4, 5)...)},
		{"test_serialization_fp4", []Entry{{"attn.0", F4, []int{1, 2}, []byte{0}}}, nil,
			rawFile(`{"attn.0":{"dtype":"F4","shape":[1,2],"data_offsets":[0,1]}}    `, 1)},
		{"test_empty", nil, nil, rawFile(`{}      `, 0)},
		{"test_empty metadata", nil, map[string]string{"framework": "pt"},
			rawFile(`{"__metadata__":{"framework":"pt"}}     `, 0)},
	}
	for _, tt := range tests {
		path := filepath.Join(t.TempDir(), "x.safetensors")
		if err := Write(path, tt.entries, tt.metadata); err != nil {
			t.Fatal(err)
		}
		got, _ := os.ReadFile(path)
		if !bytes.Equal(got, tt.want) {
			t.Errorf("%s:\n got %q\nwant %q", tt.name, got, tt.want)
		}
		mustOpen(t, path)
	}

	// Files the reference reads.
	for _, contents := range []string{
		"<\x00\x00\x00\x00\x00\x00\x00{\"test\":{\"dtype\":\"I32\",\"shape\":[2,2],\"data_offsets\":[0,16]}}\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00",
		"8\x00\x00\x00\x00\x00\x00\x00{\"test\":{\"dtype\":\"I32\",\"shape\":[],\"data_offsets\":[0,4]}}\x00\x00\x00\x00",
		"<\x00\x00\x00\x00\x00\x00\x00{\"test\":{\"dtype\":\"I32\",\"shape\":[2,0],\"data_offsets\":[0, 0]}}",
		"\x06\x00\x00\x00\x00\x00\x00\x00{}\x0D\x20\x09\x0A",
		"\x06\x00\x00\x00\x00\x00\x00\x00\x09\x0A{}\x0D\x20",
	} {
		path := writeFile(t, "ref.safetensors", []byte(contents))
		f, err := Open(path)
		if err != nil {
			t.Errorf("%q: %v", contents, err)
			continue
		}
		f.Close()
	}
}

func TestAccepted(t *testing.T) {
	tests := []struct {
		name, header string
		dataLen      int
		check        func(*File) bool
	}{
		{"unknown fields are ignored", `{"w":{"dtype":"U8","shape":[2],"data_offsets":[0,2],"extra":{"a":[1,{}]}}}`, 2,
			func(f *File) bool { return len(f.Names()) == 1 }},
		{"metadata null", `{"__metadata__":null}`, 0,
			func(f *File) bool { return f.Metadata() == nil }},
		{"empty metadata", `{"__metadata__":{}}`, 0,
			func(f *File) bool { return f.Metadata() != nil && len(f.Metadata()) == 0 }},
		{"any order, zero-size tensors", `{"c":{"dtype":"U8","shape":[1],"data_offsets":[3,4]},"z":{"dtype":"F32","shape":[0],"data_offsets":[3,3]},"a":{"dtype":"U8","shape":[3],"data_offsets":[0,3]},"e":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}`, 4,
			func(f *File) bool { return slices.Equal(f.Names(), []string{"a", "c", "e", "z"}) }},
		{"empty name", `{"":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}`, 1,
			func(f *File) bool { _, ok := f.Info(""); return ok }},
		{"escaped names", `{"a\u00e9\n":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}`, 1,
			func(f *File) bool { _, ok := f.Info("a\u00e9\n"); return ok }},
	}
	for _, tt := range tests {
		path := writeFile(t, "ok.safetensors", rawFile(tt.header, tt.dataLen))
		f, err := Open(path)
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		if !tt.check(f) {
			t.Errorf("%s: unexpected result", tt.name)
		}
		f.Close()
	}
}

func TestBadFiles(t *testing.T) {
	u8 := func(name string, begin, end int) string {
		return `"` + name + `":{"dtype":"U8","shape":[` + strconv.Itoa(end-begin) + `],"data_offsets":[` + strconv.Itoa(begin) + `,` + strconv.Itoa(end) + `]}`
	}
	hugeLen := binary.LittleEndian.AppendUint64(nil, maxHeaderSize+1)
	tests := []struct {
		name     string
		contents []byte
		want     []string // substrings of the error besides the path
	}{
		{"empty file", nil, []string{"too short"}},
		{"short file", []byte{1, 2, 3, 4, 5}, []string{"too short"}},
		{"header too large", append(hugeLen, "{}"...), []string{"over the limit"}},
		{"header length max u64", append(binary.LittleEndian.AppendUint64(nil, 1<<64-1), "{}"...), []string{"over the limit"}},
		{"header past the end", append(binary.LittleEndian.AppendUint64(nil, 100), "{}"...), []string{"runs past the end"}},
		{"empty header", rawFile("", 0), []string{"unexpected end"}},
		{"blank header", rawFile("        ", 0), []string{"unexpected end"}},
		{"invalid JSON", rawFile(`{"w":`, 0), []string{"invalid JSON"}},
		{"invalid UTF-8", rawFile("{\"\xff\":1}", 0), []string{"UTF-8"}},
		{"not an object", rawFile(`[]`, 0), []string{"want a JSON object"}},
		{"a string", rawFile(`"x"`, 0), []string{"want a JSON object"}},
		{"trailing JSON", rawFile(`{} {}`, 0), []string{"after top-level value"}},
		{"trailing garbage", rawFile(`{} x`, 0), []string{"after top-level value"}},
		{"entry not an object", rawFile(`{"w":3}`, 0), []string{`tensor "w"`, "want a JSON object"}},
		{"missing dtype", rawFile(`{"w":{"shape":[1],"data_offsets":[0,1]}}`, 1), []string{`tensor "w"`, `missing "dtype"`}},
		{"missing shape", rawFile(`{"w":{"dtype":"U8","data_offsets":[0,1]}}`, 1), []string{`tensor "w"`, `missing "shape"`}},
		{"missing offsets", rawFile(`{"w":{"dtype":"U8","shape":[1]}}`, 1), []string{`tensor "w"`, `missing "data_offsets"`}},
		{"dtype not a string", rawFile(`{"w":{"dtype":8,"shape":[1],"data_offsets":[0,1]}}`, 1), []string{`tensor "w"`, "dtype is the number 8"}},
		{"unknown dtype", rawFile(`{"w":{"dtype":"Q4_K","shape":[1],"data_offsets":[0,1]}}`, 1), []string{`tensor "w"`, `unknown dtype "Q4_K"`}},
		{"shape not an array", rawFile(`{"w":{"dtype":"U8","shape":"1","data_offsets":[0,1]}}`, 1), []string{`tensor "w"`, "shape is a string"}},
		{"negative dimension", rawFile(`{"w":{"dtype":"U8","shape":[-1],"data_offsets":[0,1]}}`, 1), []string{`tensor "w"`, "negative"}},
		{"fractional dimension", rawFile(`{"w":{"dtype":"U8","shape":[1.0],"data_offsets":[0,1]}}`, 1), []string{`tensor "w"`, "want an integer"}},
		{"exponent dimension", rawFile(`{"w":{"dtype":"U8","shape":[1e0],"data_offsets":[0,1]}}`, 1), []string{`tensor "w"`, "want an integer"}},
		{"dimension null", rawFile(`{"w":{"dtype":"U8","shape":[null],"data_offsets":[0,1]}}`, 1), []string{`tensor "w"`, "null"}},
		{"dimension beyond int64", rawFile(`{"w":{"dtype":"I32","shape":[2,18446744073709551614],"data_offsets":[0,16]}}`, 16), []string{`tensor "w"`, "too large"}},
		{"element count overflow", rawFile(`{"w":{"dtype":"U8","shape":[4294967296,4294967296],"data_offsets":[0,16]}}`, 16), []string{`tensor "w"`, "overflow"}},
		{"byte count overflow", rawFile(`{"w":{"dtype":"I32","shape":[2,9223372036854775807],"data_offsets":[0,16]}}`, 16), []string{`tensor "w"`, "overflow"}},
		{"one offset", rawFile(`{"w":{"dtype":"U8","shape":[1],"data_offsets":[1]}}`, 1), []string{`tensor "w"`, "want [begin, end]"}},
		{"three offsets", rawFile(`{"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1,2]}}`, 1), []string{`tensor "w"`, "want [begin, end]"}},
		{"negative offset", rawFile(`{"w":{"dtype":"U8","shape":[1],"data_offsets":[-1,0]}}`, 1), []string{`tensor "w"`, "negative"}},
		{"offset beyond int64", rawFile(`{"w":{"dtype":"U8","shape":[1],"data_offsets":[0,99999999999999999999]}}`, 1), []string{`tensor "w"`, "too large"}},
		{"begin after end", rawFile(`{"w":{"dtype":"U8","shape":[0],"data_offsets":[4,0]}}`, 4), []string{`tensor "w"`, "begin after"}},
		{"size mismatch", rawFile(`{"w":{"dtype":"I32","shape":[2,2],"data_offsets":[0,4]}}`, 4), []string{`tensor "w"`, "is 16 bytes", "hold 4"}},
		{"F4 not whole bytes", rawFile(`{"w":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}}`, 2), []string{`tensor "w"`, "not a whole number of bytes"}},
		{"offsets past the data", rawFile(`{`+u8("a", 0, 4)+`,`+u8("b", 4, 8)+`}`, 6), []string{`tensor "b"`, "past the end"}},
		{"truncated data", rawFile(`{`+u8("a", 0, 4)+`}`, 0), []string{`tensor "a"`, "past the end"}},
		{"trailing bytes", rawFile(`{`+u8("a", 0, 4)+`}`, 5), []string{"1 bytes after the last tensor"}},
		{"data without tensors", rawFile(`{}`, 3), []string{"3 bytes after the last tensor"}},
		{"overlap", rawFile(`{`+u8("a", 0, 8)+`,`+u8("b", 4, 12)+`}`, 12), []string{`tensor "b"`, `overlap tensor "a"`}},
		{"same range twice", rawFile(`{`+u8("a", 0, 4)+`,`+u8("b", 0, 4)+`}`, 4), []string{`tensor "b"`, "overlap"}},
		{"hole", rawFile(`{`+u8("a", 0, 4)+`,`+u8("b", 8, 12)+`}`, 12), []string{`tensor "b"`, "hole [4, 8)"}},
		{"hole at the start", rawFile(`{`+u8("a", 4, 8)+`}`, 8), []string{`tensor "a"`, "start at 0"}},
		{"duplicate tensor", rawFile(`{`+u8("a", 0, 4)+`,`+u8("a", 0, 4)+`}`, 4), []string{`duplicate key "a"`}},
		{"duplicate field", rawFile(`{"w":{"dtype":"U8","dtype":"U8","shape":[1],"data_offsets":[0,1]}}`, 1), []string{`tensor "w"`, `duplicate key "dtype"`}},
		{"metadata not an object", rawFile(`{"__metadata__":"pt"}`, 0), []string{"__metadata__", "want a JSON object"}},
		{"metadata value not a string", rawFile(`{"__metadata__":{"n":1}}`, 0), []string{"__metadata__", `value of "n" is the number 1`}},
		{"metadata nested", rawFile(`{"__metadata__":{"n":{"a":"b"}}}`, 0), []string{"__metadata__", `value of "n" is an object`}},
		{"duplicate metadata", rawFile(`{"__metadata__":{},"__metadata__":{}}`, 0), []string{`duplicate key "__metadata__"`}},
		{"duplicate metadata key", rawFile(`{"__metadata__":{"a":"1","a":"2"}}`, 0), []string{"__metadata__", `duplicate key "a"`}},
	}
	for _, tt := range tests {
		path := writeFile(t, "bad.safetensors", tt.contents)
		f, err := Open(path)
		if err == nil {
			f.Close()
			t.Errorf("%s: opened, want an error", tt.name)
			continue
		}
		msg := err.Error()
		for _, want := range append(tt.want, path) {
			if !strings.Contains(msg, want) {
				t.Errorf("%s: error %q does not contain %q", tt.name, msg, want)
			}
		}
	}

	if _, err := Open(t.TempDir()); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("Open(dir) = %v", err)
	}
	missing := filepath.Join(t.TempDir(), "missing.safetensors")
	if _, err := Open(missing); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("Open(missing) = %v", err)
	}
}

// Every truncation of a valid file, and every extension, is refused cleanly.
func TestTruncatedFiles(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	entries := allDTypeEntries(rng)[:12]
	dir := t.TempDir()
	path := filepath.Join(dir, "full.safetensors")
	if err := Write(path, entries, map[string]string{"a": "b"}); err != nil {
		t.Fatal(err)
	}
	full, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cut := filepath.Join(dir, "cut.safetensors")
	for n := range len(full) {
		if err := os.WriteFile(cut, full[:n], 0o644); err != nil {
			t.Fatal(err)
		}
		if f, err := Open(cut); err == nil {
			f.Close()
			t.Fatalf("a file cut to %d of %d bytes opened", n, len(full))
		}
		// The same bytes, validated without the file system.
		if _, err := newFile("mem", full[:n]); err == nil {
			t.Fatalf("%d of %d bytes validated", n, len(full))
		}
	}
	if _, err := newFile("mem", append(slices.Clone(full), 0)); err == nil {
		t.Fatal("a file with a trailing byte validated")
	}
	// Flipping each header byte must not panic either.
	for i := 8; i < len(full)-1; i++ {
		b := slices.Clone(full)
		b[i] ^= 0x5a
		newFile("mem", b)
	}
}

func TestEmptyFile(t *testing.T) {
	for _, md := range []map[string]string{nil, {"format": "pt"}} {
		path := filepath.Join(t.TempDir(), "empty.safetensors")
		if err := Write(path, nil, md); err != nil {
			t.Fatal(err)
		}
		f := mustOpen(t, path)
		if len(f.Names()) != 0 || !reflect.DeepEqual(f.Metadata(), md) {
			t.Errorf("names %v, metadata %v", f.Names(), f.Metadata())
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestClose(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.safetensors")
	w, _ := tensor.FromF32([]float32{1, 2}, 2)
	if err := Write(path, []Entry{EntryFromTensor("w", w)}, nil); err != nil {
		t.Fatal(err)
	}
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	// The header as stored: the bytes after the length, up to the data.
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n := binary.LittleEndian.Uint64(raw)
	if h, err := f.Header(); err != nil || string(h) != string(raw[8:8+n]) {
		t.Errorf("Header = %q, %v; the file's %q", h, err, raw[8:8+n])
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Header(); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Errorf("Header after Close = %v", err)
	}
	if _, err := f.Bytes("w"); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Errorf("Bytes after Close = %v", err)
	}
	if _, err := f.Tensor("w"); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Errorf("Tensor after Close = %v", err)
	}
	if err := f.Close(); err == nil {
		t.Error("second Close succeeded")
	}
	if _, ok := f.Info("w"); !ok || len(f.Names()) != 1 {
		t.Error("header information lost after Close")
	}
}

func TestWriteRefusesBadEntries(t *testing.T) {
	ok := Entry{Name: "w", DType: U8, Shape: []int{2}, Data: []byte{1, 2}}
	tests := []struct {
		name     string
		entries  []Entry
		metadata map[string]string
		want     string
	}{
		{"empty name", []Entry{{Name: "", DType: U8, Shape: []int{1}, Data: []byte{1}}}, nil, "empty name"},
		{"reserved name", []Entry{{Name: "__metadata__", DType: U8, Shape: []int{1}, Data: []byte{1}}}, nil, "reserved"},
		{"duplicate", []Entry{ok, ok}, nil, `"w": duplicate`},
		{"invalid dtype", []Entry{{Name: "x", Shape: []int{1}, Data: []byte{1}}}, nil, "invalid dtype"},
		{"short data", []Entry{{Name: "x", DType: F32, Shape: []int{2}, Data: make([]byte, 7)}}, nil, "needs 8 bytes, data has 7"},
		{"negative dim", []Entry{{Name: "x", DType: F32, Shape: []int{-2}}}, nil, "negative"},
		{"half a byte", []Entry{{Name: "x", DType: F4, Shape: []int{1}, Data: []byte{1}}}, nil, "whole number of bytes"},
		{"bad UTF-8 name", []Entry{{Name: "\xff", DType: U8, Shape: []int{1}, Data: []byte{1}}}, nil, "UTF-8"},
		{"bad UTF-8 metadata", []Entry{ok}, map[string]string{"k": "\xfe"}, "UTF-8"},
		{"huge metadata", nil, map[string]string{"k": strings.Repeat("a", maxHeaderSize)}, "over the limit"},
	}
	for _, tt := range tests {
		dir := t.TempDir()
		path := filepath.Join(dir, "w.safetensors")
		err := Write(path, tt.entries, tt.metadata)
		if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), path) {
			t.Errorf("%s: Write = %v, want an error with %q and the path", tt.name, err, tt.want)
		}
		if left, _ := os.ReadDir(dir); len(left) != 0 {
			t.Errorf("%s: left %v behind", tt.name, left)
		}
	}
}

func TestWriteIsAtomic(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "m.safetensors")
	old := []Entry{{Name: "w", DType: U8, Shape: []int{3}, Data: []byte{1, 2, 3}}}
	if err := Write(path, old, nil); err != nil {
		t.Fatal(err)
	}
	f := mustOpen(t, path)

	// Replacing the file leaves the open mapping on the old contents.
	if err := Write(path, []Entry{{Name: "v", DType: U8, Shape: []int{1}, Data: []byte{9}}}, nil); err != nil {
		t.Fatal(err)
	}
	if b, err := f.Bytes("w"); err != nil || !bytes.Equal(b, []byte{1, 2, 3}) {
		t.Errorf("old mapping reads %v, %v", b, err)
	}
	g := mustOpen(t, path)
	if !slices.Equal(g.Names(), []string{"v"}) {
		t.Errorf("new file has %v", g.Names())
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, %v", fi.Mode(), err)
	}

	// A failed rename (the target is a directory) leaves nothing behind.
	sub := filepath.Join(dir, "sub")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := Write(sub, old, nil); err == nil {
		t.Error("Write over a directory succeeded")
	}
	if err := Write(filepath.Join(dir, "m.safetensors", "x.safetensors"), old, nil); err == nil {
		t.Error("Write under a file succeeded")
	}
	entries, _ := os.ReadDir(dir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if !slices.Equal(names, []string{"m.safetensors", "sub"}) {
		t.Errorf("directory holds %v", names)
	}
}

// Encode writes the bytes Write puts in the file, and refuses what Write
// refuses.
func TestEncodeIsWrite(t *testing.T) {
	entries := []Entry{{Name: "b", DType: F32, Shape: []int{2}, Data: make([]byte, 8)}, {Name: "a", DType: U8, Shape: []int{3}, Data: []byte{1, 2, 3}}}
	meta := map[string]string{"format": "pt"}
	path := filepath.Join(t.TempDir(), "x.safetensors")
	if err := Write(path, entries, meta); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := Encode(&buf, entries, meta); err != nil {
		t.Fatal(err)
	}
	if file, _ := os.ReadFile(path); !bytes.Equal(buf.Bytes(), file) {
		t.Errorf("Encode gave %d bytes that differ from Write's %d", buf.Len(), len(file))
	}
	if err := Encode(&buf, []Entry{entries[0], entries[0]}, nil); err == nil || !strings.Contains(err.Error(), "duplicate") {
		t.Errorf("duplicate entries: %v", err)
	}
}

func TestConcurrentReads(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	entries := allDTypeEntries(rng)
	path := filepath.Join(t.TempDir(), "c.safetensors")
	if err := Write(path, entries, nil); err != nil {
		t.Fatal(err)
	}
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error)
	for range 4 {
		go func() {
			var err error
			for _, e := range entries {
				var b []byte
				if b, err = f.Bytes(e.Name); err != nil {
					break
				}
				if !bytes.Equal(b, e.Data) {
					err = os.ErrInvalid
					break
				}
				if _, ok := e.DType.TensorDType(); ok {
					if _, err = f.Tensor(e.Name); err != nil {
						break
					}
				}
			}
			done <- err
		}()
	}
	for range 4 {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// WriteFrom writes the bytes Write writes, the data read from a reader;
// a reader that runs short is an error that leaves no file.
func TestWriteFrom(t *testing.T) {
	dir := t.TempDir()
	data := make([]byte, 4*3*5)
	for i := range data {
		data[i] = byte(i * 7)
	}
	meta := map[string]string{"count": "3", "embedder": "x"}
	e := Entry{Name: "embeddings", DType: F32, Shape: []int{3, 5}, Data: data}
	if err := Write(filepath.Join(dir, "a.safetensors"), []Entry{e}, meta); err != nil {
		t.Fatal(err)
	}
	e.Data = nil
	if err := WriteFrom(filepath.Join(dir, "b.safetensors"), e, bytes.NewReader(data), meta); err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(filepath.Join(dir, "a.safetensors"))
	b, _ := os.ReadFile(filepath.Join(dir, "b.safetensors"))
	if len(a) == 0 || !bytes.Equal(a, b) {
		t.Errorf("WriteFrom wrote %d bytes unlike Write's %d", len(b), len(a))
	}
	short := filepath.Join(dir, "short.safetensors")
	if err := WriteFrom(short, e, bytes.NewReader(data[:len(data)-1]), meta); err == nil || !strings.Contains(err.Error(), "59 of its 60 bytes") {
		t.Errorf("a reader one byte short: %v", err)
	}
	if left, _ := os.ReadDir(dir); len(left) != 2 {
		t.Errorf("files after a short reader: %v", left)
	}
}
