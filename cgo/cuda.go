package cgo

/*
#cgo LDFLAGS: -ldl
#include <stdlib.h>
#include "compass_cuda.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/compassml/compass/tensor"
)

// ErrNoDevice means no CUDA device can be used: libcuda.so.1 could not be
// loaded (no driver), it lacks an entry point compass needs (a driver too
// old), cuInit failed (no kernel driver, no GPU), the device asked for
// does not exist, or it is older than compute capability 8.0. The error
// wrapping it says which.
var ErrNoDevice = errors.New("no CUDA device")

// Error is a CUDA driver call that failed: what was being done and the
// driver's error name and description.
type Error struct {
	Op   string // e.g. "cuMemAlloc of 1073741824 bytes"
	Code int    // the CUresult
	Name string // e.g. "CUDA_ERROR_OUT_OF_MEMORY"
	Desc string // the driver's description of the error
}

func (e *Error) Error() string {
	if e.Desc == "" {
		return fmt.Sprintf("cuda: %s: %s", e.Op, e.Name)
	}
	return fmt.Sprintf("cuda: %s: %s (%s)", e.Op, e.Name, e.Desc)
}

// Is makes an out-of-memory error match tensor.ErrOutOfMemory.
func (e *Error) Is(target error) bool {
	return target == tensor.ErrOutOfMemory && e.Code == cudaErrOutOfMemory
}

// The CUresult values compass tells apart.
const (
	cudaSuccess         = 0
	cudaErrOutOfMemory  = 2
	cudaErrNoDevice     = 100
	cudaErrInvalidValue = 1
)

// check turns a CUresult into nil or an *Error describing op.
func check(r C.CUresult, op string, args ...any) error {
	if r == cudaSuccess {
		return nil
	}
	e := &Error{Op: fmt.Sprintf(op, args...), Code: int(r), Name: fmt.Sprintf("CUresult %d", int(r))}
	if s := C.cc_error_name(r); s != nil {
		e.Name = C.GoString(s)
	}
	if s := C.cc_error_string(r); s != nil {
		e.Desc = C.GoString(s)
	}
	return e
}

// errorOf is the error check makes of a CUresult (for tests).
func errorOf(code int, op string) error { return check(C.CUresult(code), "%s", op) }

// The driver library is loaded and initialised once per process.
var (
	driverOnce   sync.Once
	driverErr    error
	driverLoaded bool // libcuda.so.1 loaded with every entry point, even if cuInit then failed
)

// driverLibrary is the library the driver installs; the unversioned
// libcuda.so belongs to development packages and the toolkit's stubs.
const driverLibrary = "libcuda.so.1"

// EmulatorEnv names the emulated device's library (`make emu`,
// kernels/emu/device.cpp): when set, it is loaded in place of libcuda.so.1
// and of cuBLAS, which it also stands in for.
const EmulatorEnv = "COMPASS_CUDA_EMULATOR"

// driverPath is the driver library to load: the emulator's when
// EmulatorEnv names one.
func driverPath() string {
	if p := os.Getenv(EmulatorEnv); p != "" {
		return p
	}
	return driverLibrary
}

// loadDriver opens libcuda.so.1 and calls cuInit, once per process. Any
// failure means the process has no usable CUDA device, and wraps
// ErrNoDevice.
func loadDriver() error {
	driverOnce.Do(func() { driverErr = openDriver(driverPath()) })
	return driverErr
}

// openDriver loads the driver library at path and initialises it.
func openDriver(path string) error {
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	var msg [512]C.char
	switch C.cc_cuda_load(cpath, &msg[0], C.int(len(msg))) {
	case C.CC_LOAD_OK:
		driverLoaded = true
	case C.CC_LOAD_NO_LIBRARY:
		return fmt.Errorf("%w: %s could not be loaded (no NVIDIA driver): %s", ErrNoDevice, path, C.GoString(&msg[0]))
	default:
		return fmt.Errorf("%w: %s is too old: %s", ErrNoDevice, path, C.GoString(&msg[0]))
	}
	if err := check(C.cc_init(), "cuInit"); err != nil {
		return fmt.Errorf("%w: %w", ErrNoDevice, err)
	}
	return nil
}

// DeviceCount is the number of CUDA devices, or an error wrapping
// ErrNoDevice when there is no usable driver.
func DeviceCount() (int, error) {
	if err := loadDriver(); err != nil {
		return 0, err
	}
	var n C.int
	if err := check(C.cc_device_count(&n), "cuDeviceGetCount"); err != nil {
		return 0, fmt.Errorf("%w: %w", ErrNoDevice, err)
	}
	return int(n), nil
}

// Device is one opened GPU: its primary context (shared with any other
// CUDA user in the process, such as cuBLAS) and one stream on which
// compass issues all its work, so that work is ordered without events.
type Device struct {
	index  int
	dev    C.CUdevice
	ctx    C.CUcontext
	stream C.CUstream

	name          string
	major, minor  int // compute capability
	sms           int // streaming multiprocessors
	totalMem      int64
	sharedOptIn   int // the most dynamic shared memory a block may opt in to
	driverVersion int // e.g. 13000 for CUDA 13.0
	closeMu       sync.Mutex
	closed        bool

	// last is the last kernel or GEMM issued: a fault in one shows at a
	// later synchronisation, whose error then names it.
	last atomic.Pointer[string]
}

// issued records the work just issued (a kernel launch, a GEMM).
func (d *Device) issued(what string) { d.last.Store(&what) }

// afterLast adds the last work issued to the error of a call that waits
// for the device or copies from it, where the errors of earlier
// asynchronous work show.
func (d *Device) afterLast(err error) error {
	if err == nil {
		return nil
	}
	if p := d.last.Load(); p != nil {
		return fmt.Errorf("%w (the last work issued: %s; with CUDA_LAUNCH_BLOCKING=1 each launch reports its own errors)", err, *p)
	}
	return err
}

// Device attributes (cuda.h's CUdevice_attribute values).
const (
	attrMultiprocessorCount = 16
	attrComputeMajor        = 75
	attrComputeMinor        = 76
	attrSharedOptIn         = 97
)

// Open opens CUDA device index (0 is the first): it loads the driver,
// retains the device's primary context and creates a stream. With no
// driver or no such device the error wraps ErrNoDevice.
func Open(index int) (*Device, error) {
	n, err := DeviceCount()
	if err != nil {
		return nil, err
	}
	if n == 0 {
		return nil, fmt.Errorf("%w: the driver reports no CUDA device", ErrNoDevice)
	}
	if index < 0 || index >= n {
		return nil, fmt.Errorf("%w: device %d asked for, %d present", ErrNoDevice, index, n)
	}
	d := &Device{index: index}
	if err := check(C.cc_device_get(&d.dev, C.int(index)), "cuDeviceGet %d", index); err != nil {
		return nil, err
	}
	var name [256]C.char
	if err := check(C.cc_device_name(&name[0], C.int(len(name)), d.dev), "cuDeviceGetName %d", index); err != nil {
		return nil, err
	}
	d.name = C.GoString(&name[0])
	for _, a := range []struct {
		attr int
		dst  *int
	}{
		{attrComputeMajor, &d.major}, {attrComputeMinor, &d.minor},
		{attrMultiprocessorCount, &d.sms}, {attrSharedOptIn, &d.sharedOptIn},
	} {
		var v C.int
		if err := check(C.cc_device_attribute(&v, C.int(a.attr), d.dev), "cuDeviceGetAttribute %d of device %d", a.attr, index); err != nil {
			return nil, err
		}
		*a.dst = int(v)
	}
	var total C.size_t
	if err := check(C.cc_device_total_mem(&total, d.dev), "cuDeviceTotalMem of device %d", index); err != nil {
		return nil, err
	}
	d.totalMem = int64(total)
	var v C.int
	if err := check(C.cc_driver_version(&v), "cuDriverGetVersion"); err != nil {
		return nil, err
	}
	d.driverVersion = int(v)
	if err := check(C.cc_primary_ctx_retain(&d.ctx, d.dev), "cuDevicePrimaryCtxRetain of device %d", index); err != nil {
		return nil, err
	}
	if err := check(C.cc_stream_create(d.ctx, &d.stream), "cuStreamCreate"); err != nil {
		C.cc_primary_ctx_release(d.dev)
		return nil, err
	}
	return d, nil
}

// Close waits for the device's work, destroys its stream and releases the
// primary context. Memory allocated through the device must be freed
// first (Backend.Close does).
func (d *Device) Close() error {
	d.closeMu.Lock()
	defer d.closeMu.Unlock()
	if d.closed {
		return nil
	}
	d.closed = true
	err := d.Synchronize()
	err = errors.Join(err, check(C.cc_stream_destroy(d.ctx, d.stream), "cuStreamDestroy"))
	return errors.Join(err, check(C.cc_primary_ctx_release(d.dev), "cuDevicePrimaryCtxRelease of device %d", d.index))
}

// Name is the device's name, e.g. "NVIDIA H100 80GB HBM3".
func (d *Device) Name() string { return d.name }

// ComputeCapability is the major and minor version, e.g. 9 and 0 on Hopper.
func (d *Device) ComputeCapability() (major, minor int) { return d.major, d.minor }

// Multiprocessors is the number of streaming multiprocessors.
func (d *Device) Multiprocessors() int { return d.sms }

// TotalMemory is the device memory in bytes.
func (d *Device) TotalMemory() int64 { return d.totalMem }

// DriverVersion is the CUDA version the driver supports, e.g. 13000.
func (d *Device) DriverVersion() int { return d.driverVersion }

// Synchronize waits for all work issued on the device's stream.
func (d *Device) Synchronize() error {
	return d.afterLast(check(C.cc_stream_synchronize(d.ctx, d.stream), "cuStreamSynchronize"))
}

// MemInfo returns the device's free and total memory as the driver sees it.
func (d *Device) MemInfo() (free, total int64, err error) {
	var f, t C.size_t
	if err := check(C.cc_mem_get_info(d.ctx, &f, &t), "cuMemGetInfo"); err != nil {
		return 0, 0, err
	}
	return int64(f), int64(t), nil
}

// malloc allocates device memory (not zeroed).
func (d *Device) malloc(bytes int) (uintptr, error) {
	var p C.CUdeviceptr
	if err := check(C.cc_mem_alloc(d.ctx, &p, C.size_t(bytes)), "cuMemAlloc of %d bytes", bytes); err != nil {
		return 0, err
	}
	return uintptr(p), nil
}

// free gives device memory back to the driver.
func (d *Device) free(p uintptr) error {
	return check(C.cc_mem_free(d.ctx, C.CUdeviceptr(p)), "cuMemFree")
}

// memsetD8 sets n bytes at p to v, in stream order.
func (d *Device) memsetD8(p uintptr, v byte, n int) error {
	if n == 0 {
		return nil
	}
	return check(C.cc_memset_d8(d.ctx, C.CUdeviceptr(p), C.uchar(v), C.size_t(n), d.stream), "cuMemsetD8Async of %d bytes", n)
}

// memsetD32 sets n 32-bit words at p to v, in stream order.
func (d *Device) memsetD32(p uintptr, v uint32, n int) error {
	if n == 0 {
		return nil
	}
	return check(C.cc_memset_d32(d.ctx, C.CUdeviceptr(p), C.uint(v), C.size_t(n), d.stream), "cuMemsetD32Async of %d words", n)
}

// copyDtoD copies n bytes between device regions, in stream order.
func (d *Device) copyDtoD(dst, src uintptr, n int) error {
	if n == 0 {
		return nil
	}
	return check(C.cc_memcpy_dtod(d.ctx, C.CUdeviceptr(dst), C.CUdeviceptr(src), C.size_t(n), d.stream),
		"cuMemcpyDtoDAsync of %d bytes", n)
}

// pinned is a page-locked host buffer: the copy engines read and write it
// directly, so copies through it are asynchronous and run at full speed.
type pinned struct {
	ptr   unsafe.Pointer // C memory
	bytes int
	done  *Event // recorded after the last copy that used the buffer
}

// hostAlloc allocates a pinned host buffer.
func (d *Device) hostAlloc(bytes int) (*pinned, error) {
	var p unsafe.Pointer
	if err := check(C.cc_mem_host_alloc(d.ctx, &p, C.size_t(bytes)), "cuMemHostAlloc of %d bytes", bytes); err != nil {
		return nil, err
	}
	ev, err := d.NewEvent()
	if err != nil {
		C.cc_mem_free_host(d.ctx, p)
		return nil, err
	}
	return &pinned{ptr: p, bytes: bytes, done: ev}, nil
}

func (d *Device) freeHost(p *pinned) error {
	err := p.done.Destroy()
	return errors.Join(err, check(C.cc_mem_free_host(d.ctx, p.ptr), "cuMemFreeHost"))
}

// slice is the buffer's first n bytes as a Go slice over C memory.
func (p *pinned) slice(n int) []byte { return unsafe.Slice((*byte)(p.ptr), n) }

// copyHtoD copies n bytes of a pinned buffer to the device, in stream order.
func (d *Device) copyHtoD(dst uintptr, src *pinned, n int) error {
	return d.afterLast(check(C.cc_memcpy_htod(d.ctx, C.CUdeviceptr(dst), src.ptr, C.size_t(n), d.stream), "cuMemcpyHtoDAsync of %d bytes", n))
}

// copyDtoH copies n bytes from the device into a pinned buffer, in stream
// order.
func (d *Device) copyDtoH(dst *pinned, src uintptr, n int) error {
	return d.afterLast(check(C.cc_memcpy_dtoh(d.ctx, dst.ptr, C.CUdeviceptr(src), C.size_t(n), d.stream), "cuMemcpyDtoHAsync of %d bytes", n))
}

// Event marks a point in the device's stream, for timing and waiting.
type Event struct {
	d  *Device
	ev C.CUevent
}

// NewEvent creates an event (with timing).
func (d *Device) NewEvent() (*Event, error) {
	e := &Event{d: d}
	if err := check(C.cc_event_create(d.ctx, &e.ev), "cuEventCreate"); err != nil {
		return nil, err
	}
	return e, nil
}

// Record marks the current end of the device's stream.
func (e *Event) Record() error {
	return check(C.cc_event_record(e.d.ctx, e.ev, e.d.stream), "cuEventRecord")
}

// Wait blocks until the work before the last Record has finished.
func (e *Event) Wait() error {
	return e.d.afterLast(check(C.cc_event_synchronize(e.d.ctx, e.ev), "cuEventSynchronize"))
}

// Since returns the milliseconds between start's and e's recordings; both
// must have completed (Wait on e first).
func (e *Event) Since(start *Event) (float32, error) {
	var ms C.float
	if err := check(C.cc_event_elapsed(e.d.ctx, &ms, start.ev, e.ev), "cuEventElapsedTime"); err != nil {
		return 0, err
	}
	return float32(ms), nil
}

// Destroy frees the event.
func (e *Event) Destroy() error {
	return check(C.cc_event_destroy(e.d.ctx, e.ev), "cuEventDestroy")
}

// Module is code loaded into the device's context: PTX JIT-compiled by the
// driver for this device. The driver keeps what it compiled in its compute
// cache (~/.nv/ComputeCache; CUDA_CACHE_PATH moves it, CUDA_CACHE_MAXSIZE
// sizes it, CUDA_CACHE_DISABLE=1 turns it off), so only the first load of a
// given PTX on a machine pays for the compilation.
type Module struct {
	d   *Device
	mod C.CUmodule
}

// LoadModule JIT-compiles a PTX image (or loads a cubin). A failure
// carries the JIT's error log.
func (d *Device) LoadModule(image []byte) (*Module, error) {
	// The driver reads PTX as a NUL-terminated string, from C memory.
	img := C.CBytes(append(append([]byte(nil), image...), 0))
	defer C.free(img)
	var log [8192]C.char
	m := &Module{d: d}
	if err := check(C.cc_module_load(d.ctx, &m.mod, img, &log[0], C.int(len(log))), "cuModuleLoadDataEx of %d bytes", len(image)); err != nil {
		if s := C.GoString(&log[0]); s != "" {
			return nil, fmt.Errorf("%w\n%s", err, s)
		}
		return nil, err
	}
	return m, nil
}

// Unload frees the module; its functions must not be launched afterwards.
func (m *Module) Unload() error {
	return check(C.cc_module_unload(m.d.ctx, m.mod), "cuModuleUnload")
}

// Function is one kernel of a Module.
type Function struct {
	d    *Device
	fn   C.CUfunction
	name string
}

// Function looks up a kernel by its (extern "C") name.
func (m *Module) Function(name string) (*Function, error) {
	cname := C.CString(name)
	defer C.free(unsafe.Pointer(cname))
	f := &Function{d: m.d, name: name}
	if err := check(C.cc_module_function(m.d.ctx, &f.fn, m.mod, cname), "cuModuleGetFunction %s", name); err != nil {
		return nil, err
	}
	return f, nil
}

// SetMaxDynamicShared lets launches of f ask for up to bytes of dynamic
// shared memory (above 48 KiB a kernel must opt in).
func (f *Function) SetMaxDynamicShared(bytes int) error {
	return check(C.cc_func_set_max_dynamic_shared(f.d.ctx, f.fn, C.int(bytes)),
		"cuFuncSetAttribute %s max dynamic shared memory %d bytes", f.name, bytes)
}

// Dim3 is a grid or block size.
type Dim3 struct{ X, Y, Z int }

// Launch runs f on the device's stream with grid and block sizes, shared
// bytes of dynamic shared memory, and the arguments packed in args.
func (f *Function) Launch(grid, block Dim3, shared int, args *Args) error {
	if len(args.offsets) > maxArgs || len(args.buf) > maxArgBytes {
		return fmt.Errorf("cuda: launch %s: %d arguments (%d bytes) are more than %d (%d bytes)",
			f.name, len(args.offsets), len(args.buf), maxArgs, maxArgBytes)
	}
	if err := checkLaunchShape(grid, block); err != nil {
		return fmt.Errorf("cuda: launch %s: %w", f.name, err)
	}
	var buf *C.uchar
	var offs *C.int
	if len(args.buf) > 0 {
		buf, offs = (*C.uchar)(unsafe.Pointer(&args.buf[0])), (*C.int)(unsafe.Pointer(&args.offsets[0]))
	}
	err := check(C.cc_launch(f.d.ctx, f.fn, C.uint(grid.X), C.uint(grid.Y), C.uint(grid.Z),
		C.uint(block.X), C.uint(block.Y), C.uint(block.Z), C.uint(shared), f.d.stream,
		buf, offs, C.int(len(args.offsets)), C.int(len(args.buf))),
		"cuLaunchKernel %s grid %v block %v shared %d", f.name, grid, block, shared)
	if err != nil {
		return err
	}
	f.d.issued("kernel " + f.name)
	return nil
}

// The launch limits of every device compass runs on (compute capability
// 8.0 and later): the driver would refuse more, with less to say why.
const (
	maxGridX          = 1<<31 - 1
	maxGridYZ         = 65535
	maxBlockXY        = 1024
	maxBlockZ         = 64
	maxThreadsOfBlock = 1024
)

// checkLaunchShape checks grid and block sizes against those limits.
func checkLaunchShape(grid, block Dim3) error {
	for _, v := range []int{grid.X, grid.Y, grid.Z, block.X, block.Y, block.Z} {
		if v < 1 {
			return fmt.Errorf("grid %v, block %v: every size must be at least 1", grid, block)
		}
	}
	switch {
	case grid.X > maxGridX || grid.Y > maxGridYZ || grid.Z > maxGridYZ:
		return fmt.Errorf("grid %v: x must be below 2^31, y and z at most %d", grid, maxGridYZ)
	case block.X > maxBlockXY || block.Y > maxBlockXY || block.Z > maxBlockZ:
		return fmt.Errorf("block %v: x and y must be at most %d, z at most %d", block, maxBlockXY, maxBlockZ)
	case block.X*block.Y*block.Z > maxThreadsOfBlock:
		return fmt.Errorf("block %v: %d threads, at most %d", block, block.X*block.Y*block.Z, maxThreadsOfBlock)
	}
	return nil
}

// The limits of compass_cuda.c's cc_launch.
const (
	maxArgs     = 64
	maxArgBytes = 1024
)
