package tensor

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// roundedCopy is x rounded to bf16 in a new tensor, by F32ToBF16 one value
// at a time.
func roundedCopy(x *Tensor) *Tensor {
	r := New(BF16, x.Shape()...)
	for i, v := range x.F32() {
		r.U16()[i] = F32ToBF16(v)
	}
	return r
}

// TestMatMulBF16Products: with BF16Products, a float32 operand times a
// bf16 one gives exactly the product of the float32 one rounded to bf16
// (the same kernel and order), which is within float32 summation error of
// the float64 product of the rounded values, and not the reference's
// product of the unrounded ones; the inputs are left as they were; float32
// x float32 is the reference's, bit for bit. With every kernel this CPU
// has (the bf16 pair kernel and, without one, the float32 kernels).
func TestMatMulBF16Products(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 22))
	fast, ref := &CPU{BF16Products: true}, NewCPU()
	eachKernel(t, func(t *testing.T, k kernelCase) {
		for _, s := range [][3]int{{1, 9, 5}, {37, 67, 45}, {150, 300, 70}} {
			M, N, K := s[0], s[1], s[2]
			for _, tr := range [][2]bool{{false, true}, {false, false}, {true, false}} {
				for _, f32Left := range []bool{true, false} {
					shapeA, shapeB := []int{M, K}, []int{K, N}
					if tr[0] {
						shapeA = []int{K, M}
					}
					if tr[1] {
						shapeB = []int{N, K}
					}
					dtA, dtB := F32, BF16
					if !f32Left {
						dtA, dtB = BF16, F32
					}
					a, b := randomTensor(rng, dtA, shapeA...), randomTensor(rng, dtB, shapeB...)
					before := string(a.Bytes()) + string(b.Bytes())
					ra, rb := a, b
					if f32Left {
						ra = roundedCopy(a)
					} else {
						rb = roundedCopy(b)
					}
					name := fmt.Sprintf("%dx%dx%d trans %v %v a %v b %v", M, N, K, tr[0], tr[1], dtA, dtB)
					for _, beta := range []float32{0, 1} {
						init := randomTensor(rng, F32, M, N)
						got, want, unrounded := clone(init), clone(init), clone(init)
						if err := fast.MatMul(got, a, b, tr[0], tr[1], 0.5, beta); err != nil {
							t.Fatal(err)
						}
						if string(a.Bytes())+string(b.Bytes()) != before {
							t.Fatalf("%s: the inputs changed", name)
						}
						if err := ref.MatMul(want, ra, rb, tr[0], tr[1], 0.5, beta); err != nil {
							t.Fatal(err)
						}
						for i, x := range got.F32() {
							if x != want.F32()[i] {
								t.Fatalf("%s beta %v: element %d: %v, the product of the rounded operand %v", name, beta, i, x, want.F32()[i])
							}
						}
						checkClose(t, name, got.F32(), refMatMul(clone(init), ra, rb, tr[0], tr[1], 0.5, beta), K, F32)
						if err := ref.MatMul(unrounded, a, b, tr[0], tr[1], 0.5, beta); err != nil {
							t.Fatal(err)
						}
						if opRelErr(got.F32(), opF64(unrounded)) == 0 {
							t.Fatalf("%s beta %v: the same as the product of the unrounded operand", name, beta)
						}
					}
				}
			}
		}
		// float32 x float32: nothing to round.
		a, b := randomTensor(rng, F32, 40, 33), randomTensor(rng, F32, 33, 50)
		got, want := New(F32, 40, 50), New(F32, 40, 50)
		if err := fast.MatMul(got, a, b, false, false, 1, 0); err != nil {
			t.Fatal(err)
		}
		if err := ref.MatMul(want, a, b, false, false, 1, 0); err != nil {
			t.Fatal(err)
		}
		if string(got.Bytes()) != string(want.Bytes()) {
			t.Fatal("float32 x float32 differs from the reference's")
		}
	})
}

// TestCrossEntropyBF16Products: with BF16Products, a float32 h and bf16
// weights give the loss of h rounded to bf16 (its logits are the bf16
// products) and a gradient within the rounding of the softmax weights'
// product (they are rounded to bf16 too), and not the loss of the unrounded
// h.
func TestCrossEntropyBF16Products(t *testing.T) {
	rng := rand.New(rand.NewPCG(23, 24))
	const N, H, V = 19, 48, 300
	h, w := opRandom(rng, F32, N, H), opRandom(rng, BF16, V, H)
	lv := make([]int32, N)
	for i := range lv {
		lv[i] = int32(rng.IntN(V))
	}
	lv[4] = IgnoreIndex
	labels, _ := FromI32(lv, N)
	wantLP, wantDH := refCrossEntropy(opF64(roundedCopy(h)), opF64(w), lv, H, 0.25)
	unroundedLP, _ := refCrossEntropy(opF64(h), opF64(w), lv, H, 0.25)
	for _, chunk := range []int{64, 300} {
		logprob, dh := New(F32, N), New(F32, N, H)
		poison(dh)
		if err := (&CPU{BF16Products: true}).CrossEntropy(logprob, dh, h, w, labels, chunk, 0.25); err != nil {
			t.Fatal(err)
		}
		name := fmt.Sprintf("chunk %d", chunk)
		opCheck(t, name+" logprob", logprob, wantLP, 1e-5)
		opCheck(t, name+" dh", dh, wantDH, 1e-2)
		if e := opRelErr(logprob.F32(), unroundedLP); e < 1e-5 {
			t.Fatalf("%s: logprob within %.3g of the unrounded h's: h was not rounded", name, e)
		}
	}
}

// clone is a copy of a float32 tensor.
func clone(x *Tensor) *Tensor {
	c := New(F32, x.Shape()...)
	copy(c.F32(), x.F32())
	return c
}
