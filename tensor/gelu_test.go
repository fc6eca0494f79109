package tensor

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"testing"
)

// geluMaxULP is the error allowed against the float64 GELU rounded to
// float32. Every float32 of [-16, 16] tried (COMPASS_GELU_EXHAUSTIVE=1,
// 2026-12-06): worst 6 ulp, near x = -1.31, for all three kernels.
const geluMaxULP = 6

// gelu64 is x Phi(x) in float64, Phi by the complementary error function,
// which keeps its digits where x is very negative.
func gelu64(x float64) float64 { return x * 0.5 * math.Erfc(-x/math.Sqrt2) }

// geluSpecial are inputs at the edges: zeros, infinities, NaN, the boundary
// between the two pieces, the clamp, and where the result underflows.
var geluSpecial = []float32{
	0, float32(math.Copysign(0, -1)), float32(math.Inf(1)), float32(math.Inf(-1)), float32(math.NaN()),
	math.MaxFloat32, -math.MaxFloat32, math.SmallestNonzeroFloat32, -math.SmallestNonzeroFloat32,
	1, -1, math.Nextafter32(1, 0), -math.Nextafter32(1, 0), 0.5, -0.5, 1e-20, -1e-20,
	5.5, -5.5, 13, -13, 14, -14, 14.5, -14.5, 15, -15, 16, -16, 100, -100, 1e30, -1e30,
}

// TestGELUAccuracy compares every GELU implementation with float64 over
// every stride-th float32 of [-16, 16] in bit order (dense near 0), evenly
// spaced values (dense where |x| is large) and the special values. Set
// COMPASS_GELU_EXHAUSTIVE=1 to try every float32 of the range (minutes).
func TestGELUAccuracy(t *testing.T) {
	stride := uint32(127)
	if testing.Short() {
		stride = 4099
	}
	if os.Getenv("COMPASS_GELU_EXHAUSTIVE") != "" {
		stride = 1
	}
	for _, k := range geluKernels() {
		t.Run(k.name, func(t *testing.T) {
			worst, worstX, count := int64(0), float32(0), 0
			got := make([]float32, 1<<14)
			check := func(xs []float32) {
				k.apply(got[:len(xs)], xs)
				for i, x := range xs {
					want := float32(gelu64(float64(x)))
					d := ulpDiff(got[i], want)
					if got[i] == 0 && want == 0 {
						d = 0 // -0 for 0 and the like
					}
					if d > worst {
						worst, worstX = d, x
					}
				}
				count += len(xs)
			}
			geluInputs(stride, check)
			check(geluSpecial)
			t.Logf("%d inputs: worst %d ulp at %v (%v, want %v)", count, worst, worstX,
				geluOne(k, worstX), float32(gelu64(float64(worstX))))
			if worst > geluMaxULP {
				t.Errorf("gelu(%v) is %d ulp from float64, more than %d", worstX, worst, geluMaxULP)
			}
		})
	}
}

// geluInputs calls fn with batches of the float32 inputs of
// TestGELUAccuracy.
func geluInputs(stride uint32, fn func(xs []float32)) {
	var batch []float32
	add := func(x float32) {
		batch = append(batch, x)
		if len(batch) == 1<<14 {
			fn(batch)
			batch = batch[:0]
		}
	}
	for bits := uint32(0); bits <= math.Float32bits(16); bits += stride {
		x := math.Float32frombits(bits)
		add(x)
		add(-x)
	}
	const steps = 1 << 21
	for i := 0; i <= steps; i++ {
		add(float32(-16 + 32*float64(i)/steps))
	}
	fn(batch)
}

// geluOne is gelu(x) through kernel k.
func geluOne(k *geluKernel, x float32) float32 {
	var out [1]float32
	k.apply(out[:], []float32{x})
	return out[0]
}

// TestGELUKernelLengths checks lengths that end in every tail, writing in
// place, and not writing past dst.
func TestGELUKernelLengths(t *testing.T) {
	rng := rand.New(rand.NewPCG(41, 42))
	for _, k := range geluKernels() {
		for n := 1; n <= 70; n++ {
			name := fmt.Sprintf("%s n=%d", k.name, n)
			src := make([]float32, n+1)
			for i := range src {
				src[i] = float32(rng.NormFloat64() * 3)
			}
			dst := make([]float32, n+1)
			dst[n] = 42
			k.apply(dst[:n], src)
			if dst[n] != 42 {
				t.Fatalf("%s: wrote past the end", name)
			}
			for i, x := range src[:n] {
				if d := ulpDiff(dst[i], float32(gelu64(float64(x)))); d > geluMaxULP {
					t.Fatalf("%s: gelu(%v) = %v, %d ulp off", name, x, dst[i], d)
				}
			}
			in := append([]float32(nil), src[:n]...)
			k.apply(in, in)
			for i := range in {
				if in[i] != dst[i] {
					t.Fatalf("%s: in place, element %d is %v, want %v", name, i, in[i], dst[i])
				}
			}
		}
	}
}
