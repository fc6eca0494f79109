package lora

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/compassml/compass/tensor"
)

// randomF32 returns an F32 tensor of values uniform in [-scale, scale).
func randomF32(rng *rand.Rand, scale float64, shape ...int) *tensor.Tensor {
	n := 1
	for _, d := range shape {
		n *= d
	}
	values := make([]float32, n)
	for i := range values {
		values[i] = float32((2*rng.Float64() - 1) * scale)
	}
	t, err := tensor.FromF32(values, shape...)
	if err != nil {
		panic(err)
	}
	return t
}

// castTo returns t converted to dtype.
func castTo(t *testing.T, x *tensor.Tensor, dtype tensor.DType) *tensor.Tensor {
	t.Helper()
	y := tensor.New(dtype, x.Shape()...)
	if err := tensor.NewCPU().Copy(y, x); err != nil {
		t.Fatal(err)
	}
	return y
}

func TestMergeUnmerge(t *testing.T) {
	// Sizes around the GEMM's blocking, so that edge tiles are exercised.
	const out, in, r = 37, 70, 5
	const scaling = 2.5
	for _, dtype := range []tensor.DType{tensor.F32, tensor.BF16, tensor.F16} {
		rng := rand.New(rand.NewPCG(1, uint64(dtype)))
		w := castTo(t, randomF32(rng, 1, out, in), dtype)
		orig := w.ToF32()
		A := randomF32(rng, 1/math.Sqrt(in), r, in)
		B := randomF32(rng, 0.05, out, r)

		// W + s B A in float64, from the values the tensors hold.
		a, b := A.F32(), B.F32()
		want := make([]float64, out*in)
		for i := range out {
			for j := range in {
				var d float64
				for k := range r {
					d += float64(b[i*r+k]) * float64(a[k*in+j])
				}
				want[i*in+j] = float64(orig[i*in+j]) + scaling*d
			}
		}

		if err := Merge(w, A, B, scaling); err != nil {
			t.Fatal(err)
		}
		if w.DType() != dtype {
			t.Fatalf("%s: merged weight became %s", dtype, w.DType())
		}
		merged := w.ToF32()
		for i, got := range merged {
			// float32 accumulation over r terms, then one rounding to the
			// weight's dtype.
			tol := 1e-6 * (1 + math.Abs(want[i]))
			if dtype != tensor.F32 {
				tol += ulp(dtype, want[i]) / 2
			}
			if math.Abs(float64(got)-want[i]) > tol {
				t.Fatalf("%s: merged W[%d] = %v, want %v", dtype, i, got, want[i])
			}
		}

		if err := Unmerge(w, A, B, scaling); err != nil {
			t.Fatal(err)
		}
		for i, got := range w.ToF32() {
			// One rounding in each step: at most an ulp of the larger of
			// W and W + s B A.
			tol := 2e-7 * (math.Abs(float64(orig[i])) + math.Abs(float64(merged[i])))
			if dtype != tensor.F32 {
				tol = ulp(dtype, math.Max(math.Abs(float64(orig[i])), math.Abs(float64(merged[i]))))
			}
			if math.Abs(float64(got-orig[i])) > tol {
				t.Fatalf("%s: unmerged W[%d] = %v, want %v", dtype, i, got, orig[i])
			}
		}
	}
}

// ulp is the spacing of dtype's values at the magnitude of x: 8 significant
// bits for bfloat16, 11 for float16 (normal numbers).
func ulp(dtype tensor.DType, x float64) float64 {
	bits := 8
	if dtype == tensor.F16 {
		bits = 11
	}
	_, e := math.Frexp(math.Abs(x))
	return math.Ldexp(1, e-bits)
}

func TestMergeErrors(t *testing.T) {
	w := tensor.New(tensor.BF16, 8, 6)
	A := tensor.New(tensor.F32, 2, 6)
	B := tensor.New(tensor.F32, 8, 2)
	ids := tensor.New(tensor.I32, 8, 6)
	cases := []struct {
		name    string
		w, A, B *tensor.Tensor
		want    string
	}{
		{"A columns", w, tensor.New(tensor.F32, 2, 5), B, "do not fit"},
		{"B rows", w, A, tensor.New(tensor.F32, 7, 2), "do not fit"},
		{"rank", w, A, tensor.New(tensor.F32, 8, 3), "do not fit"},
		{"vector", tensor.New(tensor.F32, 48), A, B, "2-D"},
		{"ids", ids, A, B, "2-D F32, BF16 or F16"},
		{"nil", w, nil, B, "A is nil"},
	}
	for _, tc := range cases {
		if err := Merge(tc.w, tc.A, tc.B, 1); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Merge error %v, want %q", tc.name, err, tc.want)
		}
		if err := Unmerge(tc.w, tc.A, tc.B, 1); err == nil || !strings.Contains(err.Error(), "unmerge") {
			t.Errorf("%s: Unmerge error %v", tc.name, err)
		}
	}
}
