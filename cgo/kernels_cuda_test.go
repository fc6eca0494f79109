//go:build cuda

package cgo

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/compassml/compass/kernels"
	"github.com/compassml/compass/tensor"
)

// The kernels' own edge cases (special values, launch shapes other than
// the Table's, operations no tensor.Backend method has), run through the
// backend's Go code like every GPU test: on the emulated device in `make
// test`, on a GPU in the device run.

// shapedQueue is the device's queue with one kernel launched in a shape of
// the test's choosing instead of the Table's, so that a kernel's
// grid-stride loops and block reductions run with fewer blocks or threads
// than the Table gives at a test's sizes, while the operation's own Go code
// still packs the arguments.
type shapedQueue struct {
	*gpuQueue
	kernel string
	shape  func(kernels.Launch) kernels.Launch
}

func (q *shapedQueue) launch(op, kernel string, s kernels.Sizes, args *Args) error {
	if kernel != q.kernel {
		return q.gpuQueue.launch(op, kernel, s, args)
	}
	spec, err := kernels.Lookup(kernel)
	if err != nil {
		return err
	}
	l := q.shape(spec.Launch(s))
	f := q.kern.funcs[kernel]
	if f == nil {
		return fmt.Errorf("cuda: %s: %w (%s)", op, errKernelMissing, kernel)
	}
	return f.Launch(Dim3{l.Grid[0], l.Grid[1], l.Grid[2]}, Dim3{l.Block[0], l.Block[1], l.Block[2]}, l.Shared, args)
}

// withShape returns a Backend on b's device, memory and kernels whose
// launches of kernel take the shape that shape makes of the Table's. It
// is not to be closed.
func withShape(tb testing.TB, b *Backend, kernel string, shape func(kernels.Launch) kernels.Launch) *Backend {
	gq, ok := b.q.(*gpuQueue)
	if !ok {
		tb.Fatalf("withShape: not a device backend")
	}
	return &Backend{dev: b.dev, q: &shapedQueue{gq, kernel, shape}, mem: b.mem, ws: b.ws, info: b.info}
}

// gridX returns a shape function that sets the grid's x dimension.
func gridX(x int) func(kernels.Launch) kernels.Launch {
	return func(l kernels.Launch) kernels.Launch {
		l.Grid[0] = x
		return l
	}
}

// castInputs returns n values of dtype that cover what a conversion can
// meet: for F32, random magnitudes from 2^-30 to 2^20 after every special
// value (NaN with and without payloads, infinities, signed zeros), the
// bf16 and f16 rounding ties, the f16 overflow and subnormal edges and f32
// subnormals; for 16-bit types, random bit patterns (NaNs and subnormals
// among them).
func castInputs(rng *rand.Rand, dtype tensor.DType, n int) *tensor.Tensor {
	if dtype != tensor.F32 {
		x := tensor.New(dtype, n)
		for i := range x.U16() {
			x.U16()[i] = uint16(rng.Uint32())
		}
		return x
	}
	specials := []uint32{
		0x7fc00000, 0xffc00000, 0x7f800001, 0x7fa12345, 0xff812345, 0x7f800000, 0xff800000, 0, 0x80000000,
		0x3f808000, 0x3f818000, 0x3f807fff, // bf16 ties to even (down, up) and just below a tie
		0x477fe000, 0x477ff000, 0x477fefff, // 65504, 65520 (rounds to Inf), just below
		0x33000000, 0x33000001, 0x387fc000, 0x38800000, 0x33c00000, // f16 subnormal edges
		0x00000001, 0x807fffff, // f32 subnormals
	}
	x := tensor.New(tensor.F32, n)
	v := x.F32()
	for i := range v {
		if i < len(specials) {
			v[i] = math.Float32frombits(specials[i])
			continue
		}
		v[i] = float32((2*rng.Float64() - 1) * math.Exp2(float64(rng.IntN(50)-30)))
	}
	return x
}

// TestGPUCast checks Copy's device cast (elementwise_cast) against the CPU
// for every pair of float dtypes, bit for bit, NaN payloads included, with
// the Table's grid and with a grid of 2 blocks (each thread then strides
// over many elements).
func TestGPUCast(t *testing.T) {
	b := gpuBackend(t)
	rng := newRNG(t)
	twoBlocks := withShape(t, b, "elementwise_cast", gridX(2))
	const n = 3001
	for _, from := range dtypes {
		for _, to := range dtypes {
			if from == to {
				continue // a copy of bytes, no kernel
			}
			xh := castInputs(rng, from, n)
			x := toDev(t, b, xh)
			want := tensor.New(to, n)
			must(t, cpu.Copy(want, xh))
			for _, c := range []struct {
				name string
				b    *Backend
			}{{"Table grid", b}, {"2 blocks", twoBlocks}} {
				out := output(t, b, to, n)
				must(t, c.b.Copy(out.d, x))
				compare(t, b, fmt.Sprintf("cast %s -> %s, %s", from, to, c.name), pair{want, out.d}, 0)
			}
		}
	}
}

// TestGPUEmbeddingBackward checks embedding_backward (the unexported
// embeddingBackward: no tensor.Backend operation has it), which adds dout
// into the rows of dtable its ids select with atomics (ids repeat about 6
// times each), against a float64 scatter-add, with F32 and BF16 dout and
// ids outside the vocabulary skipped.
func TestGPUEmbeddingBackward(t *testing.T) {
	b := gpuBackend(t)
	rng := newRNG(t)
	const V, H, N = 7, 29, 40
	for _, dt := range []tensor.DType{tensor.F32, tensor.BF16} {
		dtable := input(t, b, rng, tensor.F32, V, H)
		dout := input(t, b, rng, dt, N, H)
		ids := make([]int32, N)
		for i := range ids {
			ids[i] = int32(rng.IntN(V))
		}
		ids[3], ids[17] = -1, V // skipped
		sum := make([]float64, V*H)
		for i, x := range dtable.h.F32() {
			sum[i] = float64(x)
		}
		dv := dout.h.ToF32()
		for i, id := range ids {
			if id < 0 || id >= V {
				continue
			}
			for j := 0; j < H; j++ {
				sum[int(id)*H+j] += float64(dv[i*H+j])
			}
		}
		want := tensor.New(tensor.F32, V, H)
		for i, x := range sum {
			want.F32()[i] = float32(x)
		}
		idh, err := tensor.FromI32(ids, N)
		must(t, err)
		must(t, b.embeddingBackward(dtable.d, dout.d, toDev(t, b, idh)))
		closeTo(t, b, "embedding backward dout "+dt.String(), pair{want, dtable.d}, 1e-6, 0)
	}
	idh, err := tensor.FromI32([]int32{1, 2}, 2)
	must(t, err)
	ids := toDev(t, b, idh)
	for name, err := range map[string]error{
		"bf16 dtable":     b.embeddingBackward(output(t, b, tensor.BF16, V, H).d, output(t, b, tensor.F32, 2, H).d, ids),
		"3 rows for 2 id": b.embeddingBackward(output(t, b, tensor.F32, V, H).d, output(t, b, tensor.F32, 3, H).d, ids),
		"host ids":        b.embeddingBackward(output(t, b, tensor.F32, V, H).d, output(t, b, tensor.F32, 2, H).d, idh),
	} {
		if err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}
