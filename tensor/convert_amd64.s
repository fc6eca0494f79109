#include "textflag.h"

// The bulk of ConvertBF16ToF32 and ConvertF32ToBF16 with AVX2, sixteen
// values at a time (n is a multiple of 16), bit for bit BF16ToF32 and
// F32ToBF16.

// func convertBF16ToF32AVX2(dst *float32, src *uint16, n int)
TEXT ·convertBF16ToF32AVX2(SB), NOSPLIT, $0-24
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX
	SHRQ $4, CX
	JEQ  wdone

wloop:
	VPMOVZXWD (SI), Y0
	VPMOVZXWD 16(SI), Y1
	VPSLLD    $16, Y0, Y0
	VPSLLD    $16, Y1, Y1
	VMOVDQU   Y0, (DI)
	VMOVDQU   Y1, 32(DI)
	ADDQ      $32, SI
	ADDQ      $64, DI
	DECQ      CX
	JNE       wloop
	VZEROUPPER

wdone:
	RET

// ROUND8 sets dst to the bf16 of the eight float32 in src, one per 32-bit
// lane: (b + 0x7fff + (b>>16 & 1)) >> 16, or for a NaN its top half with
// the quiet bit set where the dropped half held all its payload (Y1..Y5
// are scratch; Y9..Y15 the constants).
#define ROUND8(src, dst) \
	VPSRLD    $16, src, Y1; \
	VPAND     Y11, Y1, Y2; \
	VPADDD    Y10, src, dst; \
	VPADDD    Y2, dst, dst; \
	VPSRLD    $16, dst, dst; \
	VPAND     Y12, src, Y4; \
	VPCMPGTD  Y13, Y4, Y4; \
	VPAND     Y14, Y1, Y5; \
	VPCMPEQD  Y9, Y5, Y5; \
	VPAND     Y15, Y5, Y5; \
	VPOR      Y1, Y5, Y5; \
	VPBLENDVB Y4, Y5, dst, dst

#define BROADCAST(imm, reg) \
	MOVL         imm, AX; \
	MOVD         AX, X0; \
	VPBROADCASTD X0, reg

// func convertF32ToBF16AVX2(dst *uint16, src *float32, n int)
TEXT ·convertF32ToBF16AVX2(SB), NOSPLIT, $0-24
	MOVQ   dst+0(FP), DI
	MOVQ   src+8(FP), SI
	MOVQ   n+16(FP), CX
	SHRQ   $4, CX
	JEQ    ndone
	VPXOR  Y9, Y9, Y9
	BROADCAST($0x7fff, Y10)
	BROADCAST($1, Y11)
	BROADCAST($0x7fffffff, Y12)
	BROADCAST($0x7f800000, Y13)
	BROADCAST($0x7f, Y14)
	BROADCAST($0x40, Y15)

nloop:
	VMOVDQU   (SI), Y6
	VMOVDQU   32(SI), Y7
	ROUND8(Y6, Y3)
	ROUND8(Y7, Y8)
	VPACKUSDW Y8, Y3, Y3     // words 0-3, 8-11 | 4-7, 12-15
	VPERMQ    $0xD8, Y3, Y3  // 0-3, 4-7 | 8-11, 12-15
	VMOVDQU   Y3, (DI)
	ADDQ      $64, SI
	ADDQ      $32, DI
	DECQ      CX
	JNE       nloop
	VZEROUPPER

ndone:
	RET
