package cgo

/*
#include <stdlib.h>
#include "compass_cuda.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"unsafe"

	"github.com/compassml/compass/tensor"
)

// cuBLAS is loaded once per process, the newest major version that loads
// and creates a handle first.
var (
	cublasMu   sync.Mutex
	cublasPath string // the libcublas loaded
	cublasUsed bool   // a handle was created with it: it stays
)

// cublasMajors are the cuBLAS sonames tried, newest first: the driver of a
// CUDA 13 machine runs any of them.
var cublasMajors = []string{"13", "12", "11"}

// cublasDirs are the folders searched for libcublas: COMPASS_CUBLAS_DIR
// first when set, then the toolkit's and the distribution's folders, then
// the loader's own search path (LD_LIBRARY_PATH, ld.so.cache).
func cublasDirs() []string {
	var dirs []string
	if d := os.Getenv("COMPASS_CUBLAS_DIR"); d != "" {
		dirs = append(dirs, d)
	}
	return append(dirs, "/usr/local/cuda/lib64", "/usr/lib/x86_64-linux-gnu", "")
}

// cublasCandidates lists the (libcublasLt, libcublas) pairs to try, in
// order: only the emulator's library when EmulatorEnv names one.
func cublasCandidates() [][2]string {
	if p := os.Getenv(EmulatorEnv); p != "" {
		return [][2]string{{p, p}}
	}
	var out [][2]string
	for _, dir := range cublasDirs() {
		for _, v := range cublasMajors {
			lt, lib := "libcublasLt.so."+v, "libcublas.so."+v
			if dir != "" {
				lt, lib = filepath.Join(dir, lt), filepath.Join(dir, lib)
				if _, err := os.Stat(lib); err != nil {
					continue
				}
			}
			out = append(out, [2]string{lt, lib})
		}
	}
	return out
}

// openCublas loads one (libcublasLt, libcublas) pair and resolves every
// entry point compass uses. A later pair that loads resolves every pointer
// again, so a half-resolved table is never used.
func openCublas(c [2]string) error {
	lt := C.CString(c[0])
	lib := C.CString(c[1])
	defer C.free(unsafe.Pointer(lt))
	defer C.free(unsafe.Pointer(lib))
	var msg [512]C.char
	if C.cc_cublas_load(lt, lib, &msg[0], C.int(len(msg))) != C.CC_LOAD_OK {
		return fmt.Errorf("%s: %s", c[1], C.GoString(&msg[0]))
	}
	return nil
}

// errNoCublas starts the error when no cuBLAS can be used.
const errNoCublas = "cuda: no usable cuBLAS (libcublas.so.13, .12 or .11; set COMPASS_CUBLAS_DIR to its folder)"

// loadCublas opens the first cuBLAS (with its cuBLASLt) that loads, unless
// one is loaded already.
func loadCublas() error {
	cublasMu.Lock()
	defer cublasMu.Unlock()
	if cublasPath != "" {
		return nil
	}
	var errs []error
	for _, c := range cublasCandidates() {
		err := openCublas(c)
		if err == nil {
			cublasPath = c[1]
			return nil
		}
		errs = append(errs, err)
	}
	return fmt.Errorf("%s: %w", errNoCublas, errors.Join(errs...))
}

// BlasError is a cuBLAS call that failed.
type BlasError struct {
	Op     string
	Status int
	Name   string // e.g. "CUBLAS_STATUS_NOT_SUPPORTED"
}

func (e *BlasError) Error() string { return fmt.Sprintf("cuda: %s: %s", e.Op, e.Name) }

func checkBlas(s C.cublasStatus_t, op string, args ...any) error {
	if s == 0 {
		return nil
	}
	e := &BlasError{Op: fmt.Sprintf(op, args...), Status: int(s), Name: fmt.Sprintf("cublasStatus %d", int(s))}
	if n := C.cc_cublas_status_name(s); n != nil {
		e.Name = C.GoString(n)
	}
	return e
}

// blas is a cuBLAS handle bound to a device's context and stream.
type blas struct {
	d         *Device
	h         C.cublasHandle_t
	version   int // major*10000 + minor*100 + patch
	ltVersion int
}

// newBlas creates a handle on d's stream with workspace bytes of device
// memory at ws (cuBLAS wants 32 MiB on Hopper; a workspace set once keeps
// it from allocating its own during calls, which would sync the device).
//
// A cuBLAS that loads but cannot create a handle (one newer than the driver
// supports, say) gives way to the next older one, until a handle has been
// created: from then on the loaded one stays, since handles use it.
func newBlas(d *Device, ws uintptr, wsBytes int) (*blas, error) {
	cublasMu.Lock()
	defer cublasMu.Unlock()
	if cublasUsed {
		return createBlas(d, ws, wsBytes)
	}
	var errs []error
	for _, c := range cublasCandidates() {
		if err := openCublas(c); err != nil {
			errs = append(errs, err)
			continue
		}
		cublasPath = c[1]
		b, err := createBlas(d, ws, wsBytes)
		if err == nil {
			cublasUsed = true
			return b, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", c[1], err))
	}
	return nil, fmt.Errorf("%s: %w", errNoCublas, errors.Join(errs...))
}

// createBlas creates a handle with the loaded cuBLAS.
func createBlas(d *Device, ws uintptr, wsBytes int) (*blas, error) {
	b := &blas{d: d, ltVersion: int(C.cc_cublaslt_version())}
	var v C.int
	if err := checkBlas(C.cc_cublas_version(&v), "cublasGetProperty"); err != nil {
		return nil, err
	}
	b.version = int(v)
	if err := checkBlas(C.cc_cublas_create(d.ctx, &b.h), "cublasCreate"); err != nil {
		return nil, err
	}
	err := checkBlas(C.cc_cublas_set_stream(d.ctx, b.h, d.stream), "cublasSetStream")
	if err == nil {
		err = checkBlas(C.cc_cublas_set_workspace(d.ctx, b.h, C.CUdeviceptr(ws), C.size_t(wsBytes)), "cublasSetWorkspace of %d bytes", wsBytes)
	}
	if err != nil {
		C.cc_cublas_destroy(d.ctx, b.h)
		return nil, err
	}
	return b, nil
}

func (b *blas) destroy() error {
	return checkBlas(C.cc_cublas_destroy(b.d.ctx, b.h), "cublasDestroy")
}

// cudaDataType values of the dtypes cuBLAS multiplies.
func cudaDataType(dt tensor.DType) int {
	switch dt {
	case tensor.F32:
		return 0 // CUDA_R_32F
	case tensor.F16:
		return 2 // CUDA_R_16F
	case tensor.BF16:
		return 14 // CUDA_R_16BF
	}
	panic(fmt.Sprintf("cgo: no cudaDataType for %s", dt))
}

// gemm runs a planned product c = alpha op(a) op(b) + beta c of device
// operands, a and b of dtype in and c of dtype out (a combination
// gemmSupported accepts). cuBLAS's first operand is b (see gemmPlan).
func (bl *blas) gemm(p gemmPlan, c, a, b uintptr, in, out tensor.DType, alpha, beta float32) error {
	bl.d.issued("cublasGemmEx")
	return checkBlas(C.cc_cublas_gemm(bl.d.ctx, bl.h, C.int(p.transA), C.int(p.transB), C.int(p.m), C.int(p.n), C.int(p.k),
		C.float(alpha), C.CUdeviceptr(b), C.int(cudaDataType(in)), C.int(p.lda),
		C.CUdeviceptr(a), C.int(cudaDataType(in)), C.int(p.ldb),
		C.float(beta), C.CUdeviceptr(c), C.int(cudaDataType(out)), C.int(p.ldc)),
		"cublasGemmEx %s x %s -> %s, m %d n %d k %d", in, in, out, p.m, p.n, p.k)
}
