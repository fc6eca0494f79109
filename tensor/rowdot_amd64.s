#include "textflag.h"

// The loops of rowdot.go with AVX2 and FMA, for a row length d that is a
// multiple of 8.

// func rowDotsAVX2(dst, q, rows *float32, n, d, stride int, scale float32)
//
// Per row: two accumulators over sixteen columns at a time, then eight, a
// horizontal sum and the scale. Rows are independent, so the out-of-order
// core overlaps one row's sum with the next row's products.
TEXT ·rowDotsAVX2(SB), NOSPLIT, $0-52
	MOVQ         dst+0(FP), DI
	MOVQ         q+8(FP), SI
	MOVQ         rows+16(FP), DX
	MOVQ         n+24(FP), CX
	MOVQ         d+32(FP), R8
	MOVQ         stride+40(FP), R9
	VBROADCASTSS scale+48(FP), X15
	SHLQ         $2, R8 // bytes
	SHLQ         $2, R9

row:
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	XORQ   AX, AX

sixteen:
	LEAQ        64(AX), BX
	CMPQ        BX, R8
	JG          eight
	VMOVUPS     (SI)(AX*1), Y2
	VFMADD231PS (DX)(AX*1), Y2, Y0
	VMOVUPS     32(SI)(AX*1), Y3
	VFMADD231PS 32(DX)(AX*1), Y3, Y1
	MOVQ        BX, AX
	JMP         sixteen

eight:
	CMPQ        AX, R8
	JGE         sum
	VMOVUPS     (SI)(AX*1), Y2
	VFMADD231PS (DX)(AX*1), Y2, Y0

sum:
	VADDPS       Y1, Y0, Y0
	VEXTRACTF128 $1, Y0, X1
	VADDPS       X1, X0, X0
	VPERMILPS    $0x4e, X0, X1
	VADDPS       X1, X0, X0
	VPERMILPS    $0xb1, X0, X1
	VADDPS       X1, X0, X0
	VMULSS       X15, X0, X0
	VMOVSS       X0, (DI)
	ADDQ         $4, DI
	ADDQ         R9, DX
	DECQ         CX
	JNZ          row
	VZEROUPPER
	RET

// func rowAxpyAVX2(o, p, rows *float32, n, d, stride int)
//
// Eight columns at a time: four accumulators take rows s, s+1, s+2, s+3
// (four independent chains of FMAs), added together and into o at the end.
TEXT ·rowAxpyAVX2(SB), NOSPLIT, $0-48
	MOVQ o+0(FP), DI
	MOVQ p+8(FP), SI
	MOVQ rows+16(FP), DX
	MOVQ n+24(FP), CX
	MOVQ d+32(FP), R8
	MOVQ stride+40(FP), R9
	SHLQ $2, R8
	SHLQ $2, R9
	XORQ AX, AX // the columns' byte offset

strip:
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3
	LEAQ   (DX)(AX*1), BX // row s, these columns
	MOVQ   SI, R10        // p[s]
	MOVQ   CX, R11        // rows left

four:
	CMPQ         R11, $4
	JL           one
	VBROADCASTSS (R10), Y4
	VFMADD231PS  (BX), Y4, Y0
	VBROADCASTSS 4(R10), Y5
	VFMADD231PS  (BX)(R9*1), Y5, Y1
	LEAQ         (BX)(R9*2), R12
	VBROADCASTSS 8(R10), Y6
	VFMADD231PS  (R12), Y6, Y2
	VBROADCASTSS 12(R10), Y7
	VFMADD231PS  (R12)(R9*1), Y7, Y3
	LEAQ         (R12)(R9*2), BX
	ADDQ         $16, R10
	SUBQ         $4, R11
	JMP          four

one:
	TESTQ        R11, R11
	JZ           store
	VBROADCASTSS (R10), Y4
	VFMADD231PS  (BX), Y4, Y0
	ADDQ         R9, BX
	ADDQ         $4, R10
	DECQ         R11
	JMP          one

store:
	VADDPS  Y1, Y0, Y0
	VADDPS  Y3, Y2, Y2
	VADDPS  Y2, Y0, Y0
	VADDPS  (DI)(AX*1), Y0, Y0
	VMOVUPS Y0, (DI)(AX*1)
	ADDQ    $32, AX
	CMPQ    AX, R8
	JL      strip
	VZEROUPPER
	RET
