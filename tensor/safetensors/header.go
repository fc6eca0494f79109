package safetensors

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// maxHeaderSize is the reference implementation's limit on the JSON header
// (MAX_HEADER_SIZE in safetensors/src/tensor.rs); larger headers are refused
// by readers and writers alike.
const maxHeaderSize = 100_000_000

// metadataKey is the reserved header key of the string-to-string metadata.
const metadataKey = "__metadata__"

// TensorInfo describes one tensor of a file.
type TensorInfo struct {
	Name  string
	DType DType
	Shape []int

	// Begin and End delimit the tensor's bytes, [Begin, End), as absolute
	// offsets in the file (not relative to the data section as in the
	// header), so that the file can be read with ReadAt without knowing
	// the header's length.
	Begin, End int64

	// File is the path of the file that holds the tensor, as given to Open
	// (for a Checkpoint, the path of the shard).
	File string
}

// header is a parsed and validated JSON header.
type header struct {
	tensors  []TensorInfo // sorted by offset; Begin and End relative to the data section
	metadata map[string]string
	dataLen  int64 // where the last tensor ends: the length the data section must have
}

// parseHeader parses the JSON header b and checks everything that can be
// checked without the data: JSON syntax, types, dtypes, shapes, that each
// tensor's byte range matches its shape and dtype, and that the tensors tile
// the data section from offset 0 without holes or overlaps. Errors name the
// tensor they concern.
func parseHeader(b []byte) (*header, error) {
	// The reference reads the header as a UTF-8 string, and refuses it
	// when it is not one.
	if !utf8.Valid(b) {
		return nil, errors.New("header is not valid UTF-8")
	}
	r, err := newJSONReader(b, "header")
	if err != nil {
		return nil, err
	}
	h := &header{}
	err = r.object("header", func(key string) error {
		if key == metadataKey {
			m, err := parseMetadata(r)
			if err != nil {
				return fmt.Errorf("%s: %w", metadataKey, err)
			}
			h.metadata = m
			return nil
		}
		info, err := parseEntry(r)
		if err != nil {
			return fmt.Errorf("tensor %q: %w", key, err)
		}
		info.Name = key
		h.tensors = append(h.tensors, info)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if !r.atEnd() { // cannot happen: json.Valid allows one value only
		return nil, errors.New("header has data after its object")
	}

	// Sort by offsets, as the reference does before validating, so that
	// files written in any order are accepted; the name makes the order
	// (and so the error reported) deterministic.
	slices.SortFunc(h.tensors, func(a, b TensorInfo) int {
		return cmp.Or(cmp.Compare(a.Begin, b.Begin), cmp.Compare(a.End, b.End), strings.Compare(a.Name, b.Name))
	})
	// The tensors must tile the data section exactly: a hole could hide
	// another file format inside this one (a polyglot file), an overlap
	// would give two tensors the same bytes.
	var end int64
	prev := ""
	for i, t := range h.tensors {
		switch {
		case t.Begin < end:
			return nil, fmt.Errorf("tensor %q: data_offsets [%d, %d) overlap tensor %q, which ends at %d", t.Name, t.Begin, t.End, prev, end)
		case t.Begin > end && i == 0:
			return nil, fmt.Errorf("tensor %q: data_offsets [%d, %d) leave a hole: the first tensor must start at 0", t.Name, t.Begin, t.End)
		case t.Begin > end:
			return nil, fmt.Errorf("tensor %q: data_offsets [%d, %d) leave a hole [%d, %d) after tensor %q", t.Name, t.Begin, t.End, end, t.Begin, prev)
		}
		end, prev = t.End, t.Name
	}
	h.dataLen = end
	return h, nil
}

// parseEntry parses one tensor's {"dtype", "shape", "data_offsets"} object.
// Unknown fields are ignored, as the reference ignores them.
func parseEntry(r *jsonReader) (TensorInfo, error) {
	var info TensorInfo
	var haveDType, haveShape, haveOffsets bool
	err := r.object("entry", func(key string) error {
		switch key {
		case "dtype":
			if r.peek() != '"' {
				return fmt.Errorf("dtype is %s, want a string", r.describe())
			}
			s, err := r.string()
			if err != nil {
				return err
			}
			d, err := ParseDType(s)
			if err != nil {
				return fmt.Errorf("unknown dtype %q", s)
			}
			info.DType, haveDType = d, true
		case "shape":
			dims, err := parseIntArray(r, "shape")
			if err != nil {
				return err
			}
			info.Shape = make([]int, len(dims))
			for i, d := range dims {
				if d > math.MaxInt {
					return fmt.Errorf("shape dimension %d is too large", d)
				}
				info.Shape[i] = int(d)
			}
			haveShape = true
		case "data_offsets":
			offs, err := parseIntArray(r, "data_offsets")
			if err != nil {
				return err
			}
			if len(offs) != 2 {
				return fmt.Errorf("data_offsets has %d values, want [begin, end]", len(offs))
			}
			info.Begin, info.End, haveOffsets = offs[0], offs[1], true
		default:
			if _, err := r.skip(); err != nil {
				return err
			}
		}
		return nil
	})
	switch {
	case err != nil:
		return info, err
	case !haveDType:
		return info, errors.New(`missing "dtype"`)
	case !haveShape:
		return info, errors.New(`missing "shape"`)
	case !haveOffsets:
		return info, errors.New(`missing "data_offsets"`)
	case info.Begin > info.End:
		return info, fmt.Errorf("data_offsets [%d, %d) begin after they end", info.Begin, info.End)
	}
	n, err := info.DType.ByteLen(info.Shape)
	if err != nil {
		return info, err
	}
	if n != info.End-info.Begin {
		return info, fmt.Errorf("%s%v is %d bytes, but data_offsets [%d, %d) hold %d",
			info.DType, info.Shape, n, info.Begin, info.End, info.End-info.Begin)
	}
	return info, nil
}

// parseMetadata parses the "__metadata__" value: an object of strings, or
// null (the reference reads it as an Option and so accepts null).
func parseMetadata(r *jsonReader) (map[string]string, error) {
	if r.peek() == 'n' {
		r.literal()
		return nil, nil
	}
	m := map[string]string{}
	err := r.object("a string-to-string map", func(key string) error {
		if r.peek() != '"' {
			return fmt.Errorf("value of %q is %s, want a string", key, r.describe())
		}
		s, err := r.string()
		m[key] = s
		return err
	})
	if err != nil {
		return nil, err
	}
	return m, nil
}

// parseIntArray parses an array of non-negative JSON integers that fit in
// an int64. Like the reference (which reads them as usize), it refuses
// negative numbers, fractions and exponents.
func parseIntArray(r *jsonReader, what string) ([]int64, error) {
	vals := []int64{} // not nil: a scalar's shape is [], not absent
	err := r.array(what, func() error {
		if c := r.peek(); c != '-' && (c < '0' || c > '9') {
			return fmt.Errorf("%s has %s, want an integer", what, r.describe())
		}
		s := r.literal()
		switch {
		case strings.HasPrefix(s, "-"):
			return fmt.Errorf("%s has negative value %s", what, s)
		case strings.ContainsAny(s, ".eE"):
			return fmt.Errorf("%s has %s, want an integer", what, s)
		}
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return fmt.Errorf("%s value %s is too large", what, s)
		}
		vals = append(vals, v)
		return nil
	})
	return vals, err
}
