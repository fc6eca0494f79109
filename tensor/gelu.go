package tensor

import "math"

// The CPU's GELU, x Phi(x) with Phi the standard normal CDF (the exact form,
// torch's default), in float32, sixteen or eight at a time in assembly where
// the CPU allows (gelu_amd64.s). It used to call math.Erf in float64 one
// value at a time, which took half of the sentence encoder's time.
//
// Phi is not taken as (1 + erf(x/sqrt2))/2, which loses its digits to
// cancellation as x goes negative, but in two pieces:
//
//	|x| < 1:  Phi(x)    = 1/2 + x P(x^2)
//	|x| >= 1: Phi(-|x|) = exp(-x^2/2) t S(t), t = 1/(1 + |x|/2)
//	          Phi(|x|)  = 1 - Phi(-|x|)
//
// P (degree 5) and S (degree 8) are fitted by scripts/gelu_fit.py, to a
// relative error of 8e-10 and 2e-8. x^2 is split into hi + lo with lo exact
// (by FMA), and exp(-x^2/2) taken as exp(-hi/2) (1 - lo/2), so that the
// rounding of x^2 does not cost exp's argument up to 2^7 ulps. For x <= -1,
// x t S(t) is taken first and exp(-x^2/2) multiplied in last, so that Phi(x)
// never sits in a subnormal on the way to a normal result. |x| is clamped
// to 15 in the second piece, where exp(-x^2/2) is already 0 in float32,
// which keeps +Inf from making a NaN of hi - x^2. TestGELUAccuracy measures
// the result against float64: at most 6 ulp over every float32 of [-16, 16].
const (
	geluP0    = 0.3989422917366028
	geluP1    = -0.06649035960435867
	geluP2    = 0.009973309934139252
	geluP3    = -0.0011862912215292454
	geluP4    = 0.00011344013182679191
	geluP5    = -7.634977009729482e-06
	geluS0    = 0.19947949051856995
	geluS1    = 0.19919610023498535
	geluS2    = 0.15342622995376587
	geluS3    = 0.020557813346385956
	geluS4    = 0.07305684685707092
	geluS5    = -0.4943561553955078
	geluS6    = 0.5832598805427551
	geluS7    = -0.2848893702030182
	geluS8    = 0.04992419481277466
	geluClamp = 15
)

// geluKernel is one implementation of the GELU loop: dst[i] = gelu(src[i])
// for len(dst) == len(src) > 0; dst may be src.
type geluKernel struct {
	name  string
	apply func(dst, src []float32)
}

// geluGoKernel is the portable implementation; geluImpl the one in use,
// chosen at start-up from the CPU's features (gelu_amd64.go).
var (
	geluGoKernel = geluKernel{name: "go", apply: geluSliceGo}
	geluImpl     = &geluGoKernel
)

func geluSliceGo(dst, src []float32) {
	src = src[:len(dst)]
	for i, x := range src {
		dst[i] = geluGo(x)
	}
}

// geluGo is the float32 GELU the assembly computes, one value at a time.
func geluGo(x float32) float32 {
	a := float32(math.Abs(float64(x)))
	if a < 1 {
		u := x * x
		p := ((((geluP5*u+geluP4)*u+geluP3)*u+geluP2)*u+geluP1)*u + geluP0
		return x * (0.5 + x*p)
	}
	a = min(a, geluClamp) // a NaN x comes out of the last product
	t := 1 / (1 + 0.5*a)
	s := (((((((geluS8*t+geluS7)*t+geluS6)*t+geluS5)*t+geluS4)*t+geluS3)*t+geluS2)*t+geluS1)*t + geluS0
	sq := float64(a) * float64(a) // exact
	hi := float32(sq)
	lo := float32(sq - float64(hi))
	e := expGo(-0.5 * hi)
	e += e * (-0.5 * lo) // exp(-x^2/2)
	ts := t * s
	if x < 0 {
		// e last: where it is subnormal, so is the result, and
		// rounding e costs no more than rounding the result.
		return x * ts * e
	}
	return x * (1 - ts*e)
}
