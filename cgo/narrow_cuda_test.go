//go:build cuda

package cgo

import (
	"fmt"
	"math"
	"testing"

	"github.com/compassml/compass/tensor"
)

// NarrowMatMul's kernel (lora_narrow, with lora_narrow_reduce when the sum
// is split) gives the CPU MatMul of the same product: t = A x^T (p [R, K])
// and dt = s B^T dy^T (p [K, R], transP), beta 0 (the output poisoned with
// NaN, so a read of it shows) and 1; ranks that fill no n-tile (1, 5), one
// and three n-tile pairs (16, 48), two row blocks (72); token counts that
// fill no warp (1, 33, 70); depths that are not a multiple of the 64-deep
// stage (40, 200) and odd ones (333: 4-byte loads, rows not 8-byte
// aligned); the sum in one chunk, in 3 and in more chunks than it has
// stages (capped). Tolerance: closeToProduct's.
func TestGPUNarrowMatMul(t *testing.T) {
	b := gpuBackend(t)
	rng := newRNG(t)
	for _, c := range []struct{ R, N, K int }{
		{16, 70, 200}, {48, 130, 333}, {1, 1, 40}, {5, 33, 64}, {72, 65, 128},
	} {
		for _, transP := range []bool{false, true} {
			pShape := []int{c.R, c.K}
			if transP {
				pShape = []int{c.K, c.R}
			}
			p, q := input(t, b, rng, tensor.F32, pShape...), input(t, b, rng, tensor.F32, c.N, c.K)
			for _, splits := range []int{1, 3, 1000} {
				for _, beta := range []float32{0, 1} {
					out := output(t, b, tensor.F32, c.R, c.N)
					if beta != 0 {
						out = input(t, b, rng, tensor.F32, c.R, c.N)
					}
					const alpha = 0.5
					must(t, cpu.MatMul(out.h, p.h, q.h, transP, true, alpha, beta))
					must(t, b.narrowMatMul(out.d, p.d, q.d, transP, alpha, beta, splits))
					name := fmt.Sprintf("R %d N %d K %d transP %v splits %d beta %g", c.R, c.N, c.K, transP, splits, beta)
					abs := tensor.New(tensor.F32, c.R, c.N)
					must(t, cpu.MatMul(abs, absOf(p.h), absOf(q.h), transP, true, alpha, 0))
					closeToProduct(t, b, name, out, abs)
				}
			}
		}
	}
}

// NarrowMatMul into a row view (one slot's rows of a loraGroup's stacked
// dt, with beta 1 as a fused projection's second part adds to it) changes
// those rows only; q a row view too, starting at an odd row with an odd
// depth (addresses not 8-byte aligned: the 4-byte loads).
func TestGPUNarrowMatMulViews(t *testing.T) {
	b := gpuBackend(t)
	rng := newRNG(t)
	const R, N, K = 8, 50, 77
	stacked := input(t, b, rng, tensor.F32, 3*R, N)
	qAll := input(t, b, rng, tensor.F32, N+1, K)
	p := input(t, b, rng, tensor.F32, R, K)
	view := func(x *tensor.Tensor, from, to int) *tensor.Tensor {
		v, err := x.Slice(from, to)
		must(t, err)
		return v
	}
	must(t, cpu.MatMul(view(stacked.h, R, 2*R), p.h, view(qAll.h, 1, N+1), false, true, 2, 1))
	must(t, b.narrowMatMul(view(stacked.d, R, 2*R), p.d, view(qAll.d, 1, N+1), false, 2, 1, 2))
	closeTo(t, b, "rows R..2R of a stacked [3R, N]", stacked, 1e-4, 0)
	got, want := hostOf(t, b, stacked.d).F32(), stacked.h.F32()
	for i := range want {
		if row := i / N; (row < R || row >= 2*R) && got[i] != want[i] {
			t.Fatalf("element %d (row %d, outside the view) is %g, was %g", i, row, got[i], want[i])
		}
	}
}

// NarrowMatMul, GradMatMul and ExpandMatMul in the default mode run their
// kernels (the result is not cuBLAS's bit for bit); in Precise mode, and
// for bf16 operands, they are MatMul, bit for bit, but for a bf16 q with
// float32 c and p (here GradMatMul's dy), which the _bf16 kernels take.
func TestGPULoRAKernelRouting(t *testing.T) {
	b := gpuBackend(t)
	rng := newRNG(t)
	const R, N, K = 16, 40, 300
	for _, dt := range []tensor.DType{tensor.F32, tensor.BF16} {
		p, q := input(t, b, rng, dt, R, K), input(t, b, rng, dt, N, K)
		for _, precise := range []bool{false, true} {
			// t = A x^T through each; dB = (t dy)^T with dy = q^T's rows.
			dy := input(t, b, rng, dt, N, K)
			b.Precise = precise
			viaMatMul, narrow := output(t, b, tensor.F32, R, N), output(t, b, tensor.F32, R, N)
			must(t, b.MatMul(viaMatMul.d, p.d, q.d, false, true, 1, 0))
			must(t, b.NarrowMatMul(narrow.d, p.d, q.d, false, 1, 0))
			gradMatMul, grad := output(t, b, tensor.F32, K, R), output(t, b, tensor.F32, K, R)
			must(t, b.MatMul(gradMatMul.d, dy.d, narrow.d, true, true, 1, 0))
			must(t, b.GradMatMul(grad.d, narrow.d, dy.d, true, 1, 0))
			expandMatMul, expand := output(t, b, tensor.F32, N, K), output(t, b, tensor.F32, N, K)
			must(t, b.MatMul(expandMatMul.d, narrow.d, p.d, true, false, 1, 0))
			must(t, b.ExpandMatMul(expand.d, narrow.d, p.d, false, 1, 0))
			b.Precise = false
			kernel := dt == tensor.F32 && !precise
			if same := sameBits(t, b, viaMatMul.d, narrow.d); same == kernel {
				t.Errorf("%s, precise %v: NarrowMatMul equal to MatMul bit for bit: %v, want %v", dt, precise, same, !kernel)
			}
			if same := sameBits(t, b, gradMatMul.d, grad.d); same == !precise {
				t.Errorf("%s, precise %v: GradMatMul equal to MatMul bit for bit: %v, want %v", dt, precise, same, precise)
			}
			if same := sameBits(t, b, expandMatMul.d, expand.d); same == kernel {
				t.Errorf("%s, precise %v: ExpandMatMul equal to MatMul bit for bit: %v, want %v", dt, precise, same, !kernel)
			}
		}
	}
}

// GradMatMul's kernel (lora_grad, its tiles' last blocks adding the
// partial sums up when the tokens are split) gives the CPU MatMul of the same product: dA += dt x (c [R, M])
// and dB += s (t dy)^T (transC: c [M, R]), beta 0 (poisoned output) and
// 1, with the ranks, token counts (the sum) and feature counts of
// TestGPUNarrowMatMul's cases: none a multiple of a tile, odd ones (4-byte
// loads where rows are not 16-byte aligned), two row blocks; the tokens in
// one chunk, in 3 and in more chunks than stages. Tolerance:
// closeToProduct's.
func TestGPUGradMatMul(t *testing.T) {
	b := gpuBackend(t)
	rng := newRNG(t)
	for _, c := range []struct{ R, N, M int }{
		{16, 200, 70}, {48, 333, 130}, {1, 40, 1}, {5, 64, 33}, {72, 128, 65},
	} {
		p, q := input(t, b, rng, tensor.F32, c.R, c.N), input(t, b, rng, tensor.F32, c.N, c.M)
		for _, transC := range []bool{false, true} {
			cShape := []int{c.R, c.M}
			if transC {
				cShape = []int{c.M, c.R}
			}
			for _, splits := range []int{1, 3, 1000} {
				for _, beta := range []float32{0, 1} {
					out := output(t, b, tensor.F32, cShape...)
					if beta != 0 {
						out = input(t, b, rng, tensor.F32, cShape...)
					}
					const alpha = 0.5
					abs := tensor.New(tensor.F32, cShape...)
					if transC {
						must(t, cpu.MatMul(out.h, q.h, p.h, true, true, alpha, beta))
						must(t, cpu.MatMul(abs, absOf(q.h), absOf(p.h), true, true, alpha, 0))
					} else {
						must(t, cpu.MatMul(out.h, p.h, q.h, false, false, alpha, beta))
						must(t, cpu.MatMul(abs, absOf(p.h), absOf(q.h), false, false, alpha, 0))
					}
					must(t, b.gradMatMul(out.d, p.d, q.d, transC, alpha, beta, splits))
					name := fmt.Sprintf("R %d N %d M %d transC %v splits %d beta %g", c.R, c.N, c.M, transC, splits, beta)
					closeToProduct(t, b, name, out, abs)
				}
			}
		}
	}
}

// GradMatMul into a row view (one projection's rows of a fused slot's dB,
// [out, r] within [outs, r], beta 1) changes those rows only; p a row view
// of a stacked t whose rows are not 16-byte aligned (the 4-byte loads).
func TestGPUGradMatMulViews(t *testing.T) {
	b := gpuBackend(t)
	rng := newRNG(t)
	const R, N, M = 8, 50, 36
	db := input(t, b, rng, tensor.F32, 3*M, R)
	stacked := input(t, b, rng, tensor.F32, 3*R+1, N)
	q := input(t, b, rng, tensor.F32, N, M)
	view := func(x *tensor.Tensor, from, to int) *tensor.Tensor {
		v, err := x.Slice(from, to)
		must(t, err)
		return v
	}
	must(t, cpu.MatMul(view(db.h, M, 2*M), q.h, view(stacked.h, 1, R+1), true, true, 2, 1))
	must(t, b.gradMatMul(view(db.d, M, 2*M), view(stacked.d, 1, R+1), q.d, true, 2, 1, 2))
	closeTo(t, b, "rows M..2M of a [3M, R] dB", db, 1e-4, 0)
	got, want := hostOf(t, b, db.d).F32(), db.h.F32()
	for i := range want {
		if row := i / R; (row < M || row >= 2*M) && got[i] != want[i] {
			t.Fatalf("element %d (row %d, outside the view) is %g, was %g", i, row, got[i], want[i])
		}
	}
}

// sameBits says whether two device tensors hold the same bytes.
func sameBits(t *testing.T, b *Backend, x, y *tensor.Tensor) bool {
	return string(hostOf(t, b, x).Bytes()) == string(hostOf(t, b, y).Bytes())
}

// closeToProduct checks a product of the LoRA kernels against the CPU's
// element by element: |got - want| <= 1e-4 (|want| + rms(want)) (closeTo's
// form) + 2e-5 |alpha| sum_k
// |p_ik q_kj|, abs holding that sum (times |alpha|) for each element. The
// second term is what hi + lo can promise where the sum cancels: each
// product within about 2^-16 of float32's. (A dot product of 40 terms of
// size 1 that cancels to 0.04 was off by 2.2e-4 of itself, 3e-7 of the
// sum of its terms' sizes.) The largest first-term error seen over seeds
// 1-8 was 3.7e-5, but for that dot product.
func closeToProduct(t *testing.T, b *Backend, name string, got pair, abs *tensor.Tensor) {
	t.Helper()
	g, w, a := hostOf(t, b, got.d).F32(), got.h.F32(), abs.F32()
	rms := 0.0
	for _, x := range w {
		rms += float64(x) * float64(x)
	}
	rms = math.Sqrt(rms / float64(len(w)))
	bad, worst := 0, 0.0
	for i := range w {
		d := math.Abs(float64(g[i]) - float64(w[i]))
		worst = max(worst, d/(math.Abs(float64(w[i]))+rms))
		if bound := 1e-4*(math.Abs(float64(w[i]))+rms) + 2e-5*float64(a[i]); !(d <= bound) {
			if bad < 3 {
				t.Errorf("%s: element %d is %g, CPU %g (error %.3g > %.3g)", name, i, g[i], w[i], d, bound)
			}
			bad++
		}
	}
	if bad > 0 {
		t.Errorf("%s: %d of %d elements out of tolerance", name, bad, len(w))
	} else if testing.Verbose() {
		t.Logf("%s: %d elements, largest error %.2g of the element's scale", name, len(w), worst)
	}
}

// absOf is a copy of x with every element's absolute value.
func absOf(x *tensor.Tensor) *tensor.Tensor {
	y := tensor.New(tensor.F32, x.Shape()...)
	for i, v := range x.F32() {
		y.F32()[i] = float32(math.Abs(float64(v)))
	}
	return y
}

// ExpandMatMul's kernel (lora_expand) gives the CPU MatMul of the same
// product: y = s t^T B^T (w [M, R], transW) and dx += dt^T A (w [R, M]),
// beta 0 (poisoned output) and 1; ranks that fill no k-step (1, 5), one
// stage (16), two (48) and three (72, the last partial); token and column
// counts that fill no block and odd ones (the last column of a row written
// alone), p a row view of a stacked t. Tolerance: closeToProduct's.
func TestGPUExpandMatMul(t *testing.T) {
	b := gpuBackend(t)
	rng := newRNG(t)
	for _, c := range []struct{ R, N, M int }{
		{16, 70, 200}, {48, 130, 333}, {1, 1, 40}, {5, 33, 64}, {72, 65, 128},
	} {
		stacked := input(t, b, rng, tensor.F32, c.R+3, c.N)
		view := func(x *tensor.Tensor) *tensor.Tensor {
			v, err := x.Slice(3, c.R+3)
			must(t, err)
			return v
		}
		p := pair{view(stacked.h), view(stacked.d)}
		for _, transW := range []bool{false, true} {
			wShape := []int{c.R, c.M}
			if transW {
				wShape = []int{c.M, c.R}
			}
			w := input(t, b, rng, tensor.F32, wShape...)
			for _, beta := range []float32{0, 1} {
				out := output(t, b, tensor.F32, c.N, c.M)
				if beta != 0 {
					out = input(t, b, rng, tensor.F32, c.N, c.M)
				}
				const alpha = 0.5
				must(t, cpu.MatMul(out.h, p.h, w.h, true, transW, alpha, beta))
				must(t, b.ExpandMatMul(out.d, p.d, w.d, transW, alpha, beta))
				abs := tensor.New(tensor.F32, c.N, c.M)
				must(t, cpu.MatMul(abs, absOf(p.h), absOf(w.h), true, transW, alpha, 0))
				closeToProduct(t, b, fmt.Sprintf("R %d N %d M %d transW %v beta %g", c.R, c.N, c.M, transW, beta), out, abs)
			}
		}
	}
}

// NarrowMatMul and GradMatMul with a bf16 q (lora_narrow_bf16,
// lora_grad_bf16: the model's o_proj input, the attention output kept in
// bf16) give the float32 kernels' result on q widened, equal element by
// element: q's split has no lo part, and the mma left out for it adds only
// zeros. The cases cover the vector loads (depths and widths multiples of
// the tiles) and the element loads (odd ones: rows not 4- or 8-byte
// aligned), one and several chunks, beta 0 and 1. The float32 kernels are
// checked against the CPU by the tests above. With the kernels off the
// products are MatMul on q widened, so that p is not rounded to bf16.
func TestGPULoRABF16Input(t *testing.T) {
	b := gpuBackend(t)
	rng := newRNG(t)
	equal := func(name string, x, y *tensor.Tensor) {
		t.Helper()
		gx, gy := hostOf(t, b, x).F32(), hostOf(t, b, y).F32()
		for i := range gx {
			if gx[i] != gy[i] {
				t.Fatalf("%s: element %d is %g from bf16 q, %g from q widened", name, i, gx[i], gy[i])
			}
		}
	}
	for _, c := range []struct{ R, N, K int }{{16, 70, 200}, {48, 130, 333}, {5, 33, 64}, {32, 128, 256}, {72, 65, 128}} {
		q := input(t, b, rng, tensor.BF16, c.N, c.K)
		qf := output(t, b, tensor.F32, c.N, c.K)
		must(t, b.cast(qf.d, q.d))
		for _, splits := range []int{1, 3} {
			for _, beta := range []float32{0, 1} {
				name := fmt.Sprintf("R %d N %d K %d splits %d beta %g", c.R, c.N, c.K, splits, beta)
				// t = A x^T, x = q [N, K].
				p := input(t, b, rng, tensor.F32, c.R, c.K)
				fromBF16, fromF32 := input(t, b, rng, tensor.F32, c.R, c.N), output(t, b, tensor.F32, c.R, c.N)
				must(t, b.Copy(fromF32.d, fromBF16.d))
				must(t, b.narrowMatMul(fromBF16.d, p.d, q.d, false, 0.5, beta, splits))
				must(t, b.narrowMatMul(fromF32.d, p.d, qf.d, false, 0.5, beta, splits))
				equal("narrow "+name, fromBF16.d, fromF32.d)
				// dA += dt x: p = dt [R, N], x = q [N, K].
				dt := input(t, b, rng, tensor.F32, c.R, c.N)
				gBF16, gF32 := input(t, b, rng, tensor.F32, c.R, c.K), output(t, b, tensor.F32, c.R, c.K)
				must(t, b.Copy(gF32.d, gBF16.d))
				must(t, b.gradMatMul(gBF16.d, dt.d, q.d, false, 0.5, beta, splits))
				must(t, b.gradMatMul(gF32.d, dt.d, qf.d, false, 0.5, beta, splits))
				equal("grad "+name, gBF16.d, gF32.d)
			}
		}
	}

	// Routing: the _bf16 kernels in the default mode; with the kernels off,
	// MatMul on q widened, bit for bit.
	const R, N, K = 16, 40, 96
	p, q := input(t, b, rng, tensor.F32, R, K), input(t, b, rng, tensor.BF16, N, K)
	qf := output(t, b, tensor.F32, N, K)
	must(t, b.cast(qf.d, q.d))
	dt := input(t, b, rng, tensor.F32, R, N)
	for _, off := range []bool{false, true} {
		b.loraKernelsOff = off
		narrow, narrowF32 := output(t, b, tensor.F32, R, N), output(t, b, tensor.F32, R, N)
		must(t, b.NarrowMatMul(narrow.d, p.d, q.d, false, 1, 0))
		grad, gradF32 := output(t, b, tensor.F32, R, K), output(t, b, tensor.F32, R, K)
		must(t, b.GradMatMul(grad.d, dt.d, q.d, false, 1, 0))
		b.loraKernelsOff = false
		if off {
			must(t, b.MatMul(narrowF32.d, p.d, qf.d, false, true, 1, 0))
			must(t, b.MatMul(gradF32.d, dt.d, qf.d, false, false, 1, 0))
		} else {
			must(t, b.narrowMatMul(narrowF32.d, p.d, qf.d, false, 1, 0, b.narrowSplits(R, N, K)))
			must(t, b.gradMatMul(gradF32.d, dt.d, qf.d, false, 1, 0, b.gradSplits(R, K, N)))
		}
		if !sameBits(t, b, narrow.d, narrowF32.d) || !sameBits(t, b, grad.d, gradF32.d) {
			t.Errorf("kernels off %v: a bf16 q does not give the product of q widened bit for bit", off)
		}
	}
}
