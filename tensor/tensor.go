package tensor

import (
	"fmt"
	"unsafe"
)

// Tensor is a dense, row-major array of one dtype, in host memory or in the
// memory of a device. Host storage is a byte slice that may be shared with
// other tensors (views) or belong to a memory-mapped file; device storage is
// a region of memory a Backend allocated. A view never copies. Tensors are
// always contiguous: transposes are expressed by the transpose flags of
// MatMul, not by strides.
type Tensor struct {
	shape []int
	dtype DType
	data  []byte     // host storage: exactly NumElements()*dtype.Size() bytes; nil on a device
	dev   *DeviceMem // device storage; nil on the host
}

// DeviceMem is a region of device memory: its address and length. The
// backend that allocated it owns it.
type DeviceMem struct {
	Ptr   uintptr
	Bytes int
}

// NewOnDevice wraps device memory as a tensor; mem must hold exactly the
// tensor's bytes. Backends use it; other code asks a Backend for tensors.
func NewOnDevice(dtype DType, shape []int, mem DeviceMem) (*Tensor, error) {
	n, err := numElements(shape)
	if err != nil {
		return nil, err
	}
	if n*dtype.Size() != mem.Bytes {
		return nil, fmt.Errorf("tensor: %s%v needs %d bytes, device region has %d", dtype, shape, n*dtype.Size(), mem.Bytes)
	}
	return &Tensor{shape: cloneInts(shape), dtype: dtype, dev: &mem}, nil
}

// Device returns the tensor's device memory, and false for a host tensor.
func (t *Tensor) Device() (DeviceMem, bool) {
	if t.dev == nil {
		return DeviceMem{}, false
	}
	return *t.dev, true
}

// OnHost reports whether the tensor's storage is host memory.
func (t *Tensor) OnHost() bool { return t.dev == nil }

// New allocates a zeroed tensor. The storage is allocated as []uint64 so that
// the float32 and uint16 views of it are aligned.
func New(dtype DType, shape ...int) *Tensor {
	n, err := numElements(shape)
	if err != nil {
		panic(err)
	}
	nbytes := n * dtype.Size()
	words := make([]uint64, (nbytes+7)/8)
	var data []byte
	if nbytes > 0 {
		data = unsafe.Slice((*byte)(unsafe.Pointer(&words[0])), nbytes)
	}
	return &Tensor{shape: cloneInts(shape), dtype: dtype, data: data}
}

// FromF32 returns an F32 tensor that uses values as its storage (no copy).
func FromF32(values []float32, shape ...int) (*Tensor, error) {
	return fromSlice(F32, values, shape)
}

// fromSlice wraps a slice of 4-byte values as a tensor of dtype (no copy).
func fromSlice[T float32 | int32](dtype DType, values []T, shape []int) (*Tensor, error) {
	n, err := numElements(shape)
	if err != nil {
		return nil, err
	}
	if n != len(values) {
		return nil, fmt.Errorf("tensor: shape %v needs %d values, got %d", shape, n, len(values))
	}
	var data []byte
	if n > 0 {
		data = unsafe.Slice((*byte)(unsafe.Pointer(&values[0])), 4*n)
	}
	return &Tensor{shape: cloneInts(shape), dtype: dtype, data: data}, nil
}

// FromBytes returns a tensor whose storage is data (no copy), such as a
// region of a memory-mapped file. data must be aligned to the dtype's size.
func FromBytes(dtype DType, shape []int, data []byte) (*Tensor, error) {
	n, err := numElements(shape)
	if err != nil {
		return nil, err
	}
	if want := n * dtype.Size(); len(data) != want {
		return nil, fmt.Errorf("tensor: %s%v needs %d bytes, got %d", dtype, shape, want, len(data))
	}
	if len(data) > 0 && uintptr(unsafe.Pointer(&data[0]))%uintptr(dtype.Size()) != 0 {
		return nil, fmt.Errorf("tensor: %s data is not %d-byte aligned", dtype, dtype.Size())
	}
	return &Tensor{shape: cloneInts(shape), dtype: dtype, data: data}, nil
}

func numElements(shape []int) (int, error) {
	n := 1
	for _, d := range shape {
		if d < 0 {
			return 0, fmt.Errorf("tensor: negative dimension in shape %v", shape)
		}
		if d != 0 && n > (1<<62)/d {
			return 0, fmt.Errorf("tensor: shape %v is too large", shape)
		}
		n *= d
	}
	return n, nil
}

func cloneInts(s []int) []int { return append([]int(nil), s...) }

// DType returns the element type.
func (t *Tensor) DType() DType { return t.dtype }

// Shape returns a copy of the shape.
func (t *Tensor) Shape() []int { return cloneInts(t.shape) }

// Rank is the number of dimensions.
func (t *Tensor) Rank() int { return len(t.shape) }

// Dim returns the size of dimension i; negative i counts from the end.
func (t *Tensor) Dim(i int) int {
	if i < 0 {
		i += len(t.shape)
	}
	return t.shape[i]
}

// NumElements is the product of the dimensions.
func (t *Tensor) NumElements() int {
	n := 1
	for _, d := range t.shape {
		n *= d
	}
	return n
}

// Bytes returns the host storage. Writing to it writes to the tensor and
// every view. It panics for a device tensor: copy it to the host first.
func (t *Tensor) Bytes() []byte {
	t.mustBeOnHost("Bytes")
	return t.data
}

func (t *Tensor) mustBeOnHost(what string) {
	if t.dev != nil {
		panic(fmt.Sprintf("tensor: %s() of a device tensor %v: copy it to the host first", what, t))
	}
}

// F32 returns the storage of an F32 tensor as float32s (no copy).
func (t *Tensor) F32() []float32 {
	if t.dtype != F32 {
		panic(fmt.Sprintf("tensor: F32() on a %s tensor", t.dtype))
	}
	t.mustBeOnHost("F32")
	if len(t.data) == 0 {
		return nil
	}
	return unsafe.Slice((*float32)(unsafe.Pointer(&t.data[0])), len(t.data)/4)
}

// I32 returns the storage of an I32 tensor as int32s (no copy).
func (t *Tensor) I32() []int32 {
	if t.dtype != I32 {
		panic(fmt.Sprintf("tensor: I32() on a %s tensor", t.dtype))
	}
	t.mustBeOnHost("I32")
	if len(t.data) == 0 {
		return nil
	}
	return unsafe.Slice((*int32)(unsafe.Pointer(&t.data[0])), len(t.data)/4)
}

// FromI32 returns an I32 tensor that uses values as its storage (no copy).
func FromI32(values []int32, shape ...int) (*Tensor, error) {
	return fromSlice(I32, values, shape)
}

// U16 returns the raw bits of a BF16 or F16 tensor (no copy).
func (t *Tensor) U16() []uint16 {
	if t.dtype != BF16 && t.dtype != F16 {
		panic(fmt.Sprintf("tensor: U16() on a %s tensor", t.dtype))
	}
	t.mustBeOnHost("U16")
	if len(t.data) == 0 {
		return nil
	}
	return unsafe.Slice((*uint16)(unsafe.Pointer(&t.data[0])), len(t.data)/2)
}

// ToF32 returns the values widened to float32, in a new slice. t must be
// a floating-point tensor.
func (t *Tensor) ToF32() []float32 {
	out := make([]float32, t.NumElements())
	readF32(out, t, 0)
	return out
}

// readF32 widens len(dst) elements of t starting at element off.
func readF32(dst []float32, t *Tensor, off int) {
	switch t.dtype {
	case F32:
		copy(dst, t.F32()[off:])
	case BF16:
		ConvertBF16ToF32(dst, t.U16()[off:off+len(dst)])
	case F16:
		ConvertF16ToF32(dst, t.U16()[off:off+len(dst)])
	default:
		panic(fmt.Sprintf("tensor: %s is not a floating-point dtype", t.dtype))
	}
}

// writeF32 rounds src into t starting at element off.
func writeF32(t *Tensor, off int, src []float32) {
	switch t.dtype {
	case F32:
		copy(t.F32()[off:], src)
	case BF16:
		ConvertF32ToBF16(t.U16()[off:off+len(src)], src)
	case F16:
		ConvertF32ToF16(t.U16()[off:off+len(src)], src)
	default:
		panic(fmt.Sprintf("tensor: %s is not a floating-point dtype", t.dtype))
	}
}

// Reshape returns a view with another shape and the same number of elements.
// One dimension may be -1 and is then inferred.
func (t *Tensor) Reshape(shape ...int) (*Tensor, error) {
	shape = cloneInts(shape)
	infer, known := -1, 1
	for i, d := range shape {
		switch {
		case d == -1 && infer < 0:
			infer = i
		case d < 0:
			return nil, fmt.Errorf("tensor: reshape %v to %v: bad dimension %d", t.shape, shape, d)
		default:
			known *= d
		}
	}
	n := t.NumElements()
	if infer >= 0 {
		if known == 0 || n%known != 0 {
			return nil, fmt.Errorf("tensor: reshape %v to %v: %d elements do not divide", t.shape, shape, n)
		}
		shape[infer] = n / known
		known = n
	}
	if known != n {
		return nil, fmt.Errorf("tensor: reshape %v to %v: %d elements != %d", t.shape, shape, n, known)
	}
	return &Tensor{shape: shape, dtype: t.dtype, data: t.data, dev: t.dev}, nil
}

// Slice returns the view of rows [start, end) along the first dimension.
func (t *Tensor) Slice(start, end int) (*Tensor, error) {
	if len(t.shape) == 0 {
		return nil, fmt.Errorf("tensor: slice of a scalar")
	}
	if start < 0 || end > t.shape[0] || start > end {
		return nil, fmt.Errorf("tensor: slice [%d:%d] of dimension %d", start, end, t.shape[0])
	}
	rowBytes := 0
	if t.shape[0] > 0 {
		rowBytes = t.NumElements() * t.dtype.Size() / t.shape[0]
	}
	shape := cloneInts(t.shape)
	shape[0] = end - start
	if t.dev != nil {
		mem := DeviceMem{Ptr: t.dev.Ptr + uintptr(start*rowBytes), Bytes: (end - start) * rowBytes}
		return &Tensor{shape: shape, dtype: t.dtype, dev: &mem}, nil
	}
	return &Tensor{shape: shape, dtype: t.dtype, data: t.data[start*rowBytes : end*rowBytes]}, nil
}

// SameShape reports whether t and u have equal shapes.
func (t *Tensor) SameShape(u *Tensor) bool {
	if len(t.shape) != len(u.shape) {
		return false
	}
	for i := range t.shape {
		if t.shape[i] != u.shape[i] {
			return false
		}
	}
	return true
}

func (t *Tensor) String() string { return fmt.Sprintf("%s%v", t.dtype, t.shape) }
