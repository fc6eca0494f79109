#include "textflag.h"

// The float32 GELU of gelu.go (geluGo), eight lanes at a time with AVX2 and
// FMA and sixteen with AVX-512. Both pieces of Phi are computed in every
// lane and the right one kept by a mask.

#include "exp_amd64.h"

// The coefficients of P and S, then 1/2, -1/2, the clamp 15 and |x|'s mask.
DATA geluConst<>+0(SB)/4, $0x3ecc422a  // P0
DATA geluConst<>+4(SB)/4, $0xbd882c19  // P1
DATA geluConst<>+8(SB)/4, $0x3c236718  // P2
DATA geluConst<>+12(SB)/4, $0xba9b7d54 // P3
DATA geluConst<>+16(SB)/4, $0x38ede6b5 // P4
DATA geluConst<>+20(SB)/4, $0xb70017fa // P5
DATA geluConst<>+24(SB)/4, $0x3e4c445a // S0
DATA geluConst<>+28(SB)/4, $0x3e4bfa10 // S1
DATA geluConst<>+32(SB)/4, $0x3e1d1bc4 // S2
DATA geluConst<>+36(SB)/4, $0x3ca868dc // S3
DATA geluConst<>+40(SB)/4, $0x3d959ed4 // S4
DATA geluConst<>+44(SB)/4, $0xbefd1c40 // S5
DATA geluConst<>+48(SB)/4, $0x3f155085 // S6
DATA geluConst<>+52(SB)/4, $0xbe91dd05 // S7
DATA geluConst<>+56(SB)/4, $0x3d4c7d50 // S8
DATA geluConst<>+60(SB)/4, $0x3f000000 // 0.5
DATA geluConst<>+64(SB)/4, $0xbf000000 // -0.5
DATA geluConst<>+68(SB)/4, $0x41700000 // 15
DATA geluConst<>+72(SB)/4, $0x7fffffff // |x| = x AND this
GLOBL geluConst<>(SB), RODATA|NOPTR, $76

#define GP0 geluConst<>+0(SB)
#define GP1 geluConst<>+4(SB)
#define GP2 geluConst<>+8(SB)
#define GP3 geluConst<>+12(SB)
#define GP4 geluConst<>+16(SB)
#define GP5 geluConst<>+20(SB)
#define GS0 geluConst<>+24(SB)
#define GS1 geluConst<>+28(SB)
#define GS2 geluConst<>+32(SB)
#define GS3 geluConst<>+36(SB)
#define GS4 geluConst<>+40(SB)
#define GS5 geluConst<>+44(SB)
#define GS6 geluConst<>+48(SB)
#define GS7 geluConst<>+52(SB)
#define GS8 geluConst<>+56(SB)
#define HALF geluConst<>+60(SB)
#define MHALF geluConst<>+64(SB)
#define CLAMP geluConst<>+68(SB)
#define ABS geluConst<>+72(SB)

// FMA8 sets acc = acc*u + c, c a scalar in memory, with t as scratch.
#define FMA8(c, u, acc, t) \
	VBROADCASTSS c, t; \
	VFMADD213PS  t, u, acc

// GELU8 sets Y1 = gelu(Y0) in eight lanes, clobbering Y2..Y9 and Y15; EXP8's
// constants are in Y10..Y14. In turn:
//
//	Y4 = 1/2 + x P(x^2), Y15 = |x| < 1        (the first piece)
//	Y2 = min(|x|, 15), Y5 = t, Y6 = t S(t)
//	Y7 = -hi/2, Y8 = -lo/2, Y1 = e = exp(-hi/2) (1 - lo/2)
//	Y2 = x (1 - t S(t) e), Y6 = x t S(t) e, Y4 = x Y4
//	Y1 = |x| < 1 ? Y4 : x < 0 ? Y6 : Y2
#define GELU8 \
	VBROADCASTSS ABS, Y2; \
	VANDPS       Y2, Y0, Y2; \
	VMULPS       Y0, Y0, Y3; \
	VBROADCASTSS GP5, Y4; \
	FMA8(GP4, Y3, Y4, Y5); \
	FMA8(GP3, Y3, Y4, Y5); \
	FMA8(GP2, Y3, Y4, Y5); \
	FMA8(GP1, Y3, Y4, Y5); \
	FMA8(GP0, Y3, Y4, Y5); \
	FMA8(HALF, Y0, Y4, Y5); \
	VCMPPS       $1, ONE, Y2, Y15; \
	VBROADCASTSS CLAMP, Y5; \
	VMINPS       Y5, Y2, Y2; \
	VBROADCASTSS HALF, Y5; \
	VMULPS       Y5, Y2, Y5; \
	VADDPS       ONE, Y5, Y5; \
	VMOVUPS      ONE, Y6; \
	VDIVPS       Y5, Y6, Y5; \
	VBROADCASTSS GS8, Y6; \
	FMA8(GS7, Y5, Y6, Y7); \
	FMA8(GS6, Y5, Y6, Y7); \
	FMA8(GS5, Y5, Y6, Y7); \
	FMA8(GS4, Y5, Y6, Y7); \
	FMA8(GS3, Y5, Y6, Y7); \
	FMA8(GS2, Y5, Y6, Y7); \
	FMA8(GS1, Y5, Y6, Y7); \
	FMA8(GS0, Y5, Y6, Y7); \
	VMULPS       Y5, Y6, Y6; \
	VMULPS       Y2, Y2, Y7; \
	VMOVAPS      Y7, Y8; \
	VFMSUB231PS  Y2, Y2, Y8; \
	VBROADCASTSS MHALF, Y5; \
	VMULPS       Y5, Y7, Y7; \
	VMULPS       Y5, Y8, Y8; \
	EXP8(Y7, Y9, Y1, Y2); \
	VFMADD231PS  Y8, Y1, Y1; \
	VMULPS       Y6, Y1, Y2; \
	VMOVUPS      ONE, Y5; \
	VSUBPS       Y2, Y5, Y2; \
	VMULPS       Y0, Y2, Y2; \
	VMULPS       Y0, Y6, Y6; \
	VMULPS       Y1, Y6, Y6; \
	VMULPS       Y0, Y4, Y4; \
	VXORPS       Y3, Y3, Y3; \
	VCMPPS       $1, Y3, Y0, Y3; \
	VBLENDVPS    Y3, Y6, Y2, Y2; \
	VBLENDVPS    Y15, Y4, Y2, Y1

// func geluAVX2(dst, src *float32, n int)
TEXT ·geluAVX2(SB), NOSPLIT, $0-24
	MOVQ         dst+0(FP), DI
	MOVQ         src+8(FP), SI
	MOVQ         n+16(FP), CX
	EXP8_CONSTANTS

loop8:
	CMPQ    CX, $8
	JL      tail
	VMOVUPS (SI), Y0
	GELU8
	VMOVUPS Y1, (DI)
	ADDQ    $32, SI
	ADDQ    $32, DI
	SUBQ    $8, CX
	JMP     loop8

tail: // the last k < 8 elements, through a mask of k lanes (the others read 0)
	TESTQ      CX, CX
	JZ         done
	LEAQ       expMask<>+32(SB), AX
	SHLQ       $2, CX
	SUBQ       CX, AX
	VMOVDQU    (AX), Y1
	VMASKMOVPS (SI), Y1, Y0
	GELU8
	VMOVDQU    (AX), Y2
	VMASKMOVPS Y1, Y2, (DI)

done:
	VZEROUPPER
	RET

// FMA16 sets acc = acc*u + c, c a scalar in memory broadcast to every lane.
#define FMA16(c, u, acc) VFMADD213PS.BCST c, u, acc

// GELU16 is GELU8 in sixteen lanes: Z1 = gelu(Z0), clobbering Z2..Z11 and
// K2, K3; EXP16's constants are in Z19..Z30, and Z18 = 0.
#define GELU16 \
	VPANDD.BCST  ABS, Z0, Z2; \
	VMULPS       Z0, Z0, Z3; \
	VBROADCASTSS GP5, Z4; \
	FMA16(GP4, Z3, Z4); \
	FMA16(GP3, Z3, Z4); \
	FMA16(GP2, Z3, Z4); \
	FMA16(GP1, Z3, Z4); \
	FMA16(GP0, Z3, Z4); \
	FMA16(HALF, Z0, Z4); \
	VCMPPS       $1, Z19, Z2, K2; \
	VMINPS.BCST  CLAMP, Z2, Z2; \
	VMULPS.BCST  HALF, Z2, Z5; \
	VADDPS       Z19, Z5, Z5; \
	VDIVPS       Z5, Z19, Z5; \
	VBROADCASTSS GS8, Z6; \
	FMA16(GS7, Z5, Z6); \
	FMA16(GS6, Z5, Z6); \
	FMA16(GS5, Z5, Z6); \
	FMA16(GS4, Z5, Z6); \
	FMA16(GS3, Z5, Z6); \
	FMA16(GS2, Z5, Z6); \
	FMA16(GS1, Z5, Z6); \
	FMA16(GS0, Z5, Z6); \
	VMULPS       Z5, Z6, Z6; \
	VMULPS       Z2, Z2, Z7; \
	VMOVAPS      Z7, Z8; \
	VFMSUB231PS  Z2, Z2, Z8; \
	VMULPS.BCST  MHALF, Z7, Z7; \
	VMULPS.BCST  MHALF, Z8, Z8; \
	EXP16(Z7, Z9, Z10, Z11); \
	VFMADD231PS  Z8, Z10, Z10; \
	VMULPS       Z6, Z10, Z2; \
	VSUBPS       Z2, Z19, Z2; \
	VMULPS       Z0, Z2, Z1; \
	VMULPS       Z0, Z6, Z6; \
	VCMPPS       $1, Z18, Z0, K3; \
	VMULPS       Z10, Z6, K3, Z1; \
	VMULPS       Z0, Z4, K2, Z1

// func geluAVX512(dst, src *float32, n int)
TEXT ·geluAVX512(SB), NOSPLIT, $0-24
	MOVQ         dst+0(FP), DI
	MOVQ         src+8(FP), SI
	MOVQ         n+16(FP), CX
	EXP16_CONSTANTS
	VPXORD       Z18, Z18, Z18

loop16:
	CMPQ    CX, $16
	JL      tail16
	VMOVUPS (SI), Z0
	GELU16
	VMOVUPS Z1, (DI)
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
	GELU16
	VMOVUPS   Z1, K1, (DI)

done16:
	VZEROUPPER
	RET
