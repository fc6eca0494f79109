package safetensors

import (
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// FuzzParseHeader feeds arbitrary headers to the parser. It must never
// panic, and a header it accepts must describe a file that Open accepts
// and that survives a round trip through Write and Open with the same
// tensors (names, dtypes, shapes, sizes) and metadata. The seed corpus is
// in testdata/fuzz/FuzzParseHeader.
func FuzzParseHeader(f *testing.F) {
	for _, seed := range []string{
		`{}`,
		`{"__metadata__":{"format":"pt"}}`,
		`{"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]}}`,
		`{"a":{"dtype":"F4","shape":[2],"data_offsets":[0,1]},"b":{"dtype":"F6_E2M3","shape":[4],"data_offsets":[1,4]}}`,
		`{"s":{"dtype":"I64","shape":[],"data_offsets":[0,8]},"z":{"dtype":"BF16","shape":[0,5],"data_offsets":[8,8]}}`,
		`{"w":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"w":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}}`,
		`{"w":{"dtype":"I32","shape":[2,9223372036854775807],"data_offsets":[0,16]}}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, hdr []byte) {
		h, err := parseHeader(hdr)
		if err != nil {
			return
		}
		if h.dataLen > 1<<20 {
			return // valid, but too big to build here
		}

		// The file the header describes must open, and must not with a
		// byte more or less.
		contents := rawFile(string(hdr), int(h.dataLen))
		if _, err := newFile("mem", contents); err != nil {
			t.Fatalf("header accepted, file refused: %v", err)
		}
		if _, err := newFile("mem", append(slices.Clone(contents), 0)); err == nil {
			t.Fatal("file with a trailing byte accepted")
		}
		if h.dataLen > 0 {
			if _, err := newFile("mem", contents[:len(contents)-1]); err == nil {
				t.Fatal("truncated file accepted")
			}
		}

		// Round trip through Write and Open. Write refuses empty names,
		// which the format (and the reference reader) allow: skip those.
		var entries []Entry
		for _, info := range h.tensors {
			if info.Name == "" {
				return
			}
			entries = append(entries, Entry{
				Name:  info.Name,
				DType: info.DType,
				Shape: info.Shape,
				Data:  contents[8+len(hdr)+int(info.Begin) : 8+len(hdr)+int(info.End)],
			})
		}
		path := filepath.Join(t.TempDir(), "rt.safetensors")
		if err := Write(path, entries, h.metadata); err != nil {
			t.Fatalf("Write of an accepted header: %v", err)
		}
		rt, err := Open(path)
		if err != nil {
			b, _ := os.ReadFile(path)
			t.Fatalf("Open of a written file: %v\n%q", err, b)
		}
		defer rt.Close()
		if !reflect.DeepEqual(rt.Metadata(), h.metadata) {
			t.Fatalf("metadata %v, want %v", rt.Metadata(), h.metadata)
		}
		if len(rt.Names()) != len(h.tensors) {
			t.Fatalf("%d tensors, want %d", len(rt.Names()), len(h.tensors))
		}
		for _, want := range h.tensors {
			got, ok := rt.Info(want.Name)
			if !ok || got.DType != want.DType || !slices.Equal(got.Shape, want.Shape) ||
				got.End-got.Begin != want.End-want.Begin {
				t.Fatalf("tensor %q: got %+v, want %+v", want.Name, got, want)
			}
		}
	})
}

// The committed corpus is named by what each entry should do: valid_*
// headers parse, bad_* ones do not.
func TestFuzzCorpus(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzParseHeader")
	files, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, file := range files {
		b, err := os.ReadFile(filepath.Join(dir, file.Name()))
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		quoted, ok := strings.CutPrefix(lines[len(lines)-1], "[]byte(")
		if len(lines) != 2 || lines[0] != "go test fuzz v1" || !ok {
			t.Fatalf("%s: not a corpus file", file.Name())
		}
		hdr, err := strconv.Unquote(strings.TrimSuffix(quoted, ")"))
		if err != nil {
			t.Fatalf("%s: %v", file.Name(), err)
		}
		_, err = parseHeader([]byte(hdr))
		switch {
		case strings.HasPrefix(file.Name(), "valid_") && err != nil:
			t.Errorf("%s: %v", file.Name(), err)
		case strings.HasPrefix(file.Name(), "bad_") && err == nil:
			t.Errorf("%s: accepted", file.Name())
		}
	}
}
