package safetensors

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/compassml/compass/internal/atomicfile"
	"github.com/compassml/compass/tensor"
)

// Entry is a tensor to write: its raw little-endian, row-major bytes.
type Entry struct {
	Name  string
	DType DType
	Shape []int
	Data  []byte
}

// EntryFromTensor returns the entry of t under name; its Data is t's
// storage, not a copy.
func EntryFromTensor(name string, t *tensor.Tensor) Entry {
	d, _ := FromTensorDType(t.DType()) // every tensor.DType has a DType
	return Entry{Name: name, DType: d, Shape: t.Shape(), Data: t.Bytes()}
}

// Write writes the tensors and the metadata (nil for none) to a
// safetensors file at path, atomically: it writes a temporary file in the
// same directory, syncs it, renames it over path and syncs the directory,
// so path holds either its old contents or the whole new file, never a
// part. A File mapping the old path keeps reading the old contents.
//
// The file is laid out as the reference writer lays it out, and has the
// same bytes but for the order of metadata keys, which the reference leaves
// to a hash map: the compact JSON header lists "__metadata__" (keys sorted)
// and then the tensors in data order; the data is sorted by decreasing
// dtype alignment, then by name, so that each tensor starts aligned to its
// element size; the header is padded with spaces to a multiple of 8 bytes.
// The file gets mode 0644.
func Write(path string, tensors []Entry, metadata map[string]string) error {
	hdr, order, err := encodeHeader(tensors, metadata, false)
	if err != nil {
		return fmt.Errorf("safetensors: write %s: %w", path, err)
	}
	if err := atomicfile.Write(path, func(w io.Writer) error { return writeData(w, hdr, order, tensors) }); err != nil {
		return fmt.Errorf("safetensors: write %s: %w", path, err)
	}
	return nil
}

// Encode writes the tensors and the metadata as a safetensors file to w,
// laid out as Write lays it out, for a caller that places the file itself
// (lora writes an adapter's two files together).
func Encode(w io.Writer, tensors []Entry, metadata map[string]string) error {
	hdr, order, err := encodeHeader(tensors, metadata, false)
	if err != nil {
		return fmt.Errorf("safetensors: %w", err)
	}
	return writeData(w, hdr, order, tensors)
}

// WriteFrom writes a file of one tensor as Write does, its bytes read from
// r as they are written (e.Data is not used): a tensor larger than memory,
// from a scratch file. r must hold at least the shape's bytes.
func WriteFrom(path string, e Entry, r io.Reader, metadata map[string]string) error {
	hdr, _, err := encodeHeader([]Entry{e}, metadata, true)
	if err != nil {
		return fmt.Errorf("safetensors: write %s: %w", path, err)
	}
	n, _ := e.DType.ByteLen(e.Shape) // checked by encodeHeader
	err = atomicfile.Write(path, func(w io.Writer) error {
		if _, err := w.Write(hdr); err != nil {
			return err
		}
		if got, err := io.CopyN(w, r, n); err != nil {
			return fmt.Errorf("tensor %q: %d of its %d bytes: %w", e.Name, got, n, err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("safetensors: write %s: %w", path, err)
	}
	return nil
}

// writeData writes the header and then the tensors' data in order.
func writeData(w io.Writer, hdr []byte, order []int, tensors []Entry) error {
	if _, err := w.Write(hdr); err != nil {
		return err
	}
	for _, i := range order {
		if _, err := w.Write(tensors[i].Data); err != nil {
			return err
		}
	}
	return nil
}

// encodeHeader validates the entries and returns the 8-byte length and the
// padded JSON header, and the order in which the entries' data follow.
// With noData, the entries' sizes come from their shapes alone.
func encodeHeader(tensors []Entry, metadata map[string]string, noData bool) ([]byte, []int, error) {
	seen := make(map[string]bool, len(tensors))
	for i, e := range tensors {
		switch {
		case e.Name == "":
			return nil, nil, fmt.Errorf("tensor %d has an empty name", i)
		case e.Name == metadataKey:
			return nil, nil, fmt.Errorf("tensor %d: the name %q is reserved for the metadata", i, e.Name)
		case !utf8.ValidString(e.Name):
			return nil, nil, fmt.Errorf("tensor %q: name is not valid UTF-8", e.Name)
		case seen[e.Name]:
			return nil, nil, fmt.Errorf("tensor %q: duplicate name", e.Name)
		case !e.DType.Valid():
			return nil, nil, fmt.Errorf("tensor %q: invalid dtype %s", e.Name, e.DType)
		}
		seen[e.Name] = true
		n, err := e.DType.ByteLen(e.Shape)
		if err != nil {
			return nil, nil, fmt.Errorf("tensor %q: %w", e.Name, err)
		}
		if !noData && int64(len(e.Data)) != n {
			return nil, nil, fmt.Errorf("tensor %q: %s%v needs %d bytes, data has %d", e.Name, e.DType, e.Shape, n, len(e.Data))
		}
	}
	for k, v := range metadata {
		if !utf8.ValidString(k) || !utf8.ValidString(v) {
			return nil, nil, fmt.Errorf("metadata %q: key or value is not valid UTF-8", k)
		}
	}

	// The reference writer's order: dtype by decreasing alignment (the
	// DType constants are in increasing alignment), then name.
	order := make([]int, len(tensors))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(i, j int) int {
		a, b := tensors[i], tensors[j]
		return cmp.Or(cmp.Compare(b.DType, a.DType), strings.Compare(a.Name, b.Name))
	})

	var buf bytes.Buffer
	buf.Write(make([]byte, 8)) // the length, filled in below
	buf.WriteByte('{')
	if metadata != nil {
		appendString(&buf, metadataKey)
		buf.WriteString(":{")
		for i, k := range slices.Sorted(maps.Keys(metadata)) {
			if i > 0 {
				buf.WriteByte(',')
			}
			appendString(&buf, k)
			buf.WriteByte(':')
			appendString(&buf, metadata[k])
		}
		buf.WriteByte('}')
	}
	var offset int64
	for i, idx := range order {
		e := tensors[idx]
		if i > 0 || metadata != nil {
			buf.WriteByte(',')
		}
		appendString(&buf, e.Name)
		buf.WriteString(`:{"dtype":`)
		appendString(&buf, e.DType.String())
		buf.WriteString(`,"shape":[`)
		for j, d := range e.Shape {
			if j > 0 {
				buf.WriteByte(',')
			}
			buf.WriteString(strconv.Itoa(d))
		}
		n, _ := e.DType.ByteLen(e.Shape) // checked above
		end := offset + n
		fmt.Fprintf(&buf, `],"data_offsets":[%d,%d]}`, offset, end)
		offset = end
	}
	buf.WriteByte('}')
	// Pad so that the data section starts 8-byte aligned.
	for buf.Len()%8 != 0 {
		buf.WriteByte(' ')
	}
	hdr := buf.Bytes()
	n := len(hdr) - 8
	if n > maxHeaderSize {
		return nil, nil, fmt.Errorf("header of %d bytes is over the limit of %d", n, maxHeaderSize)
	}
	binary.LittleEndian.PutUint64(hdr, uint64(n))
	return hdr, order, nil
}

// appendString writes s as a JSON string. Unlike json.Marshal's default it
// does not escape <, > and &, as the reference's serde_json does not.
func appendString(buf *bytes.Buffer, s string) {
	enc := json.NewEncoder(buf)
	enc.SetEscapeHTML(false)
	enc.Encode(s)               // cannot fail for a string
	buf.Truncate(buf.Len() - 1) // Encode adds a newline
}
