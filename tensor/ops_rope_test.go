package tensor

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// refRoPE rotates the first 2*half dimensions of each head row of D values,
// rows [N * heads] with cos, sin [N, half].
func refRoPE(x, cos, sin []float64, N, heads, D, half int) []float64 {
	out := append([]float64(nil), x...)
	for n := 0; n < N; n++ {
		for h := 0; h < heads; h++ {
			row := x[(n*heads+h)*D : (n*heads+h+1)*D]
			o := out[(n*heads+h)*D : (n*heads+h+1)*D]
			for i := 0; i < half; i++ {
				c, s := cos[n*half+i], sin[n*half+i]
				o[i] = row[i]*c - row[i+half]*s
				o[i+half] = row[i+half]*c + row[i]*s
			}
		}
	}
	return out
}

// ropeTables returns cos and sin of real RoPE angles (pos * theta^(-2i/R)),
// times a factor, as the caller builds them.
func ropeTables(N, half int, factor float64) (cos, sin *Tensor) {
	cos, sin = New(F32, N, half), New(F32, N, half)
	c, s := cos.F32(), sin.F32()
	for n := 0; n < N; n++ {
		for i := 0; i < half; i++ {
			angle := float64(n+3) * math.Pow(10000, -float64(i)/float64(half))
			c[n*half+i] = float32(factor * math.Cos(angle))
			s[n*half+i] = float32(factor * math.Sin(angle))
		}
	}
	return cos, sin
}

func TestRoPEForwardBackward(t *testing.T) {
	cpu := NewCPU()
	rng := rand.New(rand.NewPCG(5, 6))
	cases := []struct {
		shape []int // x: leading dims (N), heads, D
		half  int
	}{
		{[]int{1, 1, 4}, 2},       // one token, full rotary
		{[]int{5, 3, 10}, 3},      // partial rotary: R = 6 of 10
		{[]int{4, 2, 7}, 2},       // odd head dim, R = 4
		{[]int{2, 3, 2, 16}, 6},   // [B, T, heads, D], R = 12
		{[]int{2, 1, 128}, 48},    // Phi-4-mini's 96 of 128
		{[]int{1, 8, 65}, 32},     // R = 64 of 65
		{[]int{7, 1, 2}, 1},       // the smallest rotation
		{[]int{1, 2, 6}, 3},       // full rotary, R/2 odd
		{[]int{3, 2, 9}, 0},       // no rotary dimensions: a copy
		{[]int{2, 2, 2, 2, 4}, 2}, // more leading dimensions
	}
	for _, dt := range []DType{F32, BF16} {
		fwdTol := 1e-6
		if dt == BF16 {
			fwdTol = 1e-2
		}
		for _, tc := range cases {
			r := len(tc.shape)
			heads, D := tc.shape[r-2], tc.shape[r-1]
			x := opRandom(rng, dt, tc.shape...)
			N := x.NumElements() / (heads * D)
			cos, sin := opRandom(rng, F32, N, tc.half), opRandom(rng, F32, N, tc.half)
			name := fmt.Sprint(dt, tc.shape, " R=", 2*tc.half)

			out := New(dt, tc.shape...)
			if err := cpu.RoPE(out, x, cos, sin, false); err != nil {
				t.Fatal(err)
			}
			xs, cs, ss := opF64(x), opF64(cos), opF64(sin)
			opCheck(t, name+" forward", out, refRoPE(xs, cs, ss, N, heads, D, tc.half), fwdTol)

			// The inverse is the backward: the gradient of sum(RoPE(x) * cot).
			cot := opRandom(rng, dt, tc.shape...)
			dx := New(F32, tc.shape...)
			if err := cpu.RoPE(dx, cot, cos, sin, true); err != nil {
				t.Fatal(err)
			}
			cv := opF64(cot)
			want := opNumGrad(func() float64 {
				return opDot(refRoPE(xs, cs, ss, N, heads, D, tc.half), cv)
			}, xs)
			opCheck(t, name+" inverse", dx, want, 1e-4)
		}
	}
}

// TestRoPEInPlaceAndInverse rotates real angles in place and back: with
// cos^2 + sin^2 = 1 the inverse undoes the forward.
func TestRoPEInPlaceAndInverse(t *testing.T) {
	cpu := NewCPU()
	rng := rand.New(rand.NewPCG(7, 8))
	x := opRandom(rng, F32, 6, 3, 10)
	orig := x.ToF32()
	cos, sin := ropeTables(6, 4, 1)

	want := New(F32, 6, 3, 10)
	if err := cpu.RoPE(want, x, cos, sin, false); err != nil {
		t.Fatal(err)
	}
	if err := cpu.RoPE(x, x, cos, sin, false); err != nil {
		t.Fatal(err)
	}
	for i, v := range x.ToF32() {
		if v != want.F32()[i] {
			t.Fatalf("in place: element %d: %v != %v", i, v, want.F32()[i])
		}
	}
	if err := cpu.RoPE(x, x, cos, sin, true); err != nil {
		t.Fatal(err)
	}
	for i, v := range x.ToF32() {
		if math.Abs(float64(v-orig[i])) > 1e-6*(1+math.Abs(float64(orig[i]))) {
			t.Fatalf("inverse of forward: element %d: %v != %v", i, v, orig[i])
		}
		if i%10 >= 8 && v != orig[i] {
			t.Fatalf("pass-through dimension %d changed: %v != %v", i%10, v, orig[i])
		}
	}
}

func TestRoPEErrors(t *testing.T) {
	cpu := NewCPU()
	x := New(F32, 4, 2, 8)
	cos, sin := New(F32, 4, 3), New(F32, 4, 3)
	opWantErr(t, "rank", cpu.RoPE(New(F32, 4, 8), New(F32, 4, 8), cos, sin, false), "[N, heads, headDim]")
	opWantErr(t, "out", cpu.RoPE(New(F32, 4, 2, 9), x, cos, sin, false), "out")
	opWantErr(t, "cos dtype", cpu.RoPE(x, x, New(BF16, 4, 3), sin, false), "F32")
	opWantErr(t, "sin shape", cpu.RoPE(x, x, cos, New(F32, 4, 2), false), "F32")
	opWantErr(t, "tokens", cpu.RoPE(x, x, New(F32, 5, 3), New(F32, 5, 3), false), "does not fit")
	opWantErr(t, "R > D", cpu.RoPE(x, x, New(F32, 4, 5), New(F32, 4, 5), false), "does not fit")
	opWantErr(t, "I32 x", cpu.RoPE(New(I32, 4, 2, 8), New(I32, 4, 2, 8), cos, sin, false), "floating-point")
}
