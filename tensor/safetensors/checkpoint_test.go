package safetensors

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// writeSharded writes entries to dir as shards of about three tensors each,
// with model.safetensors.index.json, and returns the entries by name.
func writeSharded(t *testing.T, dir string) map[string]Entry {
	t.Helper()
	rng := rand.New(rand.NewPCG(5, 6))
	entries := allDTypeEntries(rng)[:9]
	byName := map[string]Entry{}
	weightMap := map[string]string{}
	var total int
	for i := 0; i < len(entries); i += 3 {
		shard := "model-0000" + string(rune('1'+i/3)) + "-of-00003.safetensors"
		if err := Write(filepath.Join(dir, shard), entries[i:i+3], map[string]string{"format": "pt"}); err != nil {
			t.Fatal(err)
		}
		for _, e := range entries[i : i+3] {
			weightMap[e.Name] = shard
			byName[e.Name] = e
			total += len(e.Data)
		}
	}
	writeIndex(t, dir, map[string]any{"metadata": map[string]any{"total_size": total}, "weight_map": weightMap})
	return byName
}

func writeIndex(t *testing.T, dir string, index any) {
	t.Helper()
	b, err := json.Marshal(index)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, IndexFileName), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestOpenDirSharded(t *testing.T) {
	dir := t.TempDir()
	want := writeSharded(t, dir)
	c, err := OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	var names []string
	var total int
	for name, e := range want {
		names = append(names, name)
		total += len(e.Data)
	}
	slices.Sort(names)
	if !slices.Equal(c.Names(), names) {
		t.Errorf("Names() = %v, want %v", c.Names(), names)
	}
	files := c.Files()
	if len(files) != 3 || !slices.IsSorted(files) {
		t.Errorf("Files() = %v", files)
	}
	var size int64
	for _, p := range files {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		size += fi.Size()
	}
	if c.SizeOnDisk() != size {
		t.Errorf("SizeOnDisk() = %d, want %d", c.SizeOnDisk(), size)
	}
	if got := c.Metadata()["total_size"]; got != json.Number(strconv.Itoa(total)) {
		t.Errorf("total_size = %v (%T), want %d", got, got, total)
	}
	for name, e := range want {
		info, ok := c.Info(name)
		if !ok || info.DType != e.DType || !slices.Equal(info.Shape, e.Shape) || !slices.Contains(files, info.File) {
			t.Errorf("Info(%q) = %+v, %v", name, info, ok)
		}
		b, err := c.Bytes(name)
		if err != nil || !bytes.Equal(b, e.Data) {
			t.Errorf("Bytes(%q) = %v", name, err)
		}
	}
	if _, err := c.Tensor("BOOL.a"); err == nil || !strings.Contains(err.Error(), "BOOL") {
		t.Errorf("Tensor of a BOOL = %v", err)
	}
	if _, err := c.Bytes("nope"); err == nil || !strings.Contains(err.Error(), `"nope"`) {
		t.Errorf("Bytes(nope) = %v", err)
	}
	if _, ok := c.Info("nope"); ok {
		t.Error("Info(nope) is ok")
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Bytes(names[0]); err == nil {
		t.Error("Bytes after Close succeeded")
	}
}

func TestOpenDirSingle(t *testing.T) {
	dir := t.TempDir()
	e := Entry{Name: "w", DType: BF16, Shape: []int{2}, Data: []byte{1, 2, 3, 4}}
	if err := Write(filepath.Join(dir, SingleFileName), []Entry{e}, nil); err != nil {
		t.Fatal(err)
	}
	c, err := OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if !slices.Equal(c.Names(), []string{"w"}) || c.Metadata() != nil || len(c.Files()) != 1 {
		t.Errorf("names %v, metadata %v, files %v", c.Names(), c.Metadata(), c.Files())
	}
	w, err := c.Tensor("w")
	if err != nil || w.NumElements() != 2 {
		t.Errorf("Tensor(w) = %v, %v", w, err)
	}
}

func TestOpenDirErrors(t *testing.T) {
	empty := t.TempDir()
	if _, err := OpenDir(empty); err == nil || !strings.Contains(err.Error(), empty) || !strings.Contains(err.Error(), IndexFileName) {
		t.Errorf("OpenDir(empty) = %v", err)
	}

	shard := func(t *testing.T, dir, name string, tensors ...string) {
		var entries []Entry
		for _, n := range tensors {
			entries = append(entries, Entry{Name: n, DType: U8, Shape: []int{1}, Data: []byte{1}})
		}
		if err := Write(filepath.Join(dir, name), entries, nil); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name  string
		index string
		want  []string
	}{
		{"missing shard", `{"weight_map":{"a":"s1.safetensors","b":"gone.safetensors"}}`, []string{"gone.safetensors", IndexFileName, "does not exist"}},
		{"tensor not in shard", `{"weight_map":{"a":"s1.safetensors","x":"s1.safetensors"}}`, []string{`"x"`, "s1.safetensors", "does not hold it"}},
		{"path in shard name", `{"weight_map":{"a":"sub/s1.safetensors"}}`, []string{`"sub/s1.safetensors"`, "not a file name"}},
		{"parent shard name", `{"weight_map":{"a":"../s1.safetensors"}}`, []string{`"../s1.safetensors"`, "not a file name"}},
		{"dot-dot shard", `{"weight_map":{"a":".."}}`, []string{`".."`, "not a file name"}},
		{"backslash", `{"weight_map":{"a":"..\\s1.safetensors"}}`, []string{"not a file name"}},
		{"empty shard name", `{"weight_map":{"a":""}}`, []string{"not a file name"}},
		{"shard not a string", `{"weight_map":{"a":1}}`, []string{`"a"`, "the number 1"}},
		{"no weight_map", `{"metadata":{}}`, []string{`missing "weight_map"`}},
		{"duplicate tensor", `{"weight_map":{"a":"s1.safetensors","a":"s2.safetensors"}}`, []string{`duplicate key "a"`}},
		{"not JSON", `{"weight_map":`, []string{"invalid JSON"}},
		{"trailing data", `{"weight_map":{}} x`, []string{"after top-level value"}},
	}
	for _, tt := range tests {
		dir := t.TempDir()
		shard(t, dir, "s1.safetensors", "a", "b")
		shard(t, dir, "s2.safetensors", "c")
		if err := os.WriteFile(filepath.Join(dir, IndexFileName), []byte(tt.index), 0o644); err != nil {
			t.Fatal(err)
		}
		c, err := OpenDir(dir)
		if err == nil {
			c.Close()
			t.Errorf("%s: opened", tt.name)
			continue
		}
		for _, want := range append(tt.want, dir) {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%s: error %q does not contain %q", tt.name, err, want)
			}
		}
	}

	// A broken shard is reported with its own path.
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "s1.safetensors"), []byte("junk"), 0o644); err != nil {
		t.Fatal(err)
	}
	writeIndex(t, dir, map[string]any{"weight_map": map[string]string{"a": "s1.safetensors"}})
	if _, err := OpenDir(dir); err == nil || !strings.Contains(err.Error(), filepath.Join(dir, "s1.safetensors")) {
		t.Errorf("broken shard: %v", err)
	}
}

func TestOpenFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, tensors ...string) string {
		var entries []Entry
		for _, n := range tensors {
			entries = append(entries, Entry{Name: n, DType: U8, Shape: []int{1}, Data: []byte{byte(len(n))}})
		}
		path := filepath.Join(dir, name)
		if err := Write(path, entries, nil); err != nil {
			t.Fatal(err)
		}
		return path
	}
	b := write("b.safetensors", "x", "yy")
	a := write("a.safetensors", "zzz")
	c, err := OpenFiles(b, a)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c.Names(), []string{"x", "yy", "zzz"}) || !slices.Equal(c.Files(), []string{a, b}) {
		t.Errorf("names %v, files %v", c.Names(), c.Files())
	}
	if got, _ := c.Bytes("zzz"); !bytes.Equal(got, []byte{3}) {
		t.Errorf("zzz = %v", got)
	}
	c.Close()

	dup := write("dup.safetensors", "yy")
	if _, err := OpenFiles(a, b, dup); err == nil || !strings.Contains(err.Error(), `"yy"`) ||
		!strings.Contains(err.Error(), b) || !strings.Contains(err.Error(), dup) {
		t.Errorf("duplicate across files: %v", err)
	}
}
