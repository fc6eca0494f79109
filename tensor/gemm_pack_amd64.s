#include "textflag.h"

// Transposing packs (AVX2): dst[p*width + q] = src row q, element p, for q
// < n (a multiple of 4) and p < d (a multiple of 8); src rows are srcStride
// bytes apart. Four rows at a time, eight depth steps at a time: the four
// rows are read as sequential streams, and the 8 x 4 result is written as
// eight 16-byte pieces of the sliver (which stays in L1/L2).
//
// Registers: SI, DI the current group of rows and its place in dst; AX, BX
// walk them in depth; R8 the source stride, R10 three of them; R9 a dst row
// (width*4 bytes), R11 three of them; CX groups left, DX depth blocks, R12
// the count-down of a group, R13 the second half of a block in dst.

#define TRANSPOSE_SETUP \
	MOVQ dst+0(FP), DI; \
	MOVQ src+8(FP), SI; \
	MOVQ srcStride+16(FP), R8; \
	MOVQ n+24(FP), CX; \
	MOVQ d+32(FP), DX; \
	MOVQ width+40(FP), R9; \
	SHLQ $2, R9; \
	LEAQ (R8)(R8*2), R10; \
	LEAQ (R9)(R9*2), R11; \
	SHRQ $2, CX; \
	SHRQ $3, DX

// Y0..Y3 hold rows 0..3, depths 0..7: interleave them into depth-major
// order (Y0 = depths 0 and 4, Y1 = 1 and 5, ...) and store the 8 x 4 block.
#define TRANSPOSE_STORE \
	VUNPCKLPS Y1, Y0, Y4; \
	VUNPCKHPS Y1, Y0, Y5; \
	VUNPCKLPS Y3, Y2, Y6; \
	VUNPCKHPS Y3, Y2, Y7; \
	VUNPCKLPD Y6, Y4, Y0; \
	VUNPCKHPD Y6, Y4, Y1; \
	VUNPCKLPD Y7, Y5, Y2; \
	VUNPCKHPD Y7, Y5, Y3; \
	VMOVUPS X0, (BX); \
	VMOVUPS X1, (BX)(R9*1); \
	VMOVUPS X2, (BX)(R9*2); \
	VMOVUPS X3, (BX)(R11*1); \
	LEAQ (BX)(R9*4), R13; \
	VEXTRACTF128 $1, Y0, (R13); \
	VEXTRACTF128 $1, Y1, (R13)(R9*1); \
	VEXTRACTF128 $1, Y2, (R13)(R9*2); \
	VEXTRACTF128 $1, Y3, (R13)(R11*1); \
	LEAQ (BX)(R9*8), BX

// func transposeDwords(dst, src unsafe.Pointer, srcStride, n, d, width int)
TEXT ·transposeDwords(SB), NOSPLIT, $0-48
	TRANSPOSE_SETUP
	TESTQ CX, CX
	JEQ   done
	TESTQ DX, DX
	JEQ   done

group:
	MOVQ SI, AX
	MOVQ DI, BX
	MOVQ DX, R12

block:
	VMOVUPS (AX), Y0
	VMOVUPS (AX)(R8*1), Y1
	VMOVUPS (AX)(R8*2), Y2
	VMOVUPS (AX)(R10*1), Y3
	TRANSPOSE_STORE
	ADDQ $32, AX
	DECQ R12
	JNE  block

	LEAQ (SI)(R8*4), SI
	ADDQ $16, DI
	DECQ CX
	JNE  group

done:
	VZEROUPPER
	RET

// func transposeBF16(dst, src unsafe.Pointer, srcStride, n, d, width int)
//
// The same from bf16 rows, widened to float32 (shifted into the high half).
TEXT ·transposeBF16(SB), NOSPLIT, $0-48
	TRANSPOSE_SETUP
	TESTQ CX, CX
	JEQ   done
	TESTQ DX, DX
	JEQ   done

group:
	MOVQ SI, AX
	MOVQ DI, BX
	MOVQ DX, R12

block:
	VPMOVZXWD (AX), Y0
	VPMOVZXWD (AX)(R8*1), Y1
	VPMOVZXWD (AX)(R8*2), Y2
	VPMOVZXWD (AX)(R10*1), Y3
	VPSLLD    $16, Y0, Y0
	VPSLLD    $16, Y1, Y1
	VPSLLD    $16, Y2, Y2
	VPSLLD    $16, Y3, Y3
	TRANSPOSE_STORE
	ADDQ $16, AX
	DECQ R12
	JNE  block

	LEAQ (SI)(R8*4), SI
	ADDQ $16, DI
	DECQ CX
	JNE  group

done:
	VZEROUPPER
	RET

// func interleaveBF16(dst *uint32, lo, hi *uint16, n, width, sliverStride int)
//
// The pair lo[q] | hi[q]<<16 of column q < n (a multiple of 8) goes to
// dst[(q/width)*sliverStride + q%width]: two rows of bf16 become pairs in
// consecutive slivers. CX counts groups of 8 columns left, R11 those left
// in this sliver (R8 per sliver); DI is the sliver's start, BX the place in
// it; R9 the bytes from one sliver to the next.
TEXT ·interleaveBF16(SB), NOSPLIT, $0-48
	MOVQ dst+0(FP), DI
	MOVQ lo+8(FP), SI
	MOVQ hi+16(FP), DX
	MOVQ n+24(FP), CX
	MOVQ width+32(FP), R8
	MOVQ sliverStride+40(FP), R9
	SHRQ $3, CX
	JEQ  done
	SHRQ $3, R8
	SHLQ $2, R9

sliver:
	MOVQ DI, BX
	MOVQ R8, R11

loop:
	VMOVDQU    (SI), X0
	VMOVDQU    (DX), X1
	VPUNPCKLWD X1, X0, X2 // pairs 0..3
	VPUNPCKHWD X1, X0, X3 // pairs 4..7
	VMOVDQU    X2, (BX)
	VMOVDQU    X3, 16(BX)
	ADDQ       $16, SI
	ADDQ       $16, DX
	ADDQ       $32, BX
	DECQ       CX
	JEQ        done
	DECQ       R11
	JNE        loop
	ADDQ       R9, DI
	JMP        sliver

done:
	RET
