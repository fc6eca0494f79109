package safetensors

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"sync"

	"github.com/compassml/compass/tensor"
)

// File is an open safetensors file. Its tensors are views into a read-only
// memory mapping of the file: the byte slices and tensors it returns must
// not be written to (that faults) and must not be used after Close.
//
// A File is safe for concurrent use by several goroutines.
type File struct {
	path      string
	size      int64
	dataStart int64 // 8 + the header's length
	names     []string
	infos     map[string]TensorInfo // Begin and End absolute
	metadata  map[string]string

	mu   sync.RWMutex
	data []byte // the mapping of the whole file; nil once closed
}

// errClosed is returned by a File's methods after Close.
var errClosed = errors.New("file already closed")

// Open opens a safetensors file, maps it into memory and validates its
// header. It reads only the header: opening a file of any size is fast and
// makes no tensor data resident until it is touched.
func Open(path string) (*File, error) {
	osf, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	// The mapping outlives the descriptor, so it is closed on return.
	defer osf.Close()
	fi, err := osf.Stat()
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("safetensors: %s: not a regular file", path)
	}
	size := fi.Size()
	if size < 8 {
		return nil, fmt.Errorf("safetensors: %s: file is %d bytes, too short for the 8-byte header length", path, size)
	}
	data, err := mapFile(osf, size)
	if err != nil {
		return nil, fmt.Errorf("safetensors: %s: %w", path, err)
	}
	f, err := newFile(path, data)
	if err != nil {
		unmapFile(data)
		return nil, fmt.Errorf("safetensors: %s: %w", path, err)
	}
	return f, nil
}

// newFile validates the contents of a whole file, data, and indexes it.
func newFile(path string, data []byte) (*File, error) {
	size := int64(len(data))
	if size < 8 {
		return nil, fmt.Errorf("file is %d bytes, too short for the 8-byte header length", size)
	}
	n := binary.LittleEndian.Uint64(data)
	if n > maxHeaderSize {
		return nil, fmt.Errorf("header length %d is over the limit of %d bytes", n, maxHeaderSize)
	}
	if int64(n) > size-8 {
		return nil, fmt.Errorf("header length %d runs past the end of the file (%d bytes)", n, size)
	}
	dataStart := 8 + int64(n)
	h, err := parseHeader(data[8:dataStart])
	if err != nil {
		return nil, err
	}
	// The last tensor must end exactly at the end of the file: the reference
	// refuses trailing bytes (MetadataIncompleteBuffer) as well as missing ones.
	if dataLen := size - dataStart; h.dataLen != dataLen {
		if h.dataLen > dataLen {
			for _, t := range h.tensors {
				if t.End > dataLen {
					return nil, fmt.Errorf("tensor %q: data_offsets [%d, %d) run past the end of the data section (%d bytes; the file is truncated?)", t.Name, t.Begin, t.End, dataLen)
				}
			}
		}
		return nil, fmt.Errorf("%d bytes after the last tensor: the tensors cover %d of the data section's %d bytes", dataLen-h.dataLen, h.dataLen, dataLen)
	}

	f := &File{
		path:      path,
		size:      size,
		dataStart: dataStart,
		names:     make([]string, 0, len(h.tensors)),
		infos:     make(map[string]TensorInfo, len(h.tensors)),
		metadata:  h.metadata,
		data:      data,
	}
	for _, t := range h.tensors {
		t.Begin += dataStart
		t.End += dataStart
		t.File = path
		f.names = append(f.names, t.Name)
		f.infos[t.Name] = t
	}
	slices.Sort(f.names)
	return f, nil
}

// Close unmaps the file. Byte slices and tensors obtained from the File
// must not be used afterwards.
func (f *File) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.data == nil {
		return fmt.Errorf("safetensors: %s: close: %w", f.path, errClosed)
	}
	err := unmapFile(f.data)
	f.data = nil
	if err != nil {
		return fmt.Errorf("safetensors: %s: %w", f.path, err)
	}
	return nil
}

// Path is the path the file was opened with.
func (f *File) Path() string { return f.path }

// Size is the size of the file in bytes.
func (f *File) Size() int64 { return f.size }

// Names returns the names of the tensors, sorted.
func (f *File) Names() []string { return slices.Clone(f.names) }

// Info describes the named tensor; ok is false if there is none.
func (f *File) Info(name string) (info TensorInfo, ok bool) {
	info, ok = f.infos[name]
	info.Shape = slices.Clone(info.Shape)
	return info, ok
}

// Metadata returns a copy of the header's "__metadata__" map, or nil if
// the file has none.
func (f *File) Metadata() map[string]string { return maps.Clone(f.metadata) }

// Header returns the JSON header as the file stores it (without its 8-byte
// length): a view into the mapping, read-only and valid until Close.
func (f *File) Header() ([]byte, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.data == nil {
		return nil, fmt.Errorf("safetensors: %s: header: %w", f.path, errClosed)
	}
	return f.data[8:f.dataStart:f.dataStart], nil
}

// Bytes returns the named tensor's bytes: a view into the mapping, not a
// copy. It is read-only and valid until Close.
func (f *File) Bytes(name string) ([]byte, error) {
	b, _, err := f.view(name)
	return b, err
}

// Tensor returns the named tensor as a tensor.Tensor. F32, BF16, F16 and I32
// tensors are supported; other types are an error (use Bytes). The tensor
// shares the mapping (read-only, valid until Close) when its data is
// aligned to its element size, which is the case for files written by the
// reference writer or by Write; otherwise it is a copy.
func (f *File) Tensor(name string) (*tensor.Tensor, error) {
	b, info, err := f.view(name)
	if err != nil {
		return nil, err
	}
	return toTensor(f.path, info, b)
}

// view returns the bytes and the description of the named tensor.
func (f *File) view(name string) ([]byte, TensorInfo, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.data == nil {
		return nil, TensorInfo{}, fmt.Errorf("safetensors: %s: tensor %q: %w", f.path, name, errClosed)
	}
	info, ok := f.infos[name]
	if !ok {
		return nil, TensorInfo{}, fmt.Errorf("safetensors: %s: no tensor %q", f.path, name)
	}
	// The capacity is capped so that an append cannot reach the next tensor.
	return f.data[info.Begin:info.End:info.End], info, nil
}

// toTensor wraps the bytes b of the tensor info, read from the file path.
func toTensor(path string, info TensorInfo, b []byte) (*tensor.Tensor, error) {
	dt, ok := info.DType.TensorDType()
	if !ok {
		return nil, fmt.Errorf("safetensors: %s: tensor %q is %s; only F32, BF16, F16 and I32 make a tensor.Tensor (use Bytes)", path, info.Name, info.DType)
	}
	// The mapping starts on a page boundary, so the file offset tells the
	// alignment of the data in memory.
	if len(b) > 0 && info.Begin%int64(dt.Size()) != 0 {
		t := tensor.New(dt, info.Shape...)
		copy(t.Bytes(), b)
		return t, nil
	}
	t, err := tensor.FromBytes(dt, info.Shape, b)
	if err != nil {
		return nil, fmt.Errorf("safetensors: %s: tensor %q: %w", path, info.Name, err)
	}
	return t, nil
}
