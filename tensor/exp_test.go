package tensor

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"testing"
)

// expMaxULP is the error allowed against math.Exp rounded to float32.
const expMaxULP = 2

// ulpDiff is how many float32 values lie between a and b (both >= 0, +Inf
// counting as the one after MaxFloat32), or 0 for two NaNs.
func ulpDiff(a, b float32) int64 {
	if a != a || b != b {
		if a != a && b != b {
			return 0
		}
		return math.MaxInt64
	}
	d := int64(math.Float32bits(a)) - int64(math.Float32bits(b))
	if d < 0 {
		return -d
	}
	return d
}

// expInputs calls fn with batches of float32 inputs covering [-104, 89]:
// every stride-th float32 of the range in bit order, which is dense near 0
// and in the subnormal range of the results, plus evenly spaced values, which
// are dense where |x| is large.
func expInputs(stride uint32, fn func(xs []float32)) {
	var batch []float32
	flush := func() {
		fn(batch)
		batch = batch[:0]
	}
	add := func(x float32) {
		batch = append(batch, x)
		if len(batch) == 1<<14 {
			flush()
		}
	}
	for bits := uint32(0); bits <= math.Float32bits(89); bits += stride {
		add(math.Float32frombits(bits))
	}
	for bits := uint32(0x80000000); bits <= math.Float32bits(-104); bits += stride {
		add(math.Float32frombits(bits))
	}
	const steps = 1 << 22
	for i := 0; i <= steps; i++ {
		add(float32(-104 + 193*float64(i)/steps))
	}
	flush()
}

// expSpecial are inputs at the edges: zeros, infinities, NaN, the overflow
// and underflow thresholds and the bounds of the clamp.
var expSpecial = []float32{
	0, float32(math.Copysign(0, -1)), float32(math.Inf(1)), float32(math.Inf(-1)), float32(math.NaN()),
	math.MaxFloat32, -math.MaxFloat32, math.SmallestNonzeroFloat32, -math.SmallestNonzeroFloat32,
	88.72283, 88.722839, 88.72284, 89, 89.1, 100, 1e10,
	-87.33654, -87.336548, -103.27893, -103.972, -103.97208, -103.9721, -104, -104.1, -150, -1e10,
	0.5 * math.Ln2, -0.5 * math.Ln2, 1, -1, 1e-8, -1e-8,
}

// TestExpAccuracy compares every exp implementation with math.Exp rounded
// to float32 over a dense sweep of [-104, 89] and the special values. Set
// COMPASS_EXP_EXHAUSTIVE=1 to try every float32 of the range (a minute).
func TestExpAccuracy(t *testing.T) {
	stride := uint32(251)
	if testing.Short() {
		stride = 9973
	}
	if os.Getenv("COMPASS_EXP_EXHAUSTIVE") != "" {
		stride = 1
	}
	for _, k := range expKernels() {
		t.Run(k.name, func(t *testing.T) {
			worst, worstX, count := int64(0), float32(0), 0
			worstExact := 0.0 // against the exact value, in ulps of the result
			got := make([]float32, 1<<14)
			check := func(xs []float32) {
				k.subSum(got[:len(xs)], xs, 0)
				for i, x := range xs {
					e := math.Exp(float64(x))
					if d := ulpDiff(got[i], float32(e)); d > worst {
						worst, worstX = d, x
					}
					if g := float64(got[i]); !math.IsInf(e, 0) && !math.IsInf(g, 0) && !math.IsNaN(g) && g != 0 {
						ulp := math.Max(float64(math.Nextafter32(got[i], float32(math.Inf(1)))-got[i]), math.SmallestNonzeroFloat32)
						worstExact = max(worstExact, math.Abs(g-e)/ulp)
					}
				}
				count += len(xs)
			}
			expInputs(stride, check)
			check(expSpecial)
			t.Logf("%d inputs: worst %d ulp at %v (%v, want %v); %.3f ulp from the exact value",
				count, worst, worstX, expOne(k, worstX), float32(math.Exp(float64(worstX))), worstExact)
			if worst > expMaxULP {
				t.Errorf("exp(%v) is %d ulp from math.Exp, more than %d", worstX, worst, expMaxULP)
			}
			for _, x := range expSpecial {
				want := float32(math.Exp(float64(x)))
				if g := expOne(k, x); ulpDiff(g, want) > expMaxULP || (want == 0) != (g == 0) || math.IsInf(float64(want), 1) != math.IsInf(float64(g), 1) {
					t.Errorf("exp(%v) = %v, want %v", x, g, want)
				}
			}
		})
	}
}

// expOne is exp(x) through kernel k.
func expOne(k *expKernel, x float32) float32 {
	var out [1]float32
	k.subSum(out[:], []float32{x}, 0)
	return out[0]
}

// TestExpSubSum checks the subtraction, the float64 sum, lengths that end
// in every tail, writing in place and not writing past dst.
func TestExpSubSum(t *testing.T) {
	rng := rand.New(rand.NewPCG(31, 32))
	for _, k := range expKernels() {
		for n := 1; n <= 70; n++ {
			name := fmt.Sprintf("%s n=%d", k.name, n)
			src := make([]float32, n)
			for i := range src {
				src[i] = float32(rng.NormFloat64() * 10)
			}
			src[rng.IntN(n)] = float32(math.Inf(-1)) // a masked score
			m := maxF32(src)
			dst := make([]float32, n+1)
			dst[n] = 42
			sum := k.subSum(dst[:n], src, m)
			want := 0.0
			for i, x := range src {
				w := float32(math.Exp(float64(x - m)))
				if ulpDiff(dst[i], w) > expMaxULP {
					t.Fatalf("%s: exp(%v - %v) = %v, want %v", name, x, m, dst[i], w)
				}
				want += float64(dst[i])
			}
			if math.Abs(sum-want) > 1e-12*want {
				t.Fatalf("%s: sum %v, want %v", name, sum, want)
			}
			if dst[n] != 42 {
				t.Fatalf("%s: wrote past dst", name)
			}
			in := append([]float32(nil), src...)
			if s := k.subSum(in, in, m); math.Float64bits(s) != math.Float64bits(sum) || string(f32Bytes(in)) != string(f32Bytes(dst[:n])) {
				t.Fatalf("%s: in place differs", name)
			}
		}
	}
}

func f32Bytes(x []float32) []byte {
	b := make([]byte, 0, 4*len(x))
	for _, v := range x {
		u := math.Float32bits(v)
		b = append(b, byte(u), byte(u>>8), byte(u>>16), byte(u>>24))
	}
	return b
}

func TestMaxF32(t *testing.T) {
	rng := rand.New(rand.NewPCG(33, 34))
	for _, k := range expKernels() {
		for n := 1; n <= 70; n++ {
			x := make([]float32, n)
			for i := range x {
				x[i] = float32(rng.NormFloat64()) - 100 // all negative: a zero lane would show
			}
			x[rng.IntN(n)] = float32(math.Inf(-1))
			for _, at := range []int{0, n - 1, rng.IntN(n)} {
				x[at] = -1
				if got := k.max(x); got != -1 {
					t.Fatalf("%s n=%d: max %v with -1 at %d", k.name, n, got, at)
				}
				x[at] = -200
			}
			if got, want := k.max(x), maxGo(x); got != want {
				t.Fatalf("%s n=%d: max %v, want %v", k.name, n, got, want)
			}
		}
	}
	if m := maxF32(nil); !math.IsInf(float64(m), -1) {
		t.Fatalf("max of nothing is %v, want -Inf", m)
	}
}

// BenchmarkExpSubSum is one softmax row of the cross-entropy's default
// chunk.
func BenchmarkExpSubSum(b *testing.B) {
	rng := rand.New(rand.NewPCG(35, 36))
	x, y := make([]float32, defaultLossChunk), make([]float32, defaultLossChunk)
	for i := range x {
		x[i] = float32(rng.NormFloat64() * 3)
	}
	for _, k := range expKernels() {
		b.Run(k.name, func(b *testing.B) {
			b.SetBytes(int64(4 * len(x)))
			for range b.N {
				k.subSum(y, x, 0.001)
			}
		})
	}
}
