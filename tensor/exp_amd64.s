#include "textflag.h"

// The float32 exp of exp.go (expGo), eight lanes at a time with AVX2 and FMA
// and sixteen with AVX-512, fused with the subtraction of a softmax row's
// max and the float64 sum of the results.

#include "exp_amd64.h"

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
	EXP8_CONSTANTS
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
	EXP16_CONSTANTS
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
