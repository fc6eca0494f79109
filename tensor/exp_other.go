//go:build !amd64

package tensor

// expKernels lists the implementations this CPU can run: off amd64, the
// portable one.
func expKernels() []*expKernel { return []*expKernel{&expGoKernel} }
