package cgo

import (
	"errors"
	"sync"

	"github.com/compassml/compass/kernels"
	"github.com/compassml/compass/tensor"
)

// queue is the device work the Backend issues, in order: memory, copies,
// kernel launches and cuBLAS products. gpuQueue runs it on a CUDA device;
// the tests' recording queue checks the Backend's side of every operation
// (arguments against the kernels' PTX signatures, launch shapes, scratch
// freed) on machines without one.
type queue interface {
	rawMemory // malloc and free, for the caching allocator
	memsetD8(p uintptr, v byte, n int) error
	memsetD32(p uintptr, v uint32, n int) error
	copyDtoD(dst, src uintptr, n int) error
	// upload and download copy between host memory and the device; both
	// return when the copy is complete.
	upload(dst uintptr, src []byte) error
	download(dst []byte, src uintptr) error
	launch(op, kernel string, s kernels.Sizes, args *Args) error
	gemm(p gemmPlan, c, a, b uintptr, in, out tensor.DType, alpha, beta float32) error
	synchronize() error
	close() error
}

// gpuQueue is the queue of one CUDA device: its stream, cuBLAS handle,
// kernels and pinned staging buffers.
type gpuQueue struct {
	*Device
	blas *blas
	kern *kernelSet

	stagingMu sync.Mutex
	staging   [2]*pinned // double-buffered host copies, allocated on first use
}

// stagingBytes is the size of each pinned staging buffer: large enough
// for full-speed copies, small enough to allocate without a thought.
const stagingBytes = 16 << 20

func (q *gpuQueue) launch(op, kernel string, s kernels.Sizes, args *Args) error {
	return q.kern.launch(op, kernel, s, args)
}

func (q *gpuQueue) gemm(p gemmPlan, c, a, b uintptr, in, out tensor.DType, alpha, beta float32) error {
	return q.blas.gemm(p, c, a, b, in, out, alpha, beta)
}

func (q *gpuQueue) synchronize() error { return q.Synchronize() }

// close frees the kernels, cuBLAS and the staging buffers and releases the
// device. Device memory must have been freed.
func (q *gpuQueue) close() error {
	err := q.Synchronize()
	if q.kern != nil {
		err = errors.Join(err, q.kern.unload())
	}
	if q.blas != nil {
		err = errors.Join(err, q.blas.destroy())
	}
	for i, p := range q.staging {
		if p != nil {
			err = errors.Join(err, q.freeHost(p))
			q.staging[i] = nil
		}
	}
	return errors.Join(err, q.Device.Close())
}

// stagingBuffers returns the two pinned buffers, allocating them the
// first time. The caller holds stagingMu.
func (q *gpuQueue) stagingBuffers() ([2]*pinned, error) {
	for i := range q.staging {
		if q.staging[i] == nil {
			p, err := q.hostAlloc(stagingBytes)
			if err != nil {
				return q.staging, err
			}
			q.staging[i] = p
		}
	}
	return q.staging, nil
}

// upload copies src to device address dst through the pinned buffers: the
// host fills one buffer while the copy engine empties the other.
func (q *gpuQueue) upload(dst uintptr, src []byte) error {
	q.stagingMu.Lock()
	defer q.stagingMu.Unlock()
	buf, err := q.stagingBuffers()
	if err != nil {
		return err
	}
	for i, off := 0, 0; off < len(src); i, off = i+1, off+stagingBytes {
		n := min(stagingBytes, len(src)-off)
		p := buf[i%2]
		if err := p.done.Wait(); err != nil { // the buffer's previous chunk has left
			return err
		}
		copy(p.slice(n), src[off:off+n])
		if err := q.copyHtoD(dst+uintptr(off), p, n); err != nil {
			return err
		}
		if err := p.done.Record(); err != nil {
			return err
		}
	}
	return q.Synchronize()
}

// download copies len(dst) bytes from device address src into dst through
// the pinned buffers, the device filling one while the host empties the
// other.
func (q *gpuQueue) download(dst []byte, src uintptr) error {
	q.stagingMu.Lock()
	defer q.stagingMu.Unlock()
	buf, err := q.stagingBuffers()
	if err != nil {
		return err
	}
	chunks := (len(dst) + stagingBytes - 1) / stagingBytes
	issue := func(i int) error {
		off := i * stagingBytes
		p := buf[i%2]
		if err := q.copyDtoH(p, src+uintptr(off), min(stagingBytes, len(dst)-off)); err != nil {
			return err
		}
		return p.done.Record()
	}
	if chunks > 0 {
		if err := issue(0); err != nil {
			return err
		}
	}
	for i := 0; i < chunks; i++ {
		if i+1 < chunks {
			if err := issue(i + 1); err != nil {
				return err
			}
		}
		off := i * stagingBytes
		n := min(stagingBytes, len(dst)-off)
		p := buf[i%2]
		if err := p.done.Wait(); err != nil {
			return err
		}
		copy(dst[off:off+n], p.slice(n))
	}
	return nil
}
