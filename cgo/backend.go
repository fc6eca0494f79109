package cgo

import (
	"errors"
	"fmt"
	"math"

	"github.com/compassml/compass/tensor"
)

// Backend runs tensor operations on one CUDA device: MatMul through
// cuBLAS, every other operation through the kernels of package kernels,
// all in order on one stream. Tensors it returns live in device memory
// from a caching allocator; host tensors go in and out through ToDevice,
// ToHost and Copy. A Backend may be used from several goroutines, but its
// work is one queue: it is not faster for it.
type Backend struct {
	dev  *Device // nil for the tests' recording queue
	q    queue
	mem  *allocator
	ws   uintptr // cuBLAS's workspace
	info string  // DeviceName
	// tiles holds loraTileCounters zeros: the split LoRA products' count
	// of each output tile's blocks done (kernels/lora.cu's lora_finish),
	// which every launch leaves at zero.
	tiles uintptr

	// Precise makes MatMul widen the 16-bit operand of a mixed-dtype
	// product (an F32 activation times a BF16 weight) to float32 instead of
	// rounding the F32 one to 16 bits, and keeps float32 attention on the
	// float32 kernels instead of rounding q, k, v to bf16 for the
	// tensor-core ones (head dims 64, 96, 128): float32 results at float32
	// speed, for parity checks.
	Precise bool

	// PoisonEmpty makes Empty fill its tensors with NaNs: the tests set it,
	// so that an operation that leaves part of an Empty output unwritten,
	// or a caller that reads one before writing it, fails them.
	PoisonEmpty bool

	// loraKernelsOff makes NarrowMatMul and GradMatMul use MatMul: the GPU
	// benchmark's step with the LoRA products on cuBLAS, against the
	// kernels.
	loraKernelsOff bool
	// dkdvGroupBlocks makes the tensor-core attention backward take a kv
	// head's query heads per block whatever the launch's size (dkdvPerHead):
	// the tests run both ways.
	dkdvGroupBlocks bool
	// attentionRecomputeDQ makes the tensor-core attention backward
	// recompute S and dP for dq (attention_tc_backward_dq) where dS would
	// fit its scratch (attentionDS): the tests run both ways, the GPU
	// benchmark times both.
	attentionRecomputeDQ bool
	// attentionActsF32 makes AttentionRounds say no: the model keeps q, k,
	// v and the attention output in float32, cast to bf16 around each
	// attention launch (the GPU benchmark's step, against bf16 ones).
	attentionActsF32 bool
}

// The CUDA backend implements every operation of tensor.Backend.
var _ tensor.Backend = (*Backend)(nil)

// cublasWorkspace is the workspace cuBLAS gets: NVIDIA recommends 32 MiB
// on Hopper (4 MiB elsewhere is enough; more costs nothing that matters).
const cublasWorkspace = 32 << 20

// NewBackend opens CUDA device deviceIndex, cuBLAS and the kernels. With no
// driver or device the error wraps ErrNoDevice.
func NewBackend(deviceIndex int) (*Backend, error) {
	d, err := Open(deviceIndex)
	if err != nil {
		return nil, err
	}
	q := &gpuQueue{Device: d}
	b, err := newBackend(q)
	if err != nil {
		q.close()
		return nil, err
	}
	b.dev = d
	if b.ws, err = b.mem.alloc(cublasWorkspace); err != nil {
		b.Close()
		return nil, err
	}
	if q.blas, err = newBlas(d, b.ws, cublasWorkspace); err != nil {
		b.Close()
		return nil, err
	}
	if q.kern, err = loadKernels(d); err != nil {
		b.Close()
		return nil, err
	}
	b.info = fmt.Sprintf("%s (sm_%d%d, %d SMs, %.1f GiB; CUDA driver %d.%d, cuBLAS %d.%d.%d, kernels %s)",
		d.name, d.major, d.minor, d.sms, float64(d.totalMem)/(1<<30), d.driverVersion/1000, d.driverVersion%1000/10,
		q.blas.version/10000, q.blas.version/100%100, q.blas.version%100, q.kern.target)
	return b, nil
}

// newBackend is a Backend over any queue, with its tile counters.
func newBackend(q queue) (*Backend, error) {
	b := &Backend{q: q, mem: newAllocator(q)}
	var err error
	if b.tiles, err = b.mem.alloc(4 * loraTileCounters); err == nil {
		err = q.memsetD32(b.tiles, 0, loraTileCounters)
	}
	if err != nil {
		return nil, errors.Join(err, b.mem.close())
	}
	return b, nil
}

// Close waits for the device, frees every allocation (tensors still held
// become invalid), the kernels, cuBLAS and the staging buffers, and
// releases the device.
func (b *Backend) Close() error {
	if b.q == nil {
		return nil
	}
	err := errors.Join(b.q.synchronize(), b.mem.close(), b.q.close())
	b.q, b.dev = nil, nil
	return err
}

// Name implements tensor.Backend.
func (b *Backend) Name() string { return "cuda" }

// Device returns the opened device.
func (b *Backend) Device() *Device { return b.dev }

// DeviceName describes the device: its name, compute capability, memory,
// and the driver, cuBLAS and kernels in use.
func (b *Backend) DeviceName() string { return b.info }

// Synchronize waits until every operation issued so far has finished.
// Operations are asynchronous; ToHost and the operations that read results
// on the host (Embedding, CrossEntropy, Sum, Mean) wait by themselves.
func (b *Backend) Synchronize() error { return b.q.synchronize() }

// InUseBytes is the device memory held by live tensors (in allocator
// blocks, so slightly more than their bytes), cuBLAS's workspace included.
func (b *Backend) InUseBytes() int64 {
	n, _, _ := b.mem.stats()
	return n
}

// PeakBytes is the most InUseBytes has been since NewBackend or ResetPeak.
func (b *Backend) PeakBytes() int64 {
	_, p, _ := b.mem.stats()
	return p
}

// CachedBytes is the device memory of freed blocks the allocator keeps for
// reuse.
func (b *Backend) CachedBytes() int64 {
	_, _, c := b.mem.stats()
	return c
}

// AvailableBytes is the device memory new tensors can still take: what
// the driver reports free, and the allocator's cached free blocks.
func (b *Backend) AvailableBytes() (int64, error) {
	if b.dev == nil {
		return 0, errors.New("cuda: available memory: no device")
	}
	free, _, err := b.dev.MemInfo()
	if err != nil {
		return 0, err
	}
	return free + b.CachedBytes(), nil
}

// ResetPeak restarts PeakBytes from the bytes in use now.
func (b *Backend) ResetPeak() { b.mem.resetPeak() }

// Trim gives the cached free blocks back to the driver.
func (b *Backend) Trim() error { return b.mem.trim() }

// numElements checks a shape as tensor.New would, returning an error
// instead of panicking.
func numElements(shape []int) (int, error) {
	n := 1
	for _, d := range shape {
		if d < 0 {
			return 0, fmt.Errorf("cuda: negative dimension in shape %v", shape)
		}
		if d != 0 && n > (1<<62)/d {
			return 0, fmt.Errorf("cuda: shape %v is too large", shape)
		}
		n *= d
	}
	return n, nil
}

// alloc returns an uninitialised device tensor.
func (b *Backend) alloc(dtype tensor.DType, shape ...int) (*tensor.Tensor, error) {
	n, err := numElements(shape)
	if err != nil {
		return nil, err
	}
	if n > math.MaxInt/dtype.Size() {
		return nil, fmt.Errorf("cuda: allocate %s%v: too large", dtype, shape)
	}
	bytes := n * dtype.Size()
	var p uintptr
	if bytes > 0 {
		if p, err = b.mem.alloc(bytes); err != nil {
			return nil, fmt.Errorf("cuda: allocate %s%v: %w", dtype, shape, err)
		}
	}
	t, err := tensor.NewOnDevice(dtype, shape, tensor.DeviceMem{Ptr: p, Bytes: bytes})
	if err != nil {
		b.mem.release(p, bytes)
		return nil, err
	}
	return t, nil
}

// scratch is the device tensors an operation allocates for itself and
// frees when it returns (defer s.free()).
type scratch struct {
	b  *Backend
	ts []*tensor.Tensor
}

// alloc returns an uninitialised device tensor that free releases.
func (s *scratch) alloc(dtype tensor.DType, shape ...int) (*tensor.Tensor, error) {
	t, err := s.b.alloc(dtype, shape...)
	if err == nil {
		s.ts = append(s.ts, t)
	}
	return t, err
}

// keep has free release t too.
func (s *scratch) keep(t *tensor.Tensor) { s.ts = append(s.ts, t) }

func (s *scratch) free() {
	for _, t := range s.ts {
		s.b.Free(t)
	}
	s.ts = nil
}

// Alloc implements tensor.Backend: a zeroed device tensor.
func (b *Backend) Alloc(dtype tensor.DType, shape ...int) (*tensor.Tensor, error) {
	t, err := b.alloc(dtype, shape...)
	if err != nil {
		return nil, err
	}
	mem, _ := t.Device()
	if err := b.q.memsetD8(mem.Ptr, 0, mem.Bytes); err != nil {
		b.Free(t)
		return nil, err
	}
	return t, nil
}

// Empty implements tensor.Backend: a device tensor that is not cleared.
// With PoisonEmpty it is filled with 0xFF bytes instead (NaN in F32, BF16
// and F16), so that a read before the first write shows in any result.
func (b *Backend) Empty(dtype tensor.DType, shape ...int) (*tensor.Tensor, error) {
	t, err := b.alloc(dtype, shape...)
	if err != nil || !b.PoisonEmpty {
		return t, err
	}
	mem, _ := t.Device()
	if err := b.q.memsetD8(mem.Ptr, 0xFF, mem.Bytes); err != nil {
		b.Free(t)
		return nil, err
	}
	return t, nil
}

// Zero sets every element of a device tensor to zero with a memset: unlike
// Scale by 0, it also clears NaNs and infinities (0 x NaN is NaN).
func (b *Backend) Zero(t *tensor.Tensor) error {
	mem, ok := t.Device()
	if !ok {
		return fmt.Errorf("cuda: zero: %v is not on the device", t)
	}
	return b.q.memsetD8(mem.Ptr, 0, mem.Bytes)
}

// Free implements tensor.Backend: the block goes back to the allocator's
// cache. A view (a Slice that is not the whole tensor) is not freed. A
// Reshape of a whole tensor cannot be told from the tensor: freeing it
// frees the tensor.
func (b *Backend) Free(t *tensor.Tensor) {
	if t == nil {
		return
	}
	if mem, ok := t.Device(); ok && mem.Bytes > 0 {
		b.mem.release(mem.Ptr, mem.Bytes)
	}
}

// ToDevice implements tensor.Backend.
func (b *Backend) ToDevice(t *tensor.Tensor) (*tensor.Tensor, error) {
	if !t.OnHost() {
		return t, nil
	}
	d, err := b.alloc(t.DType(), t.Shape()...)
	if err != nil {
		return nil, err
	}
	mem, _ := d.Device()
	if err := b.q.upload(mem.Ptr, t.Bytes()); err != nil {
		b.Free(d)
		return nil, fmt.Errorf("cuda: copy %v to the device: %w", t, err)
	}
	return d, nil
}

// ToHost implements tensor.Backend.
func (b *Backend) ToHost(t *tensor.Tensor) (*tensor.Tensor, error) {
	if t.OnHost() {
		return t, nil
	}
	h := tensor.New(t.DType(), t.Shape()...)
	mem, _ := t.Device()
	if err := b.q.download(h.Bytes(), mem.Ptr); err != nil {
		return nil, fmt.Errorf("cuda: copy %v to the host: %w", t, err)
	}
	return h, nil
}

// Copy implements tensor.Backend: between host and device in either
// direction or within the device, casting on the device when the dtypes
// differ.
func (b *Backend) Copy(dst, src *tensor.Tensor) error {
	if dst.NumElements() != src.NumElements() {
		return fmt.Errorf("cuda: copy %v into %v: element counts differ", src, dst)
	}
	if dst.OnHost() && src.OnHost() {
		return tensor.NewCPU().Copy(dst, src)
	}
	if dst.DType() != src.DType() && (!dst.DType().IsFloat() || !src.DType().IsFloat()) {
		return fmt.Errorf("cuda: copy %v into %v: only floating-point dtypes convert", src, dst)
	}
	switch {
	case dst.DType() == src.DType():
		return b.copyBytes(dst, src)
	case src.OnHost(): // upload as is, cast on the device
		tmp, err := b.ToDevice(src)
		if err != nil {
			return err
		}
		defer b.Free(tmp)
		return b.cast(dst, tmp)
	case dst.OnHost(): // cast on the device, download
		tmp, err := b.alloc(dst.DType(), dst.Shape()...)
		if err != nil {
			return err
		}
		defer b.Free(tmp)
		if err := b.cast(tmp, src); err != nil {
			return err
		}
		return b.copyBytes(dst, tmp)
	}
	return b.cast(dst, src)
}

// copyBytes copies between tensors of one dtype, at least one on the
// device.
func (b *Backend) copyBytes(dst, src *tensor.Tensor) error {
	dm, dOnDev := dst.Device()
	sm, sOnDev := src.Device()
	switch {
	case dOnDev && sOnDev:
		return b.q.copyDtoD(dm.Ptr, sm.Ptr, dm.Bytes)
	case dOnDev:
		return b.q.upload(dm.Ptr, src.Bytes())
	default:
		return b.q.download(dst.Bytes(), sm.Ptr)
	}
}
