package tensor

// Backend runs tensor operations on one kind of device. Every operation has
// a CPU implementation (the reference: float32 math, wider accumulation where
// it matters) and each other backend must give the same results within the
// tolerances of the dtypes involved. Operations write into tensors the caller
// allocated, so that a training step allocates nothing in its loop.
//
// Inputs and outputs may be F32, BF16 or F16 unless an operation says
// otherwise; values are widened to float32, computed on, and rounded to the
// output's dtype once at the end.
type Backend interface {
	// Name is "cpu" or "cuda".
	Name() string

	// MatMul computes c = alpha * op(a) * op(b) + beta * c, where op(x) is x
	// or its transpose, op(a) is [M,K], op(b) is [K,N] and c is [M,N], with
	// float32 accumulation. a and c may have leading dimensions, which are
	// flattened into M when a is not transposed. When beta is 0, c is not
	// read (NaNs in it do not propagate), as in BLAS.
	MatMul(c, a, b *Tensor, transA, transB bool, alpha, beta float32) error

	// Add sets out = a + b. b has the shape of a, or of a's trailing
	// dimensions, in which case it is broadcast over the leading ones.
	Add(out, a, b *Tensor) error
	// Mul sets out = a * b elementwise, with Add's broadcasting.
	Mul(out, a, b *Tensor) error
	// Scale sets out = s * a.
	Scale(out, a *Tensor, s float32) error

	// Sum writes the sum of all elements of x into the one-element out,
	// accumulated in float64 on the CPU.
	Sum(out, x *Tensor) error
	// Mean writes the mean of all elements of x into the one-element out.
	Mean(out, x *Tensor) error

	// Copy copies src into dst, converting the dtype if they differ. The
	// element counts must match; the shapes need not.
	Copy(dst, src *Tensor) error
}
