package tensor

import (
	"math"
	"math/rand/v2"
	"os"
	"testing"
	"unsafe"
)

// Every bfloat16 bit pattern widens exactly and rounds back to itself, NaNs
// (with their sign and payload) included.
func TestBF16RoundTripAllPatterns(t *testing.T) {
	for i := 0; i < 1<<16; i++ {
		h := uint16(i)
		f := BF16ToF32(h)
		if got := F32ToBF16(f); got != h {
			t.Fatalf("bf16 %#04x -> %v -> %#04x", h, f, got)
		}
		if math.Float32bits(f)&0xffff != 0 {
			t.Fatalf("bf16 %#04x widened with low bits set", h)
		}
	}
}

func TestF16RoundTripAllPatterns(t *testing.T) {
	for i := 0; i < 1<<16; i++ {
		h := uint16(i)
		f := F16ToF32(h)
		if got := F32ToF16(f); got != h {
			t.Fatalf("f16 %#04x -> %v -> %#04x", h, f, got)
		}
	}
}

// f16Value decodes binary16 from its definition, in float64, independently
// of F16ToF32.
func f16Value(h uint16) float64 {
	sign := 1.0
	if h&0x8000 != 0 {
		sign = -1
	}
	exp := int(h>>10) & 0x1f
	man := float64(h & 0x3ff)
	switch exp {
	case 0x1f:
		if man != 0 {
			return math.NaN()
		}
		return sign * math.Inf(1)
	case 0:
		return sign * man * math.Pow(2, -24)
	}
	return sign * (1 + man/1024) * math.Pow(2, float64(exp-15))
}

func TestF16ToF32MatchesDefinition(t *testing.T) {
	for i := 0; i < 1<<16; i++ {
		h := uint16(i)
		want, got := f16Value(h), float64(F16ToF32(h))
		if math.IsNaN(want) != math.IsNaN(got) || !math.IsNaN(want) && want != got {
			t.Fatalf("f16 %#04x: got %v, want %v", h, got, want)
		}
		if math.Float32bits(F16ToF32(h))>>31 != uint32(h>>15) {
			t.Fatalf("f16 %#04x: sign lost", h)
		}
	}
}

// nearest picks, among all 65,536 patterns' values given in order, the
// nearest to x with ties to the even pattern: a brute-force reference.
type table struct {
	vals []float64 // finite non-negative values, ascending, pattern = index
}

func newTable(decode func(uint16) float64, maxFinite uint16) table {
	var tb table
	for i := 0; i <= int(maxFinite); i++ {
		tb.vals = append(tb.vals, decode(uint16(i)))
	}
	return tb
}

// round returns the pattern of |x| rounded to nearest even, or -1 for
// overflow to infinity; beyond is the first value that rounds to Inf.
func (tb table) round(x, beyond float64) int {
	if x >= beyond {
		return -1
	}
	lo, hi := 0, len(tb.vals)-1
	for hi-lo > 1 { // binary search for vals[lo] <= x < vals[hi]
		mid := (lo + hi) / 2
		if tb.vals[mid] <= x {
			lo = mid
		} else {
			hi = mid
		}
	}
	if x >= tb.vals[hi] {
		return hi
	}
	dl, dh := x-tb.vals[lo], tb.vals[hi]-x
	switch {
	case dl < dh:
		return lo
	case dh < dl:
		return hi
	case lo%2 == 0:
		return lo
	}
	return hi
}

func checkRounding(t *testing.T, name string, conv func(float32) uint16, tb table, inf uint16, beyond float64) {
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 2_000_000; i++ {
		var f float32
		switch i % 4 {
		case 0: // any bit pattern
			f = math.Float32frombits(rng.Uint32())
		case 1: // ties of the f16 grid (13 dropped bits) and of bf16 (16), and neighbours
			if rng.IntN(2) == 0 {
				f = math.Float32frombits(rng.Uint32()&^0x1fff | uint32(0x1000+rng.IntN(3)-1))
			} else {
				f = math.Float32frombits(rng.Uint32()&^0xffff | uint32(0x8000+rng.IntN(3)-1))
			}
		case 2: // small magnitudes (subnormal range of f16)
			f = float32(rng.NormFloat64() * 1e-6)
		default:
			f = float32(rng.NormFloat64() * 1e4)
		}
		if f != f {
			continue
		}
		got := conv(f)
		x := math.Abs(float64(f))
		want := tb.round(x, beyond)
		wantBits := inf
		if want >= 0 {
			wantBits = uint16(want)
		}
		if math.Signbit(float64(f)) {
			wantBits |= 0x8000
		}
		if got != wantBits {
			t.Fatalf("%s(%g = %#08x) = %#04x, want %#04x", name, f, math.Float32bits(f), got, wantBits)
		}
	}
}

func TestF32ToBF16Rounding(t *testing.T) {
	tb := newTable(func(h uint16) float64 { return float64(BF16ToF32(h)) }, 0x7f7f)
	// The largest finite bf16 is 0x7f7f; halfway to 2^128 rounds up (to even).
	beyond := float64(BF16ToF32(0x7f7f)) + math.Pow(2, 127-8)
	checkRounding(t, "F32ToBF16", F32ToBF16, tb, 0x7f80, beyond)
}

func TestF32ToF16Rounding(t *testing.T) {
	tb := newTable(f16Value, 0x7bff)
	checkRounding(t, "F32ToF16", F32ToF16, tb, 0x7c00, 65520)
}

func TestSpecialValues(t *testing.T) {
	inf := float32(math.Inf(1))
	for _, c := range []struct {
		f        float32
		bf, half uint16
	}{
		{0, 0, 0},
		{float32(math.Copysign(0, -1)), 0x8000, 0x8000},
		{inf, 0x7f80, 0x7c00},
		{-inf, 0xff80, 0xfc00},
		{1, 0x3f80, 0x3c00},
		{-2, 0xc000, 0xc000},
		{65504, 0x4780, 0x7bff},
		{65520, 0x4780, 0x7c00},
		{float32(math.Pow(2, -24)), 0x3380, 0x0001}, // smallest f16 subnormal
		{float32(math.Pow(2, -25)), 0x3300, 0x0000}, // a tie: rounds to even zero
		{math.MaxFloat32, 0x7f80, 0x7c00},           // rounds up to Inf in bf16
	} {
		if got := F32ToBF16(c.f); got != c.bf {
			t.Errorf("F32ToBF16(%g) = %#04x, want %#04x", c.f, got, c.bf)
		}
		if got := F32ToF16(c.f); got != c.half {
			t.Errorf("F32ToF16(%g) = %#04x, want %#04x", c.f, got, c.half)
		}
	}
	// A float32 NaN whose payload is only in the low 16 bits must stay NaN.
	nan := math.Float32frombits(0x7f800001)
	if h := F32ToBF16(nan); BF16ToF32(h) == BF16ToF32(h) {
		t.Errorf("F32ToBF16(NaN) = %#04x, not a NaN", h)
	}
	if h := F32ToF16(nan); F16ToF32(h) == F16ToF32(h) {
		t.Errorf("F32ToF16(NaN) = %#04x, not a NaN", h)
	}
	if h := F32ToBF16(-nan); h&0x8000 == 0 {
		t.Errorf("F32ToBF16(-NaN) lost the sign")
	}
}

// TestConvertAssembly: the assembly bulk of ConvertBF16ToF32 and
// ConvertF32ToBF16 against BF16ToF32 and F32ToBF16, bit for bit: every
// bf16 pattern; for float32, every upper half (each sign, exponent, NaN
// payload) with lower halves 0, 1, 0x7fff, 0x8000 (a tie), 0x8001 and
// 0xffff, and a million random patterns (COMPASS_CONVERT_EXHAUSTIVE=1:
// every float32, about ten seconds); and every length from 0 to 40, with the
// element past the end untouched.
func TestConvertAssembly(t *testing.T) {
	if !useAsmConvert {
		t.Skip("no AVX2 on this CPU: the conversions are Go only")
	}
	src16 := make([]uint16, 1<<16)
	for i := range src16 {
		src16[i] = uint16(i)
	}
	wide := make([]float32, len(src16))
	ConvertBF16ToF32(wide, src16)
	for i, h := range src16 {
		if math.Float32bits(wide[i]) != math.Float32bits(BF16ToF32(h)) {
			t.Fatalf("bf16 %#04x: %#08x, want %#08x", h, math.Float32bits(wide[i]), math.Float32bits(BF16ToF32(h)))
		}
	}

	check := func(bits []uint32) {
		t.Helper()
		f := unsafe.Slice((*float32)(unsafe.Pointer(&bits[0])), len(bits))
		got := make([]uint16, len(f))
		ConvertF32ToBF16(got, f)
		for i, x := range f {
			if want := F32ToBF16(x); got[i] != want {
				t.Fatalf("float32 %#08x: %#04x, want %#04x", bits[i], got[i], want)
			}
		}
	}
	var bits []uint32
	for hi := range uint32(1 << 16) {
		for _, lo := range []uint32{0, 1, 0x7fff, 0x8000, 0x8001, 0xffff} {
			bits = append(bits, hi<<16|lo)
		}
	}
	check(bits)
	rng := rand.New(rand.NewPCG(61, 62))
	random := make([]uint32, 1<<20)
	for i := range random {
		random[i] = rng.Uint32()
	}
	check(random)
	if os.Getenv("COMPASS_CONVERT_EXHAUSTIVE") != "" {
		chunk := make([]uint32, 1<<20)
		for base := uint64(0); base < 1<<32; base += 1 << 20 {
			for i := range chunk {
				chunk[i] = uint32(base) + uint32(i)
			}
			check(chunk)
		}
	}

	for n := 0; n <= 40; n++ {
		f := make([]float32, n)
		for i := range f {
			f[i] = float32(rng.NormFloat64())
		}
		h := make([]uint16, n+1)
		h[n] = 0xabcd
		ConvertF32ToBF16(h[:n], f)
		w := make([]float32, n+1)
		w[n] = 42
		ConvertBF16ToF32(w[:n], h[:n])
		for i := range n {
			if h[i] != F32ToBF16(f[i]) || w[i] != BF16ToF32(h[i]) {
				t.Fatalf("length %d, element %d: %#04x %v, want %#04x %v", n, i, h[i], w[i], F32ToBF16(f[i]), BF16ToF32(h[i]))
			}
		}
		if h[n] != 0xabcd || w[n] != 42 {
			t.Fatalf("length %d: wrote past the end", n)
		}
	}
}
