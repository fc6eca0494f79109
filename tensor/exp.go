package tensor

import "math"

// The exponentials of the softmaxes (the cross-entropy's 32000 per token,
// attention's T per query) are computed in float32, eight or sixteen at a
// time in assembly where the CPU allows (exp_amd64.s), by the method of
// Cephes' expf:
//
//	x = n ln2 + r, n = round(x / ln2), |r| <= ln2/2
//	exp(x) = 2^n exp(r), exp(r) ~ 1 + r + r^2 P(r)
//
// with ln2 split in two (Cody and Waite) so that r is nearly exact, and P a
// degree-5 minimax polynomial. x is first clamped to [expLo, expHi], beyond
// which the result is 0 or +Inf anyway, so that n stays small; 2^n is then
// applied as two normal powers of two (VSCALEFPS with AVX-512), so that
// subnormal results and overflow come out right. Against math.Exp rounded
// to float32 the error is at most 1 ulp, measured over every float32 in
// [-104, 89] (COMPASS_EXP_EXHAUSTIVE=1 go test -run ExpAccuracy).
const (
	expLo    = -104 // exp(-104) < 2^-150: rounds to 0
	expHi    = 89   // exp(89) > MaxFloat32: overflows
	log2e    = 1.44269504088896341
	ln2Hi    = 0.693359375 // ln2 = ln2Hi + ln2Lo; n*ln2Hi is exact for |n| < 2^15
	ln2Lo    = -2.12194440e-4
	expP0    = 1.9875691500e-4
	expP1    = 1.3981999507e-3
	expP2    = 8.3334519073e-3
	expP3    = 4.1665795894e-2
	expP4    = 1.6666665459e-1
	expP5    = 5.0000001201e-1
	expBias  = 127 // of the float32 exponent
	expRound = 0x1.8p23
)

// expKernel is one implementation of the two loops a softmax row needs.
type expKernel struct {
	name string
	// subSum sets dst[i] = exp(src[i] - m), the difference rounded to
	// float32, and returns the sum of dst accumulated in float64.
	// len(src) == len(dst) > 0.
	subSum func(dst, src []float32, m float32) float64
	// max returns the largest element of x, len(x) > 0. A NaN in x need not
	// come out: the exponentials of x carry it.
	max func(x []float32) float32
}

// expGoKernel is the portable implementation; expImpl the one in use,
// chosen at start-up from the CPU's features (exp_amd64.go).
var (
	expGoKernel = expKernel{name: "go", subSum: expSubSumGo, max: maxGo}
	expImpl     = &expGoKernel
)

// expSubSum sets dst[i] = exp(src[i] - m) for the len(dst) first elements of
// src and returns their sum in float64: one pass of a softmax row shifted by
// its max m (or by its log-sum-exp, giving the probabilities).
func expSubSum(dst, src []float32, m float32) float64 {
	if len(dst) == 0 {
		return 0
	}
	return expImpl.subSum(dst, src[:len(dst)], m)
}

// maxF32 returns the largest element of x, or -Inf when x is empty.
func maxF32(x []float32) float32 {
	if len(x) == 0 {
		return float32(math.Inf(-1))
	}
	return expImpl.max(x)
}

func expSubSumGo(dst, src []float32, m float32) float64 {
	src = src[:len(dst)]
	sum := 0.0
	for i, x := range src {
		p := expGo(x - m)
		dst[i] = p
		sum += float64(p)
	}
	return sum
}

// expGo is the float32 exp the assembly computes, one value at a time.
func expGo(x float32) float32 {
	switch {
	case x != x:
		return x // NaN
	case x < expLo:
		x = expLo
	case x > expHi:
		x = expHi
	}
	// Adding and subtracting 1.5*2^23 rounds to an integer, to even.
	n := (x*log2e + expRound) - expRound
	r := x - n*ln2Hi
	r -= n * ln2Lo
	p := ((((expP0*r+expP1)*r+expP2)*r+expP3)*r+expP4)*r + expP5
	y := p*(r*r) + r + 1
	// n is in [-150, 128]: each half of it is a normal power of two.
	n1 := int32(n) >> 1
	n2 := int32(n) - n1
	return y * math.Float32frombits(uint32(n1+expBias)<<23) * math.Float32frombits(uint32(n2+expBias)<<23)
}

func maxGo(x []float32) float32 {
	m := x[0]
	for _, v := range x[1:] {
		m = max(m, v)
	}
	return m
}
