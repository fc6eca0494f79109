package tensor

import "math"

// The conversions below round to nearest, ties to even, as PyTorch's
// .to(torch.bfloat16) and .half() do. NaN stays NaN (its sign and the top
// payload bits are kept, so a 16-bit NaN survives a trip through float32
// bit for bit), infinities stay infinite, and float16 subnormals are exact.

// BF16ToF32 widens a bfloat16 bit pattern; it is exact.
func BF16ToF32(h uint16) float32 {
	return math.Float32frombits(uint32(h) << 16)
}

// F32ToBF16 rounds a float32 to the nearest bfloat16, ties to even.
func F32ToBF16(f float32) uint16 {
	b := math.Float32bits(f)
	if b&0x7fffffff > 0x7f800000 { // NaN: truncate, keep it a NaN
		h := uint16(b >> 16)
		if h&0x7f == 0 {
			h |= 0x40 // the payload lived only in the dropped bits: set the quiet bit
		}
		return h
	}
	// Adding 0x7fff plus the lowest kept bit rounds to nearest even; a carry
	// into the exponent is right (it rounds up to the next binade or to Inf).
	return uint16((b + 0x7fff + (b>>16)&1) >> 16)
}

// F16ToF32 widens an IEEE binary16 bit pattern; it is exact.
func F16ToF32(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1f
	man := uint32(h & 0x3ff)
	switch {
	case exp == 0x1f: // Inf or NaN: payload moves to the top of the float32 mantissa
		return math.Float32frombits(sign | 0x7f800000 | man<<13)
	case exp != 0: // normal
		return math.Float32frombits(sign | (exp+127-15)<<23 | man<<13)
	case man == 0: // signed zero
		return math.Float32frombits(sign)
	}
	// Subnormal: value = man * 2^-24; normalise it for float32.
	e := uint32(127 - 15 + 1)
	for man&0x400 == 0 {
		man <<= 1
		e--
	}
	return math.Float32frombits(sign | e<<23 | (man&0x3ff)<<13)
}

// F32ToF16 rounds a float32 to the nearest binary16, ties to even; values
// beyond the float16 range become Inf, tiny ones subnormal or zero.
func F32ToF16(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	abs := b & 0x7fffffff
	switch {
	case abs > 0x7f800000: // NaN
		h := uint16(abs >> 13 & 0x3ff)
		if h == 0 {
			h = 0x200
		}
		return sign | 0x7c00 | h
	case abs >= 0x477ff000: // >= 65520 rounds to Inf (65504 is the largest finite)
		return sign | 0x7c00
	case abs >= 0x38800000: // normal in float16 (>= 2^-14)
		// Rebias the exponent, then round the 13 dropped bits to nearest even.
		v := abs - (127-15)<<23
		v += 0xfff + (v>>13)&1
		return sign | uint16(v>>13)
	case abs < 0x33000000: // < 2^-25: rounds to zero (exactly 2^-25 is a tie, to even: zero)
		return sign
	}
	// Subnormal result: shift the full significand right so that units are 2^-24.
	exp := abs >> 23
	man := abs&0x7fffff | 0x800000
	shift := 126 - exp // 14..24 (value = man * 2^(exp-150); want units of 2^-24)
	half := uint32(1) << (shift - 1)
	rest := man & (1<<shift - 1)
	q := man >> shift
	if rest > half || rest == half && q&1 == 1 {
		q++ // may carry into the smallest normal, which is the right encoding
	}
	return sign | uint16(q)
}

// ConvertBF16ToF32 widens src into dst; len(dst) must be >= len(src).
// Sixteen at a time in assembly where the CPU has AVX2.
func ConvertBF16ToF32(dst []float32, src []uint16) {
	dst = dst[:len(src)]
	done := 0
	if useAsmConvert && len(src) >= 16 {
		done = len(src) &^ 15
		convertBF16ToF32AVX2(&dst[0], &src[0], done)
	}
	for i := done; i < len(src); i++ {
		dst[i] = math.Float32frombits(uint32(src[i]) << 16)
	}
}

// ConvertF32ToBF16 rounds src into dst as F32ToBF16 does; len(dst) must be
// >= len(src). Sixteen at a time in assembly where the CPU has AVX2.
func ConvertF32ToBF16(dst []uint16, src []float32) {
	dst = dst[:len(src)]
	done := 0
	if useAsmConvert && len(src) >= 16 {
		done = len(src) &^ 15
		convertF32ToBF16AVX2(&dst[0], &src[0], done)
	}
	for i := done; i < len(src); i++ {
		dst[i] = F32ToBF16(src[i])
	}
}

// ConvertF16ToF32 widens src into dst; len(dst) must be >= len(src).
func ConvertF16ToF32(dst []float32, src []uint16) {
	dst = dst[:len(src)]
	for i, h := range src {
		dst[i] = F16ToF32(h)
	}
}

// ConvertF32ToF16 rounds src into dst; len(dst) must be >= len(src).
func ConvertF32ToF16(dst []uint16, src []float32) {
	dst = dst[:len(src)]
	for i, f := range src {
		dst[i] = F32ToF16(f)
	}
}
