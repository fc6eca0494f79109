#include "textflag.h"

// The float32 exp of exp.go (expGo), eight lanes at a time with AVX2 and FMA
// and sixteen with AVX-512, fused with the subtraction of a softmax row's
// max and the float64 sum of the results.

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

// SUM8 adds the eight float32 of y (xy is its low half) into the float64
// accumulators Y9 (lanes 0-3) and Y8 (lanes 4-7), with a and b as scratch.
#define SUM8(y, xy, a, b, xb) \
	VCVTPS2PD    xy, a; \
	VEXTRACTF128 $1, y, xb; \
	VCVTPS2PD    xb, b; \
	VADDPD       a, Y9, Y9; \
	VADDPD       b, Y8, Y8

// func expSubSumAVX2(dst, src *float32, n int, m float32) float64
TEXT ·expSubSumAVX2(SB), NOSPLIT, $0-40
	MOVQ         dst+0(FP), DI
	MOVQ         src+8(FP), SI
	MOVQ         n+16(FP), CX
	VBROADCASTSS m+24(FP), Y15
	VBROADCASTSS LO, Y14
	VBROADCASTSS HI, Y13
	VBROADCASTSS LOG2E, Y12
	VBROADCASTSS LN2HI, Y11
	VBROADCASTSS LN2LO, Y10
	VXORPD       Y9, Y9, Y9
	VXORPD       Y8, Y8, Y8

loop8:
	CMPQ    CX, $8
	JL      tail
	VMOVUPS (SI), Y0
	VSUBPS  Y15, Y0, Y0
	EXP8(Y0, Y1, Y2, Y3)
	VMOVUPS Y2, (DI)
	SUM8(Y2, X2, Y4, Y5, X5)
	ADDQ    $32, SI
	ADDQ    $32, DI
	SUBQ    $8, CX
	JMP     loop8

tail: // the last k < 8 elements, through a mask of k lanes
	TESTQ      CX, CX
	JZ         done
	LEAQ       expMask<>+32(SB), AX
	SHLQ       $2, CX
	SUBQ       CX, AX
	VMOVDQU    (AX), Y6
	VMASKMOVPS (SI), Y6, Y0
	VSUBPS     Y15, Y0, Y0
	EXP8(Y0, Y1, Y2, Y3)
	VANDPS     Y6, Y2, Y2
	VMASKMOVPS Y2, Y6, (DI)
	SUM8(Y2, X2, Y4, Y5, X5)

done:
	VADDPD       Y8, Y9, Y9
	VEXTRACTF128 $1, Y9, X8
	VADDPD       X8, X9, X9
	VPERMILPD    $1, X9, X8
	VADDSD       X8, X9, X9
	VMOVSD       X9, ret+32(FP)
	VZEROUPPER
	RET

// EXP16 is EXP8 in sixteen lanes, with the constants in registers: Z31 = m,
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

// SUM16 adds the sixteen float32 of y (yy is its low half) into the float64
// accumulators Z9 (lanes 0-7) and Z8 (lanes 8-15).
#define SUM16(y, yy, a, b, yb) \
	VCVTPS2PD     yy, a; \
	VEXTRACTF64X4 $1, y, yb; \
	VCVTPS2PD     yb, b; \
	VADDPD        a, Z9, Z9; \
	VADDPD        b, Z8, Z8

// func expSubSumAVX512(dst, src *float32, n int, m float32) float64
TEXT ·expSubSumAVX512(SB), NOSPLIT, $0-40
	MOVQ         dst+0(FP), DI
	MOVQ         src+8(FP), SI
	MOVQ         n+16(FP), CX
	VBROADCASTSS m+24(FP), Z31
	VBROADCASTSS LO, Z30
	VBROADCASTSS HI, Z29
	VBROADCASTSS LOG2E, Z28
	VBROADCASTSS LN2HI, Z27
	VBROADCASTSS LN2LO, Z26
	VBROADCASTSS P0, Z20
	VBROADCASTSS P1, Z21
	VBROADCASTSS P2, Z22
	VBROADCASTSS P3, Z23
	VBROADCASTSS P4, Z24
	VBROADCASTSS P5, Z25
	VBROADCASTSS ONE, Z19
	VXORPD       Z9, Z9, Z9
	VXORPD       Z8, Z8, Z8

loop16:
	CMPQ    CX, $16
	JL      tail16
	VMOVUPS (SI), Z0
	VSUBPS  Z31, Z0, Z0
	EXP16(Z0, Z1, Z2, Z3)
	VMOVUPS Z2, (DI)
	SUM16(Z2, Y2, Z4, Z5, Y5)
	ADDQ    $64, SI
	ADDQ    $64, DI
	SUBQ    $16, CX
	JMP     loop16

tail16: // the last k < 16 elements, under a mask of k lanes
	TESTQ     CX, CX
	JZ        done16
	MOVL      $1, AX
	SHLL      CX, AX
	DECL      AX
	KMOVW     AX, K1
	VMOVUPS.Z (SI), K1, Z0
	VSUBPS    Z31, Z0, Z0
	EXP16(Z0, Z1, Z2, Z3)
	VMOVAPS.Z Z2, K1, Z2
	VMOVUPS   Z2, K1, (DI)
	SUM16(Z2, Y2, Z4, Z5, Y5)

done16:
	VADDPD        Z8, Z9, Z9
	VEXTRACTF64X4 $1, Z9, Y8
	VADDPD        Y8, Y9, Y9
	VEXTRACTF128  $1, Y9, X8
	VADDPD        X8, X9, X9
	VPERMILPD     $1, X9, X8
	VADDSD        X8, X9, X9
	VMOVSD        X9, ret+32(FP)
	VZEROUPPER
	RET

// func maxAVX2(x *float32, n int) float32
TEXT ·maxAVX2(SB), NOSPLIT, $0-20
	MOVQ x+0(FP), SI
	MOVQ n+8(FP), CX
	CMPQ CX, $8
	JL   short
	LEAQ -32(SI)(CX*4), DX // the last eight
	VMOVUPS (SI), Y0
	VMOVUPS (DX), Y1
	ADDQ $32, SI
	SUBQ $8, CX

loop16:
	CMPQ    CX, $16
	JL      last
	VMAXPS  (SI), Y0, Y0
	VMAXPS  32(SI), Y1, Y1
	ADDQ    $64, SI
	SUBQ    $16, CX
	JMP     loop16

last: // fewer than 16 left: one more eight, then the last eight (a max may overlap)
	CMPQ         CX, $8
	JL           reduce
	VMAXPS       (SI), Y0, Y0

reduce:
	VMAXPS       Y1, Y0, Y0
	VEXTRACTF128 $1, Y0, X1
	VMAXPS       X1, X0, X0
	VPERMILPS    $0x4e, X0, X1
	VMAXPS       X1, X0, X0
	VPERMILPS    $0xb1, X0, X1
	VMAXPS       X1, X0, X0
	VZEROUPPER
	MOVSS        X0, ret+16(FP)
	RET

short: // fewer than eight, one at a time
	MOVSS (SI), X0

shortloop:
	ADDQ  $4, SI
	DECQ  CX
	JZ    shortdone
	MAXSS (SI), X0
	JMP   shortloop

shortdone:
	MOVSS X0, ret+16(FP)
	RET
