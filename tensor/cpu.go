package tensor

import (
	"fmt"
	"runtime"
	"sync"
)

// CPU is the reference backend: plain Go for elementwise work, a blocked
// GEMM with an AVX2/FMA micro-kernel (portable Go where the CPU lacks it) for
// MatMul, spread over GOMAXPROCS goroutines.
type CPU struct {
	// PoisonEmpty makes Empty fill its tensors with 0xFF bytes (NaN in F32,
	// BF16 and F16) instead of zeros, as the CUDA backend's option of the
	// same name: tests set it, so that reading an Empty tensor before
	// writing it shows in their results.
	PoisonEmpty bool
	// BF16Products makes MatMul (and CrossEntropy's products) multiply a
	// float32 operand by a bf16 one in bf16: the float32 operand is rounded
	// to bf16 (nearest, ties to even) first, and the products are summed in
	// float32, as the CUDA backend does outside Precise mode and PyTorch
	// does in a bf16 model. On a CPU with AVX512_BF16 that runs at the bf16
	// kernel's rate, twice the float32 one. Off, the reference: the bf16
	// operand is widened and the float32 one kept. The commands turn it on
	// (cgo.SelectBackend); tests and the library default keep it off.
	BF16Products bool
}

// NewCPU returns the CPU backend.
func NewCPU() *CPU { return &CPU{} }

// Name implements Backend.
func (*CPU) Name() string { return "cpu" }

// chunk is how many elements elementwise ops convert at a time: small enough
// to stay in L1, large enough to amortise the loop overhead.
const chunk = 2048

// parallelFor splits [0, n) into pieces of at least grain and runs fn on
// them on up to GOMAXPROCS goroutines.
func parallelFor(n, grain int, fn func(lo, hi int)) {
	workers := runtime.GOMAXPROCS(0)
	if w := (n + grain - 1) / grain; w < workers {
		workers = w
	}
	if workers <= 1 {
		if n > 0 {
			fn(0, n)
		}
		return
	}
	per := (n + workers - 1) / workers
	var wg sync.WaitGroup
	for lo := 0; lo < n; lo += per {
		hi := min(lo+per, n)
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn(lo, hi)
		}()
	}
	wg.Wait()
}

// floatCheck refuses non-floating-point operands (I32 ids) in arithmetic,
// and device tensors, which the CPU backend cannot reach.
func floatCheck(op string, ts ...*Tensor) error {
	if err := hostCheck(op, ts...); err != nil {
		return err
	}
	for _, t := range ts {
		if !t.dtype.IsFloat() {
			return fmt.Errorf("tensor: %s: %v is not a floating-point tensor", op, t)
		}
	}
	return nil
}

// hostCheck refuses device tensors: the CPU backend works on host memory.
func hostCheck(op string, ts ...*Tensor) error {
	for _, t := range ts {
		if t != nil && t.dev != nil {
			return fmt.Errorf("tensor: %s: %v is in device memory; the CPU backend works on host tensors", op, t)
		}
	}
	return nil
}

// Alloc implements Backend: a zeroed host tensor.
func (*CPU) Alloc(dtype DType, shape ...int) (*Tensor, error) {
	if _, err := numElements(shape); err != nil {
		return nil, err
	}
	return New(dtype, shape...), nil
}

// Empty implements Backend: on the CPU, Alloc (Go zeroes host memory), or
// with PoisonEmpty a tensor of 0xFF bytes.
func (c *CPU) Empty(dtype DType, shape ...int) (*Tensor, error) {
	t, err := c.Alloc(dtype, shape...)
	if err == nil && c.PoisonEmpty {
		b := t.Bytes()
		for i := range b {
			b[i] = 0xFF
		}
	}
	return t, err
}

// Free implements Backend; host memory goes back to the garbage collector.
func (*CPU) Free(*Tensor) {}

// ToDevice implements Backend: host tensors are already the CPU's.
func (*CPU) ToDevice(t *Tensor) (*Tensor, error) {
	if err := hostCheck("to device", t); err != nil {
		return nil, err
	}
	return t, nil
}

// ToHost implements Backend.
func (*CPU) ToHost(t *Tensor) (*Tensor, error) {
	if err := hostCheck("to host", t); err != nil {
		return nil, err
	}
	return t, nil
}

// broadcastCheck validates out = a (op) b with b equal to a's shape or to its
// trailing dimensions.
func broadcastCheck(op string, out, a, b *Tensor) error {
	if err := floatCheck(op, out, a, b); err != nil {
		return err
	}
	if !out.SameShape(a) {
		return fmt.Errorf("tensor: %s: out %v != a %v", op, out, a)
	}
	if b.Rank() > a.Rank() {
		return fmt.Errorf("tensor: %s: b %v does not broadcast to a %v", op, b, a)
	}
	off := a.Rank() - b.Rank()
	for i := range b.shape {
		if b.shape[i] != a.shape[off+i] {
			return fmt.Errorf("tensor: %s: b %v does not broadcast to a %v", op, b, a)
		}
	}
	return nil
}

// binary runs out[i] = f(a[i], b[i mod len(b)]) in float32.
func binary(op string, out, a, b *Tensor, f func(x, y []float32)) error {
	if err := broadcastCheck(op, out, a, b); err != nil {
		return err
	}
	n, nb := a.NumElements(), b.NumElements()
	if nb == 0 {
		return nil
	}
	parallelFor(n, 1<<16, func(lo, hi int) {
		var xs, ys [chunk]float32
		for i := lo; i < hi; i += chunk {
			m := min(chunk, hi-i)
			x, y := xs[:m], ys[:m]
			readF32(x, a, i)
			for j := 0; j < m; { // b wraps around when broadcast
				bi := (i + j) % nb
				k := min(m-j, nb-bi)
				readF32(y[j:j+k], b, bi)
				j += k
			}
			f(x, y)
			writeF32(out, i, x)
		}
	})
	return nil
}

// Add implements Backend.
func (*CPU) Add(out, a, b *Tensor) error {
	return binary("add", out, a, b, func(x, y []float32) {
		for i := range x {
			x[i] += y[i]
		}
	})
}

// Mul implements Backend.
func (*CPU) Mul(out, a, b *Tensor) error {
	return binary("mul", out, a, b, func(x, y []float32) {
		for i := range x {
			x[i] *= y[i]
		}
	})
}

// Scale implements Backend.
func (*CPU) Scale(out, a *Tensor, s float32) error {
	if err := floatCheck("scale", out, a); err != nil {
		return err
	}
	if !out.SameShape(a) {
		return fmt.Errorf("tensor: scale: out %v != a %v", out, a)
	}
	parallelFor(a.NumElements(), 1<<16, func(lo, hi int) {
		var xs [chunk]float32
		for i := lo; i < hi; i += chunk {
			x := xs[:min(chunk, hi-i)]
			readF32(x, a, i)
			for j := range x {
				x[j] *= s
			}
			writeF32(out, i, x)
		}
	})
	return nil
}

// sumChunk is the unit of the parallel sum. The partial sums are added in
// chunk order, so the result does not depend on the number of threads.
const sumChunk = 1 << 14

func sum64(x *Tensor) float64 {
	n := x.NumElements()
	parts := make([]float64, (n+sumChunk-1)/sumChunk)
	parallelFor(len(parts), 4, func(lo, hi int) {
		var xs [chunk]float32
		for c := lo; c < hi; c++ {
			s := 0.0
			end := min((c+1)*sumChunk, n)
			for i := c * sumChunk; i < end; i += chunk {
				v := xs[:min(chunk, end-i)]
				readF32(v, x, i)
				for _, f := range v {
					s += float64(f)
				}
			}
			parts[c] = s
		}
	})
	total := 0.0
	for _, s := range parts {
		total += s
	}
	return total
}

func scalarOut(op string, out, x *Tensor) error {
	if err := floatCheck(op, out, x); err != nil {
		return err
	}
	if out.NumElements() != 1 {
		return fmt.Errorf("tensor: %s: out %v must have one element", op, out)
	}
	return nil
}

// Sum implements Backend.
func (*CPU) Sum(out, x *Tensor) error {
	if err := scalarOut("sum", out, x); err != nil {
		return err
	}
	writeF32(out, 0, []float32{float32(sum64(x))})
	return nil
}

// Mean implements Backend. The mean of no elements is NaN, as in PyTorch.
func (*CPU) Mean(out, x *Tensor) error {
	if err := scalarOut("mean", out, x); err != nil {
		return err
	}
	writeF32(out, 0, []float32{float32(sum64(x) / float64(x.NumElements()))})
	return nil
}

// Copy implements Backend.
func (*CPU) Copy(dst, src *Tensor) error {
	if dst.NumElements() != src.NumElements() {
		return fmt.Errorf("tensor: copy %v into %v: element counts differ", src, dst)
	}
	if err := hostCheck("copy", dst, src); err != nil {
		return err
	}
	if dst.dtype == src.dtype {
		copy(dst.data, src.data)
		return nil
	}
	if err := floatCheck("copy", dst, src); err != nil {
		return err
	}
	parallelFor(src.NumElements(), 1<<16, func(lo, hi int) {
		var xs [chunk]float32
		for i := lo; i < hi; i += chunk {
			x := xs[:min(chunk, hi-i)]
			readF32(x, src, i)
			writeF32(dst, i, x)
		}
	})
	return nil
}
