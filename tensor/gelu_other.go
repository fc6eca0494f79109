//go:build !amd64

package tensor

// geluKernels lists the implementations this CPU can run: off amd64, the
// portable one.
func geluKernels() []*geluKernel { return []*geluKernel{&geluGoKernel} }
