// The float32 exp of exp.go (expGo) as assembler macros, with the constants
// they read: EXP8 (AVX2 and FMA) and EXP16 (AVX-512). Included by
// exp_amd64.s and gelu_amd64.s; the DATA symbols are private to each.

// Vectors of eight: the polynomial's coefficients P1..P5, 1 and the float32
// exponent bias 127.
DATA expVec<>+0(SB)/8, $0x3ab743ce3ab743ce
DATA expVec<>+8(SB)/8, $0x3ab743ce3ab743ce
DATA expVec<>+16(SB)/8, $0x3ab743ce3ab743ce
DATA expVec<>+24(SB)/8, $0x3ab743ce3ab743ce
DATA expVec<>+32(SB)/8, $0x3c0889083c088908
DATA expVec<>+40(SB)/8, $0x3c0889083c088908
DATA expVec<>+48(SB)/8, $0x3c0889083c088908
DATA expVec<>+56(SB)/8, $0x3c0889083c088908
DATA expVec<>+64(SB)/8, $0x3d2aa9c13d2aa9c1
DATA expVec<>+72(SB)/8, $0x3d2aa9c13d2aa9c1
DATA expVec<>+80(SB)/8, $0x3d2aa9c13d2aa9c1
DATA expVec<>+88(SB)/8, $0x3d2aa9c13d2aa9c1
DATA expVec<>+96(SB)/8, $0x3e2aaaaa3e2aaaaa
DATA expVec<>+104(SB)/8, $0x3e2aaaaa3e2aaaaa
DATA expVec<>+112(SB)/8, $0x3e2aaaaa3e2aaaaa
DATA expVec<>+120(SB)/8, $0x3e2aaaaa3e2aaaaa
DATA expVec<>+128(SB)/8, $0x3f0000003f000000
DATA expVec<>+136(SB)/8, $0x3f0000003f000000
DATA expVec<>+144(SB)/8, $0x3f0000003f000000
DATA expVec<>+152(SB)/8, $0x3f0000003f000000
DATA expVec<>+160(SB)/8, $0x3f8000003f800000
DATA expVec<>+168(SB)/8, $0x3f8000003f800000
DATA expVec<>+176(SB)/8, $0x3f8000003f800000
DATA expVec<>+184(SB)/8, $0x3f8000003f800000
DATA expVec<>+192(SB)/8, $0x0000007f0000007f
DATA expVec<>+200(SB)/8, $0x0000007f0000007f
DATA expVec<>+208(SB)/8, $0x0000007f0000007f
DATA expVec<>+216(SB)/8, $0x0000007f0000007f
GLOBL expVec<>(SB), RODATA|NOPTR, $224

#define P1 expVec<>+0(SB)
#define P2 expVec<>+32(SB)
#define P3 expVec<>+64(SB)
#define P4 expVec<>+96(SB)
#define P5 expVec<>+128(SB)
#define ONE expVec<>+160(SB)
#define BIAS expVec<>+192(SB)

// Scalars, broadcast into registers.
DATA expScalar<>+0(SB)/4, $0xc2d00000  // expLo -104
DATA expScalar<>+4(SB)/4, $0x42b20000  // expHi 89
DATA expScalar<>+8(SB)/4, $0x3fb8aa3b  // log2e
DATA expScalar<>+12(SB)/4, $0x3f318000 // ln2Hi 0.693359375
DATA expScalar<>+16(SB)/4, $0xb95e8083 // ln2Lo -2.12194440e-4
DATA expScalar<>+20(SB)/4, $0x39506967 // P0 1.9875691500e-4
GLOBL expScalar<>(SB), RODATA|NOPTR, $24

#define LO expScalar<>+0(SB)
#define HI expScalar<>+4(SB)
#define LOG2E expScalar<>+8(SB)
#define LN2HI expScalar<>+12(SB)
#define LN2LO expScalar<>+16(SB)
#define P0 expScalar<>+20(SB)

// Eight -1 then eight 0: the 32 bytes from expMask+4*(8-k) select the first
// k lanes.
DATA expMask<>+0(SB)/8, $0xffffffffffffffff
DATA expMask<>+8(SB)/8, $0xffffffffffffffff
DATA expMask<>+16(SB)/8, $0xffffffffffffffff
DATA expMask<>+24(SB)/8, $0xffffffffffffffff
DATA expMask<>+32(SB)/8, $0
DATA expMask<>+40(SB)/8, $0
DATA expMask<>+48(SB)/8, $0
DATA expMask<>+56(SB)/8, $0
GLOBL expMask<>(SB), RODATA|NOPTR, $64

// EXP8 sets y = exp(x) in eight lanes; x, n and t are clobbered. It needs
// Y14 = expLo, Y13 = expHi, Y12 = log2e, Y11 = ln2Hi, Y10 = ln2Lo. In turn:
//
//	x = min(max(x, expLo), expHi)
//	n = round(x log2e)
//	r = x - n ln2Hi - n ln2Lo (in x)
//	y = 1 + r + r^2 P(r), P by Horner's rule
//	y = y 2^(n>>1) 2^(n - n>>1)
//
// In the clamps x is the second source, which is what MAXPS and MINPS
// return when either is NaN: a NaN stays NaN to the end.
#define EXP8(x, n, y, t) \
	VMAXPS       x, Y14, x; \
	VMINPS       x, Y13, x; \
	VMULPS       Y12, x, n; \
	VROUNDPS     $0, n, n; \
	VFNMADD231PS Y11, n, x; \
	VFNMADD231PS Y10, n, x; \
	VBROADCASTSS P0, y; \
	VFMADD213PS  P1, x, y; \
	VFMADD213PS  P2, x, y; \
	VFMADD213PS  P3, x, y; \
	VFMADD213PS  P4, x, y; \
	VFMADD213PS  P5, x, y; \
	VMULPS       x, x, t; \
	VFMADD213PS  x, t, y; \
	VADDPS       ONE, y, y; \
	VCVTPS2DQ    n, n; \
	VPSRAD       $1, n, t; \
	VPSUBD       t, n, n; \
	VPADDD       BIAS, t, t; \
	VPSLLD       $23, t, t; \
	VMULPS       t, y, y; \
	VPADDD       BIAS, n, n; \
	VPSLLD       $23, n, n; \
	VMULPS       n, y, y

// EXP8_CONSTANTS loads the constants EXP8 reads from registers.
#define EXP8_CONSTANTS \
	VBROADCASTSS LO, Y14; \
	VBROADCASTSS HI, Y13; \
	VBROADCASTSS LOG2E, Y12; \
	VBROADCASTSS LN2HI, Y11; \
	VBROADCASTSS LN2LO, Y10

// EXP16 is EXP8 in sixteen lanes, with the constants in registers:
// Z30 = expLo, Z29 = expHi, Z28 = log2e, Z27 = ln2Hi, Z26 = ln2Lo,
// Z20..Z25 = P0..P5, Z19 = 1. VSCALEFPS applies 2^n with one rounding,
// overflow and underflow included.
#define EXP16(x, n, y, t) \
	VMAXPS       x, Z30, x; \
	VMINPS       x, Z29, x; \
	VMULPS       Z28, x, n; \
	VRNDSCALEPS  $0, n, n; \
	VFNMADD231PS Z27, n, x; \
	VFNMADD231PS Z26, n, x; \
	VMOVAPS      Z20, y; \
	VFMADD213PS  Z21, x, y; \
	VFMADD213PS  Z22, x, y; \
	VFMADD213PS  Z23, x, y; \
	VFMADD213PS  Z24, x, y; \
	VFMADD213PS  Z25, x, y; \
	VMULPS       x, x, t; \
	VFMADD213PS  x, t, y; \
	VADDPS       Z19, y, y; \
	VSCALEFPS    n, y, y

// EXP16_CONSTANTS loads the constants EXP16 reads.
#define EXP16_CONSTANTS \
	VBROADCASTSS LO, Z30; \
	VBROADCASTSS HI, Z29; \
	VBROADCASTSS LOG2E, Z28; \
	VBROADCASTSS LN2HI, Z27; \
	VBROADCASTSS LN2LO, Z26; \
	VBROADCASTSS P0, Z20; \
	VBROADCASTSS P1, Z21; \
	VBROADCASTSS P2, Z22; \
	VBROADCASTSS P3, Z23; \
	VBROADCASTSS P4, Z24; \
	VBROADCASTSS P5, Z25; \
	VBROADCASTSS ONE, Z19
