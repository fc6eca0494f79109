//go:build !amd64

package tensor

// rowKernels lists the implementations this CPU can run: off amd64, the
// portable one.
func rowKernels() []*rowKernel { return []*rowKernel{&rowGoKernel} }
