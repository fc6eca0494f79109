package dataset

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/klauspost/compress/zstd"
)

// Format names a file format.
type Format string

const (
	FormatJSONL   Format = "jsonl"
	FormatCSV     Format = "csv"
	FormatTSV     Format = "tsv"
	FormatParquet Format = "parquet"
)

// zstdMagic starts every zstd frame (RFC 8878).
var zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}

var parquetMagic = []byte("PAR1")

// formatOf returns the format a file name implies, or "" for none.
func formatOf(name string) Format {
	switch strings.ToLower(filepath.Ext(name)) {
	case ".jsonl", ".ndjson", ".json":
		return FormatJSONL
	case ".csv":
		return FormatCSV
	case ".tsv":
		return FormatTSV
	case ".parquet", ".pq":
		return FormatParquet
	}
	return ""
}

// compressedName reports whether a name ends in .zst or .zstd, and the
// name without it.
func compressedName(name string) (string, bool) {
	switch ext := strings.ToLower(filepath.Ext(name)); ext {
	case ".zst", ".zstd":
		return name[:len(name)-len(ext)], true
	}
	return name, false
}

// countingReader counts the bytes read from a file, for progress.
type countingReader struct {
	r    io.Reader
	n    int64
	size int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func (c *countingReader) progress() float64 {
	if c.size <= 0 {
		return 1
	}
	return min(1, float64(c.n)/float64(c.size))
}

// openSource opens path as format (or the format its name or first bytes
// imply), decompressing zstd, and returns the source and what to call
// after closing it.
func openSource(path string, format Format) (src source, cleanup []func() error, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("dataset: %w", err)
	}
	cleanup = []func() error{f.Close}
	defer func() {
		if err != nil {
			for i := len(cleanup) - 1; i >= 0; i-- {
				cleanup[i]()
			}
			cleanup = nil
		}
	}()
	st, err := f.Stat()
	if err != nil {
		return nil, cleanup, fmt.Errorf("dataset: %w", err)
	}
	if st.IsDir() {
		return nil, cleanup, fmt.Errorf("dataset: %s is a directory", path)
	}
	counter := &countingReader{r: f, size: st.Size()}
	raw := bufio.NewReaderSize(counter, 1<<16)
	head, _ := raw.Peek(len(zstdMagic)) // a shorter file has no magic number
	name, zstName := compressedName(filepath.Base(path))
	isZstd := bytes.Equal(head, zstdMagic)
	if zstName && !isZstd && len(head) > 0 {
		return nil, cleanup, fmt.Errorf("dataset: %s: named .zst but not zstd-compressed (no zstd magic number)", path)
	}

	in := raw
	if isZstd {
		dec, err := zstd.NewReader(raw)
		if err != nil {
			return nil, cleanup, fmt.Errorf("dataset: %s: %w", path, err)
		}
		cleanup = append(cleanup, func() error { dec.Close(); return nil })
		in = bufio.NewReaderSize(dec, 1<<16)
	}

	if format == "" {
		format = formatOf(name)
	}
	if format == "" {
		if format, err = sniffFormat(in); err != nil {
			return nil, cleanup, fmt.Errorf("dataset: %s: %w", path, err)
		}
	}
	switch format {
	case FormatJSONL:
		return newJSONLSource(path, in, counter.progress), cleanup, nil
	case FormatCSV, FormatTSV:
		s, err := newCSVSource(path, in, format == FormatTSV, counter.progress)
		return s, cleanup, err
	case FormatParquet:
		var ra io.ReaderAt = f
		size := st.Size()
		if isZstd {
			// Parquet is read from its footer at the end: decompress it
			// into a temporary file first.
			tmp, err := os.CreateTemp("", "compass-*.parquet")
			if err != nil {
				return nil, cleanup, fmt.Errorf("dataset: %s: %w", path, err)
			}
			cleanup = append(cleanup, func() error { tmp.Close(); return os.Remove(tmp.Name()) })
			if size, err = io.Copy(tmp, in); err != nil {
				return nil, cleanup, fmt.Errorf("dataset: %s: decompress: %w", path, err)
			}
			ra = tmp
		}
		s, err := newParquetSource(path, ra, size)
		return s, cleanup, err
	}
	return nil, cleanup, fmt.Errorf("dataset: %s: unknown format %q (want jsonl, csv, tsv or parquet)", path, format)
}

// sniffFormat recognises Parquet and JSON Lines by their first bytes.
func sniffFormat(in *bufio.Reader) (Format, error) {
	head, _ := in.Peek(4096)
	if bytes.HasPrefix(head, parquetMagic) {
		return FormatParquet, nil
	}
	trimmed := bytes.TrimLeft(bytes.TrimPrefix(head, utf8BOM), " \t\r\n")
	if len(trimmed) > 0 && trimmed[0] == '{' {
		return FormatJSONL, nil
	}
	if len(trimmed) == 0 && len(head) < 4096 {
		return FormatJSONL, nil // an empty file has no records in any format
	}
	return "", fmt.Errorf("cannot tell the format: name the file .jsonl, .csv, .tsv or .parquet (optionally + .zst)")
}

var utf8BOM = []byte{0xef, 0xbb, 0xbf}
