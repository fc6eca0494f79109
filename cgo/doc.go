// Package cgo is the only package of compass that uses cgo. It reaches the
// NVIDIA driver's libraries at run time, with dlopen, so that the compass
// binary builds without a CUDA toolkit and runs on machines without a GPU:
// there every entry point returns an error (ErrNoDevice, ErrNoDriver) and
// callers fall back to the CPU.
//
//   - NVML (nvml.go, through go-nvml): the GPUs, for `compass gpu`.
//   - The CUDA driver API (cuda.go, compass_cuda.c): libcuda.so.1, the
//     device's primary context, one stream, memory, modules JIT-compiled from
//     the kernels package's PTX (cached by the driver in ~/.nv/ComputeCache),
//     launches, events.
//   - cuBLAS and cuBLASLt (cublas.go): libcublas.so.13, .12 or .11 from the
//     CUDA folders or COMPASS_CUBLAS_DIR, for MatMul.
//   - Backend (backend.go, ops.go, matmul.go, loss.go): tensor.Backend on a
//     GPU, with a caching allocator (alloc.go).
//   - SelectBackend (select.go): --device cpu|cuda|auto and COMPASS_DEVICE.
//
// The tests tagged cuda (go test -tags cuda) run every operation against the
// CPU backend on a GPU, and the GPU benchmarks; without the tag, the tests
// check everything that needs no GPU, the Backend included, through a
// recording queue (queue_test.go).
package cgo
