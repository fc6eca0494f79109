package safetensors

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// sink keeps the sums of the benchmarks alive.
var sink uint64

// sum adds up b eight bytes at a time, so that the benchmarks measure
// reaching the bytes more than adding them.
func sum(b []byte) uint64 {
	var s uint64
	for len(b) >= 8 {
		s += binary.LittleEndian.Uint64(b)
		b = b[8:]
	}
	for _, c := range b {
		s += uint64(c)
	}
	return s
}

// makeBenchFile writes a file of n BF16 tensors of tensorBytes each in a
// temporary directory of b. The tensors share one buffer, so writing a
// large file needs little memory.
func makeBenchFile(b *testing.B, n, tensorBytes int) string {
	b.Helper()
	data := make([]byte, tensorBytes)
	for i := range data {
		data[i] = byte(i * 7)
	}
	entries := make([]Entry, n)
	for i := range entries {
		entries[i] = Entry{
			Name:  fmt.Sprintf("model.layers.%d.mlp.weight", i),
			DType: BF16,
			Shape: []int{tensorBytes / 2},
			Data:  data,
		}
	}
	path := filepath.Join(b.TempDir(), "bench.safetensors")
	if err := Write(path, entries, map[string]string{"format": "pt"}); err != nil {
		b.Fatal(err)
	}
	return path
}

// BenchmarkOpen opens and closes a file of 5000 small tensors: the cost of
// mapping it and parsing and validating the header.
func BenchmarkOpen(b *testing.B) {
	path := makeBenchFile(b, 5000, 256)
	for b.Loop() {
		f, err := Open(path)
		if err != nil {
			b.Fatal(err)
		}
		f.Close()
	}
}

// BenchmarkReadAll opens a 256 MiB file and reads every byte of every
// tensor through the mapping. Compare with BenchmarkPlainRead.
func BenchmarkReadAll(b *testing.B) {
	path := makeBenchFile(b, 256, 1<<20)
	fi, err := os.Stat(path)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(fi.Size())
	for b.Loop() {
		f, err := Open(path)
		if err != nil {
			b.Fatal(err)
		}
		for _, name := range f.Names() {
			data, err := f.Bytes(name)
			if err != nil {
				b.Fatal(err)
			}
			sink += sum(data)
		}
		f.Close()
	}
}

// BenchmarkPlainRead reads the same 256 MiB file sequentially with a 1 MiB
// buffer: the baseline for BenchmarkReadAll.
func BenchmarkPlainRead(b *testing.B) {
	path := makeBenchFile(b, 256, 1<<20)
	fi, err := os.Stat(path)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(fi.Size())
	buf := make([]byte, 1<<20)
	for b.Loop() {
		f, err := os.Open(path)
		if err != nil {
			b.Fatal(err)
		}
		for {
			n, err := f.Read(buf)
			sink += sum(buf[:n])
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
		}
		f.Close()
	}
}
