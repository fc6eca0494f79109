#include "textflag.h"

// The loops of rowdot.go with AVX2 and FMA, for a row length d that is a
// multiple of 8.

// func rowDotsAVX2(dst, q, rows *float32, n, d, stride int, scale float32)
//
// Four rows at a time (R10..R13 point at them): each loaded piece of q
// serves four FMAs, and two accumulators per row (sixteen columns a step,
// then eight) keep eight independent chains. A transposing reduction
// (VHADDPS twice, then the two halves) gives the four dots in one vector.
// The last n mod 4 rows go one at a time, summed in the same order: a dot's
// bits do not depend on where its row falls.
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

four:
	CMPQ   CX, $4
	JL     one
	MOVQ   DX, R10
	LEAQ   (DX)(R9*1), R11
	LEAQ   (DX)(R9*2), R12
	LEAQ   (R11)(R9*2), R13
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3
	VXORPS Y4, Y4, Y4
	VXORPS Y5, Y5, Y5
	VXORPS Y6, Y6, Y6
	VXORPS Y7, Y7, Y7
	XORQ   AX, AX

four16:
	LEAQ        64(AX), BX
	CMPQ        BX, R8
	JG          four8
	VMOVUPS     (SI)(AX*1), Y8
	VMOVUPS     32(SI)(AX*1), Y9
	VFMADD231PS (R10)(AX*1), Y8, Y0
	VFMADD231PS 32(R10)(AX*1), Y9, Y1
	VFMADD231PS (R11)(AX*1), Y8, Y2
	VFMADD231PS 32(R11)(AX*1), Y9, Y3
	VFMADD231PS (R12)(AX*1), Y8, Y4
	VFMADD231PS 32(R12)(AX*1), Y9, Y5
	VFMADD231PS (R13)(AX*1), Y8, Y6
	VFMADD231PS 32(R13)(AX*1), Y9, Y7
	MOVQ        BX, AX
	JMP         four16

four8:
	CMPQ        AX, R8
	JGE         foursum
	VMOVUPS     (SI)(AX*1), Y8
	VFMADD231PS (R10)(AX*1), Y8, Y0
	VFMADD231PS (R11)(AX*1), Y8, Y2
	VFMADD231PS (R12)(AX*1), Y8, Y4
	VFMADD231PS (R13)(AX*1), Y8, Y6

foursum:
	VADDPS       Y1, Y0, Y0
	VADDPS       Y3, Y2, Y2
	VADDPS       Y5, Y4, Y4
	VADDPS       Y7, Y6, Y6
	VHADDPS      Y2, Y0, Y0 // rows 0 and 1, pairs summed
	VHADDPS      Y6, Y4, Y4 // rows 2 and 3
	VHADDPS      Y4, Y0, Y0 // row r's halves in lanes r and r+4
	VEXTRACTF128 $1, Y0, X1
	VADDPS       X1, X0, X0
	VMULPS       X15, X0, X0
	VMOVUPS      X0, (DI)
	ADDQ         $16, DI
	LEAQ         (DX)(R9*4), DX
	SUBQ         $4, CX
	JMP          four

one:
	TESTQ  CX, CX
	JZ     done
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

sum: // in the order of foursum, so that a row's dot does not depend on its group
	VADDPS       Y1, Y0, Y0
	VHADDPS      Y0, Y0, Y0
	VHADDPS      Y0, Y0, Y0
	VEXTRACTF128 $1, Y0, X1
	VADDPS       X1, X0, X0
	VMULSS       X15, X0, X0
	VMOVSS       X0, (DI)
	ADDQ         $4, DI
	ADDQ         R9, DX
	DECQ         CX
	JMP          one

done:
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

// func rowDotsBF16AVX2(dst, q *float32, rows *uint16, n, d, stride int, scale float32)
//
// rowDotsAVX2 over rows of bf16: each piece of eight is widened to float32
// as it is loaded (zero-extended to 32 bits, shifted up 16), then the same
// FMAs in the same order. AX counts elements: q is read at AX*4, a row at
// AX*2.
TEXT ·rowDotsBF16AVX2(SB), NOSPLIT, $0-52
	MOVQ         dst+0(FP), DI
	MOVQ         q+8(FP), SI
	MOVQ         rows+16(FP), DX
	MOVQ         n+24(FP), CX
	MOVQ         d+32(FP), R8
	MOVQ         stride+40(FP), R9
	VBROADCASTSS scale+48(FP), X15
	SHLQ         $1, R9 // bytes

bfour:
	CMPQ   CX, $4
	JL     bone
	MOVQ   DX, R10
	LEAQ   (DX)(R9*1), R11
	LEAQ   (DX)(R9*2), R12
	LEAQ   (R11)(R9*2), R13
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3
	VXORPS Y4, Y4, Y4
	VXORPS Y5, Y5, Y5
	VXORPS Y6, Y6, Y6
	VXORPS Y7, Y7, Y7
	XORQ   AX, AX

bfour16:
	LEAQ        16(AX), BX
	CMPQ        BX, R8
	JG          bfour8
	VMOVUPS     (SI)(AX*4), Y8
	VMOVUPS     32(SI)(AX*4), Y9
	VPMOVZXWD   (R10)(AX*2), Y10
	VPMOVZXWD   16(R10)(AX*2), Y11
	VPMOVZXWD   (R11)(AX*2), Y12
	VPMOVZXWD   16(R11)(AX*2), Y13
	VPSLLD      $16, Y10, Y10
	VPSLLD      $16, Y11, Y11
	VPSLLD      $16, Y12, Y12
	VPSLLD      $16, Y13, Y13
	VFMADD231PS Y10, Y8, Y0
	VFMADD231PS Y11, Y9, Y1
	VFMADD231PS Y12, Y8, Y2
	VFMADD231PS Y13, Y9, Y3
	VPMOVZXWD   (R12)(AX*2), Y10
	VPMOVZXWD   16(R12)(AX*2), Y11
	VPMOVZXWD   (R13)(AX*2), Y12
	VPMOVZXWD   16(R13)(AX*2), Y13
	VPSLLD      $16, Y10, Y10
	VPSLLD      $16, Y11, Y11
	VPSLLD      $16, Y12, Y12
	VPSLLD      $16, Y13, Y13
	VFMADD231PS Y10, Y8, Y4
	VFMADD231PS Y11, Y9, Y5
	VFMADD231PS Y12, Y8, Y6
	VFMADD231PS Y13, Y9, Y7
	MOVQ        BX, AX
	JMP         bfour16

bfour8:
	CMPQ        AX, R8
	JGE         bfoursum
	VMOVUPS     (SI)(AX*4), Y8
	VPMOVZXWD   (R10)(AX*2), Y10
	VPMOVZXWD   (R11)(AX*2), Y12
	VPSLLD      $16, Y10, Y10
	VPSLLD      $16, Y12, Y12
	VFMADD231PS Y10, Y8, Y0
	VFMADD231PS Y12, Y8, Y2
	VPMOVZXWD   (R12)(AX*2), Y10
	VPMOVZXWD   (R13)(AX*2), Y12
	VPSLLD      $16, Y10, Y10
	VPSLLD      $16, Y12, Y12
	VFMADD231PS Y10, Y8, Y4
	VFMADD231PS Y12, Y8, Y6

bfoursum:
	VADDPS       Y1, Y0, Y0
	VADDPS       Y3, Y2, Y2
	VADDPS       Y5, Y4, Y4
	VADDPS       Y7, Y6, Y6
	VHADDPS      Y2, Y0, Y0
	VHADDPS      Y6, Y4, Y4
	VHADDPS      Y4, Y0, Y0
	VEXTRACTF128 $1, Y0, X1
	VADDPS       X1, X0, X0
	VMULPS       X15, X0, X0
	VMOVUPS      X0, (DI)
	ADDQ         $16, DI
	LEAQ         (DX)(R9*4), DX
	SUBQ         $4, CX
	JMP          bfour

bone:
	TESTQ  CX, CX
	JZ     bdone
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	XORQ   AX, AX

bsixteen:
	LEAQ        16(AX), BX
	CMPQ        BX, R8
	JG          beight
	VMOVUPS     (SI)(AX*4), Y2
	VPMOVZXWD   (DX)(AX*2), Y10
	VPSLLD      $16, Y10, Y10
	VFMADD231PS Y10, Y2, Y0
	VMOVUPS     32(SI)(AX*4), Y3
	VPMOVZXWD   16(DX)(AX*2), Y11
	VPSLLD      $16, Y11, Y11
	VFMADD231PS Y11, Y3, Y1
	MOVQ        BX, AX
	JMP         bsixteen

beight:
	CMPQ        AX, R8
	JGE         bsum
	VMOVUPS     (SI)(AX*4), Y2
	VPMOVZXWD   (DX)(AX*2), Y10
	VPSLLD      $16, Y10, Y10
	VFMADD231PS Y10, Y2, Y0

bsum:
	VADDPS       Y1, Y0, Y0
	VHADDPS      Y0, Y0, Y0
	VHADDPS      Y0, Y0, Y0
	VEXTRACTF128 $1, Y0, X1
	VADDPS       X1, X0, X0
	VMULSS       X15, X0, X0
	VMOVSS       X0, (DI)
	ADDQ         $4, DI
	ADDQ         R9, DX
	DECQ         CX
	JMP          bone

bdone:
	VZEROUPPER
	RET
