#include "textflag.h"

// func kernelAVX2(d int, a, b, c *float32, ldc int, alpha float32, add bool)
//
// The AVX2/FMA micro-kernel for a 6 x 16 tile of C: C[0:6, 0:16] += alpha *
// sum over p < d of a[p*6+i] * b[p*16+j], with C rows ldc floats apart; when
// add is false it stores the same without reading C. Y0..Y11 hold the
// accumulator tile (two ymm per row), Y12/Y13 the current B row, Y14/Y15
// the broadcast A values, then alpha.

// TILE_AVX2 computes the tile into Y0..Y11 and leaves C in DX, its row
// stride in bytes in R8 and alpha in Y15.
#define TILE_AVX2 \
	MOVQ d+0(FP), CX; \
	MOVQ a+8(FP), SI; \
	MOVQ b+16(FP), DI; \
	MOVQ c+24(FP), DX; \
	MOVQ ldc+32(FP), R8; \
	SHLQ $2, R8; \
	VXORPS Y0, Y0, Y0; \
	VXORPS Y1, Y1, Y1; \
	VXORPS Y2, Y2, Y2; \
	VXORPS Y3, Y3, Y3; \
	VXORPS Y4, Y4, Y4; \
	VXORPS Y5, Y5, Y5; \
	VXORPS Y6, Y6, Y6; \
	VXORPS Y7, Y7, Y7; \
	VXORPS Y8, Y8, Y8; \
	VXORPS Y9, Y9, Y9; \
	VXORPS Y10, Y10, Y10; \
	VXORPS Y11, Y11, Y11; \
	TESTQ CX, CX; \
	JEQ   done; \
loop: \
	VMOVUPS (DI), Y12; \
	VMOVUPS 32(DI), Y13; \
	VBROADCASTSS 0(SI), Y14; \
	VFMADD231PS Y12, Y14, Y0; \
	VFMADD231PS Y13, Y14, Y1; \
	VBROADCASTSS 4(SI), Y15; \
	VFMADD231PS Y12, Y15, Y2; \
	VFMADD231PS Y13, Y15, Y3; \
	VBROADCASTSS 8(SI), Y14; \
	VFMADD231PS Y12, Y14, Y4; \
	VFMADD231PS Y13, Y14, Y5; \
	VBROADCASTSS 12(SI), Y15; \
	VFMADD231PS Y12, Y15, Y6; \
	VFMADD231PS Y13, Y15, Y7; \
	VBROADCASTSS 16(SI), Y14; \
	VFMADD231PS Y12, Y14, Y8; \
	VFMADD231PS Y13, Y14, Y9; \
	VBROADCASTSS 20(SI), Y15; \
	VFMADD231PS Y12, Y15, Y10; \
	VFMADD231PS Y13, Y15, Y11; \
	ADDQ $24, SI; \
	ADDQ $64, DI; \
	DECQ CX; \
	JNE  loop; \
done: \
	VBROADCASTSS alpha+40(FP), Y15

// C row = alpha*acc + C row, one rounding.
#define ADD_ROW_AVX2(a0, a1) \
	VFMADD213PS (DX), Y15, a0; \
	VMOVUPS a0, (DX); \
	VFMADD213PS 32(DX), Y15, a1; \
	VMOVUPS a1, 32(DX); \
	ADDQ R8, DX

// C row = alpha*acc, C not read.
#define SET_ROW_AVX2(a0, a1) \
	VMULPS Y15, a0, a0; \
	VMOVUPS a0, (DX); \
	VMULPS Y15, a1, a1; \
	VMOVUPS a1, 32(DX); \
	ADDQ R8, DX

TEXT ·kernelAVX2(SB), NOSPLIT, $0-45
	TILE_AVX2
	CMPB add+44(FP), $0
	JEQ  overwrite
	ADD_ROW_AVX2(Y0, Y1)
	ADD_ROW_AVX2(Y2, Y3)
	ADD_ROW_AVX2(Y4, Y5)
	ADD_ROW_AVX2(Y6, Y7)
	ADD_ROW_AVX2(Y8, Y9)
	ADD_ROW_AVX2(Y10, Y11)
	VZEROUPPER
	RET

overwrite:
	SET_ROW_AVX2(Y0, Y1)
	SET_ROW_AVX2(Y2, Y3)
	SET_ROW_AVX2(Y4, Y5)
	SET_ROW_AVX2(Y6, Y7)
	SET_ROW_AVX2(Y8, Y9)
	SET_ROW_AVX2(Y10, Y11)
	VZEROUPPER
	RET
