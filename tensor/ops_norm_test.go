package tensor

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

// Helpers shared by the ops_*_test.go files. References are written in
// float64 from the values as stored, so that the rounding of bf16 inputs is
// not counted as error.

// opRandom returns a tensor of normally distributed values (never all zero).
func opRandom(rng *rand.Rand, dtype DType, shape ...int) *Tensor {
	t := New(dtype, shape...)
	v := make([]float32, t.NumElements())
	for i := range v {
		v[i] = float32(rng.NormFloat64())
	}
	writeF32(t, 0, v)
	return t
}

// opF64 returns the stored values of a float tensor widened to float64.
func opF64(t *Tensor) []float64 {
	out := make([]float64, t.NumElements())
	for i, v := range t.ToF32() {
		out[i] = float64(v)
	}
	return out
}

// opRelErr is max |got - want| over max |want|: the error relative to the
// scale of the whole tensor, so that elements near zero do not dominate.
func opRelErr(got []float32, want []float64) float64 {
	scale, worst := 0.0, 0.0
	for i, w := range want {
		scale = max(scale, math.Abs(w))
		d := math.Abs(float64(got[i]) - w)
		if math.IsNaN(d) {
			return math.Inf(1)
		}
		worst = max(worst, d)
	}
	if scale == 0 {
		return worst
	}
	return worst / scale
}

// opCheck fails the test when got is further than tol (relative, see
// opRelErr) from want, and logs the error reached.
func opCheck(t *testing.T, what string, got *Tensor, want []float64, tol float64) {
	t.Helper()
	if got.NumElements() != len(want) {
		t.Fatalf("%s: %d elements, want %d", what, got.NumElements(), len(want))
	}
	e := opRelErr(got.ToF32(), want)
	if e > tol {
		t.Fatalf("%s: relative error %.3g > %.3g", what, e, tol)
	}
	t.Logf("%s: relative error %.3g (tolerance %.3g)", what, e, tol)
}

// opNumGrad is the central finite-difference gradient of f with respect to x.
func opNumGrad(f func() float64, x []float64) []float64 {
	g := make([]float64, len(x))
	for i, xi := range x {
		h := 1e-6 * max(1, math.Abs(xi))
		x[i] = xi + h
		fp := f()
		x[i] = xi - h
		fm := f()
		x[i] = xi
		g[i] = (fp - fm) / (2 * h)
	}
	return g
}

// opDot is sum(a * b), the loss whose gradient a backward computes when b is
// the cotangent.
func opDot(a, b []float64) float64 {
	s := 0.0
	for i := range a {
		s += a[i] * b[i]
	}
	return s
}

// opWantErr fails unless err is non-nil and mentions want.
func opWantErr(t *testing.T, what string, err error, want string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: no error", what)
	}
	if !strings.Contains(err.Error(), want) {
		t.Fatalf("%s: error %q does not mention %q", what, err, want)
	}
}

// refRMSNorm is y = w * x / sqrt(mean(x^2) + eps) per row of H, and the rstd.
func refRMSNorm(x, w []float64, H int, eps float64) (y, rstd []float64) {
	rows := len(x) / H
	y = make([]float64, len(x))
	rstd = make([]float64, rows)
	for r := 0; r < rows; r++ {
		ss := 0.0
		for _, v := range x[r*H : (r+1)*H] {
			ss += v * v
		}
		rstd[r] = 1 / math.Sqrt(ss/float64(H)+eps)
		for i := 0; i < H; i++ {
			y[r*H+i] = w[i] * x[r*H+i] * rstd[r]
		}
	}
	return y, rstd
}

func TestRMSNormForwardBackward(t *testing.T) {
	cpu := NewCPU()
	rng := rand.New(rand.NewPCG(1, 2))
	const eps = 1e-5
	shapes := [][]int{{1, 2}, {3, 5}, {2, 3, 17}, {4, 64}, {7}}
	for _, dt := range []DType{F32, BF16, F16} {
		// dx is F32 and the reference takes the stored inputs, so only the
		// forward's output rounding needs a looser tolerance.
		fwdTol, bwdTol := 1e-6, 1e-4
		switch dt {
		case BF16:
			fwdTol = 1e-2
		case F16:
			fwdTol = 2e-3
		}
		for _, shape := range shapes {
			H := shape[len(shape)-1]
			rows := New(F32, shape...).NumElements() / H
			x := opRandom(rng, dt, shape...)
			w := opRandom(rng, dt, H)
			out := New(dt, shape...)
			rstd := New(F32, rows)
			if err := cpu.RMSNorm(out, rstd, x, w, eps); err != nil {
				t.Fatal(err)
			}
			xs, ws := opF64(x), opF64(w)
			y, rs := refRMSNorm(xs, ws, H, eps)
			name := fmt.Sprint(dt, shape)
			opCheck(t, name+" out", out, y, fwdTol)
			opCheck(t, name+" rstd", rstd, rs, 1e-6)

			dout := opRandom(rng, dt, shape...)
			dx := New(F32, shape...)
			if err := cpu.RMSNormBackward(dx, dout, x, w, rstd); err != nil {
				t.Fatal(err)
			}
			cot := opF64(dout)
			want := opNumGrad(func() float64 {
				y, _ := refRMSNorm(xs, ws, H, eps)
				return opDot(y, cot)
			}, xs)
			opCheck(t, name+" dx", dx, want, bwdTol)
		}
	}
}

// TestRMSNormRoundsLikeHF checks the order of the roundings with bf16: the
// normalised row is rounded to bf16, then multiplied by the weight and
// rounded again (HF's `weight * hidden.to(input_dtype)`). Every element must
// be exactly that, except where one float32 ulp of rstd (sums taken in
// another order) flips a rounding; there either neighbour's result is
// accepted. The data must tell the two orders apart: rounding once, after
// the weight, gives a different bf16 value for many elements, and the test
// checks that it does.
func TestRMSNormRoundsLikeHF(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	const rows, H = 8, 33
	x := opRandom(rng, BF16, rows, H)
	w := opRandom(rng, BF16, H)
	out, rstd := New(BF16, rows, H), New(F32, rows)
	if err := NewCPU().RMSNorm(out, rstd, x, w, 1e-6); err != nil {
		t.Fatal(err)
	}
	xs, ws, got := x.ToF32(), w.ToF32(), out.ToF32()
	bf := func(v float32) float32 { return BF16ToF32(F32ToBF16(v)) }
	exact, ambiguous, orders := 0, 0, 0
	for r := 0; r < rows; r++ {
		ss := 0.0
		for _, v := range xs[r*H : (r+1)*H] {
			ss += float64(v) * float64(v)
		}
		inv := float32(1 / math.Sqrt(ss/H+1e-6))
		invs := []float32{inv, math.Nextafter32(inv, 0), math.Nextafter32(inv, 2*inv)}
		for i := 0; i < H; i++ {
			xi, wi, g := xs[r*H+i], ws[i], got[r*H+i]
			twice := bf(bf(xi*inv) * wi) // HF: round the normalised value, then the product
			once := bf(xi * inv * wi)    // the other order: one rounding at the end
			if once != twice {
				orders++
			}
			accepted := false
			unambiguous := true
			for _, v := range invs {
				want := bf(bf(xi*v) * wi)
				accepted = accepted || g == want
				unambiguous = unambiguous && want == twice
			}
			if unambiguous {
				exact++
				if g != twice {
					t.Errorf("row %d element %d: got %v, want %v (rounded once: %v)", r, i, g, twice, once)
				}
			} else {
				ambiguous++
				if !accepted {
					t.Errorf("row %d element %d: got %v, want %v or a neighbour's rounding", r, i, g, twice)
				}
			}
		}
	}
	// Without elements where the orders differ this test could not fail
	// for the wrong order.
	if orders < rows*H/8 {
		t.Errorf("only %d of %d elements tell the rounding orders apart", orders, rows*H)
	}
	if exact < rows*H*9/10 {
		t.Errorf("only %d of %d elements checked exactly (%d ambiguous)", exact, rows*H, ambiguous)
	}
	t.Logf("%d elements exact, %d within an ulp of rstd; %d of %d differ between the two rounding orders", exact, ambiguous, orders, rows*H)
}

func TestRMSNormErrors(t *testing.T) {
	cpu := NewCPU()
	x, w, out, rstd := New(F32, 3, 4), New(F32, 4), New(F32, 3, 4), New(F32, 3)
	opWantErr(t, "weight", cpu.RMSNorm(out, rstd, x, New(F32, 5), 1e-5), "weight")
	opWantErr(t, "out", cpu.RMSNorm(New(F32, 4, 3), rstd, x, w, 1e-5), "shape of x")
	opWantErr(t, "rstd count", cpu.RMSNorm(out, New(F32, 4), x, w, 1e-5), "rstd")
	opWantErr(t, "rstd dtype", cpu.RMSNorm(out, New(BF16, 3), x, w, 1e-5), "rstd")
	opWantErr(t, "I32 x", cpu.RMSNorm(out, rstd, New(I32, 3, 4), w, 1e-5), "floating-point")
	opWantErr(t, "scalar", cpu.RMSNorm(New(F32), New(F32, 1), New(F32), w, 1e-5), "hidden dimension")
	opWantErr(t, "backward dout", cpu.RMSNormBackward(New(F32, 3, 4), New(F32, 3, 5), x, w, rstd), "shape of x")
	opWantErr(t, "backward I32 dx", cpu.RMSNormBackward(New(I32, 3, 4), out, x, w, rstd), "floating-point")
}
