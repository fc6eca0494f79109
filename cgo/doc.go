// Package cgo is the only package of compass that uses cgo. It reaches the
// NVIDIA driver's libraries at run time (NVML now; the CUDA driver API and
// cuBLAS later), so that the compass binary builds and runs on machines
// without a GPU or a CUDA toolkit: there every entry point returns an error
// and callers fall back to the CPU.
package cgo
