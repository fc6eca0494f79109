#include "textflag.h"

// AVX-512 micro-kernels for a 12 x 32 tile of C: Z0..Z23 hold it (row r in
// Z(2r) and Z(2r+1)), Z24..Z27 values of A broadcast, Z28/Z29 the current 32
// values of B, Z30 alpha at the end. SI walks A, DI walks B, DX is C, R8
// the C row stride in bytes.

// VDPBF16PS (AVX512_BF16) is not known to the Go assembler (Go 1.26), so
// this macro encodes "VDPBF16PS Z(a), Z(b), Z(acc)": Z(acc) += the dot
// products of the bf16 pairs in Z(b) with those in Z(a). That is
// EVEX.512.F3.0F38.W0 52 /r with mod=11: the prefix 62, P0 (inverted R, X,
// B, R'; map 0F38), P1 (W0, inverted vvvv, pp=F3), P2 (512 bits, inverted
// V'), the opcode and ModRM. The bytes were checked against GNU as and
// objdump for low and high registers.
#define VDPBF16PS_REG(a, b, acc) \
	BYTE $0x62; \
	BYTE $(0xF2 ^ (((acc)&8)<<4) ^ ((acc)&16) ^ (((a)&8)<<2) ^ (((a)&16)<<2)); \
	BYTE $(0x06 | ((15-((b)&15))<<3)); \
	BYTE $(0x48 ^ (((b)&16)>>1)); \
	BYTE $0x52; \
	BYTE $(0xC0 | (((acc)&7)<<3) | ((a)&7))

#define ZERO_TILE \
	VPXORD Z0, Z0, Z0; VPXORD Z1, Z1, Z1; VPXORD Z2, Z2, Z2; VPXORD Z3, Z3, Z3; \
	VPXORD Z4, Z4, Z4; VPXORD Z5, Z5, Z5; VPXORD Z6, Z6, Z6; VPXORD Z7, Z7, Z7; \
	VPXORD Z8, Z8, Z8; VPXORD Z9, Z9, Z9; VPXORD Z10, Z10, Z10; VPXORD Z11, Z11, Z11; \
	VPXORD Z12, Z12, Z12; VPXORD Z13, Z13, Z13; VPXORD Z14, Z14, Z14; VPXORD Z15, Z15, Z15; \
	VPXORD Z16, Z16, Z16; VPXORD Z17, Z17, Z17; VPXORD Z18, Z18, Z18; VPXORD Z19, Z19, Z19; \
	VPXORD Z20, Z20, Z20; VPXORD Z21, Z21, Z21; VPXORD Z22, Z22, Z22; VPXORD Z23, Z23, Z23

// The C tile is touched only at the end: ask for its rows (128 bytes, three
// lines when unaligned) now, so that they arrive during the depth loop.
#define PREFETCH_ROW \
	PREFETCHT0 (R9); PREFETCHT0 64(R9); PREFETCHT0 127(R9); ADDQ R8, R9

#define PREFETCH_C \
	MOVQ DX, R9; \
	PREFETCH_ROW; PREFETCH_ROW; PREFETCH_ROW; PREFETCH_ROW; \
	PREFETCH_ROW; PREFETCH_ROW; PREFETCH_ROW; PREFETCH_ROW; \
	PREFETCH_ROW; PREFETCH_ROW; PREFETCH_ROW; PREFETCH_ROW

// C row = alpha*acc + C row, one rounding.
#define ADD_ROW(a0, a1) \
	VFMADD213PS (DX), Z30, a0; \
	VMOVUPS a0, (DX); \
	VFMADD213PS 64(DX), Z30, a1; \
	VMOVUPS a1, 64(DX); \
	ADDQ R8, DX

#define ADD_TILE \
	ADD_ROW(Z0, Z1); ADD_ROW(Z2, Z3); ADD_ROW(Z4, Z5); ADD_ROW(Z6, Z7); \
	ADD_ROW(Z8, Z9); ADD_ROW(Z10, Z11); ADD_ROW(Z12, Z13); ADD_ROW(Z14, Z15); \
	ADD_ROW(Z16, Z17); ADD_ROW(Z18, Z19); ADD_ROW(Z20, Z21); ADD_ROW(Z22, Z23)

// C row = alpha*acc, C not read (the first block when beta is 0).
#define SET_ROW(a0, a1) \
	VMULPS Z30, a0, a0; \
	VMOVUPS a0, (DX); \
	VMULPS Z30, a1, a1; \
	VMOVUPS a1, 64(DX); \
	ADDQ R8, DX

#define SET_TILE \
	SET_ROW(Z0, Z1); SET_ROW(Z2, Z3); SET_ROW(Z4, Z5); SET_ROW(Z6, Z7); \
	SET_ROW(Z8, Z9); SET_ROW(Z10, Z11); SET_ROW(Z12, Z13); SET_ROW(Z14, Z15); \
	SET_ROW(Z16, Z17); SET_ROW(Z18, Z19); SET_ROW(Z20, Z21); SET_ROW(Z22, Z23)

// One depth step of the float32 kernel: 32 values of B, times each of the
// 12 values of A, broadcast into Z24..Z27 in turn. Broadcasting into a
// register rather than through the FMA's embedded broadcast took the
// kernel from 172 to 199 GFLOP/s on Zen 5 (BenchmarkMicroKernel,
// 2026-12-06): there, the embedded form seems to take an FP pipe.
#define STEP_F32(aoff, boff) \
	VMOVUPS boff(DI), Z28; \
	VMOVUPS boff+64(DI), Z29; \
	VBROADCASTSS aoff+0(SI), Z24; \
	VFMADD231PS  Z24, Z28, Z0; \
	VFMADD231PS  Z24, Z29, Z1; \
	VBROADCASTSS aoff+4(SI), Z25; \
	VFMADD231PS  Z25, Z28, Z2; \
	VFMADD231PS  Z25, Z29, Z3; \
	VBROADCASTSS aoff+8(SI), Z26; \
	VFMADD231PS  Z26, Z28, Z4; \
	VFMADD231PS  Z26, Z29, Z5; \
	VBROADCASTSS aoff+12(SI), Z27; \
	VFMADD231PS  Z27, Z28, Z6; \
	VFMADD231PS  Z27, Z29, Z7; \
	VBROADCASTSS aoff+16(SI), Z24; \
	VFMADD231PS  Z24, Z28, Z8; \
	VFMADD231PS  Z24, Z29, Z9; \
	VBROADCASTSS aoff+20(SI), Z25; \
	VFMADD231PS  Z25, Z28, Z10; \
	VFMADD231PS  Z25, Z29, Z11; \
	VBROADCASTSS aoff+24(SI), Z26; \
	VFMADD231PS  Z26, Z28, Z12; \
	VFMADD231PS  Z26, Z29, Z13; \
	VBROADCASTSS aoff+28(SI), Z27; \
	VFMADD231PS  Z27, Z28, Z14; \
	VFMADD231PS  Z27, Z29, Z15; \
	VBROADCASTSS aoff+32(SI), Z24; \
	VFMADD231PS  Z24, Z28, Z16; \
	VFMADD231PS  Z24, Z29, Z17; \
	VBROADCASTSS aoff+36(SI), Z25; \
	VFMADD231PS  Z25, Z28, Z18; \
	VFMADD231PS  Z25, Z29, Z19; \
	VBROADCASTSS aoff+40(SI), Z26; \
	VFMADD231PS  Z26, Z28, Z20; \
	VFMADD231PS  Z26, Z29, Z21; \
	VBROADCASTSS aoff+44(SI), Z27; \
	VFMADD231PS  Z27, Z28, Z22; \
	VFMADD231PS  Z27, Z29, Z23

// One step of the bf16 kernel: 32 columns of B as pairs (two depth steps),
// times each of the 12 pairs of A, broadcast into Z24..Z27 in turn.
#define STEP_BF16(aoff, boff) \
	VMOVUPS boff(DI), Z28; \
	VMOVUPS boff+64(DI), Z29; \
	VBROADCASTSS aoff+0(SI), Z24; \
	VDPBF16PS_REG(24, 28, 0); \
	VDPBF16PS_REG(24, 29, 1); \
	VBROADCASTSS aoff+4(SI), Z25; \
	VDPBF16PS_REG(25, 28, 2); \
	VDPBF16PS_REG(25, 29, 3); \
	VBROADCASTSS aoff+8(SI), Z26; \
	VDPBF16PS_REG(26, 28, 4); \
	VDPBF16PS_REG(26, 29, 5); \
	VBROADCASTSS aoff+12(SI), Z27; \
	VDPBF16PS_REG(27, 28, 6); \
	VDPBF16PS_REG(27, 29, 7); \
	VBROADCASTSS aoff+16(SI), Z24; \
	VDPBF16PS_REG(24, 28, 8); \
	VDPBF16PS_REG(24, 29, 9); \
	VBROADCASTSS aoff+20(SI), Z25; \
	VDPBF16PS_REG(25, 28, 10); \
	VDPBF16PS_REG(25, 29, 11); \
	VBROADCASTSS aoff+24(SI), Z26; \
	VDPBF16PS_REG(26, 28, 12); \
	VDPBF16PS_REG(26, 29, 13); \
	VBROADCASTSS aoff+28(SI), Z27; \
	VDPBF16PS_REG(27, 28, 14); \
	VDPBF16PS_REG(27, 29, 15); \
	VBROADCASTSS aoff+32(SI), Z24; \
	VDPBF16PS_REG(24, 28, 16); \
	VDPBF16PS_REG(24, 29, 17); \
	VBROADCASTSS aoff+36(SI), Z25; \
	VDPBF16PS_REG(25, 28, 18); \
	VDPBF16PS_REG(25, 29, 19); \
	VBROADCASTSS aoff+40(SI), Z26; \
	VDPBF16PS_REG(26, 28, 20); \
	VDPBF16PS_REG(26, 29, 21); \
	VBROADCASTSS aoff+44(SI), Z27; \
	VDPBF16PS_REG(27, 28, 22); \
	VDPBF16PS_REG(27, 29, 23)

// TILE(STEP) computes the tile into Z0..Z23, four depth steps per
// iteration, and leaves C in DX, its row stride in bytes in R8 and alpha
// in Z30.
#define TILE(STEP) \
	MOVQ d+0(FP), CX; \
	MOVQ a+8(FP), SI; \
	MOVQ b+16(FP), DI; \
	MOVQ c+24(FP), DX; \
	MOVQ ldc+32(FP), R8; \
	SHLQ $2, R8; \
	PREFETCH_C; \
	ZERO_TILE; \
	MOVQ CX, BX; \
	SHRQ $2, BX; \
	JEQ  tail; \
loop4: \
	STEP(0, 0); \
	STEP(48, 128); \
	STEP(96, 256); \
	STEP(144, 384); \
	ADDQ $192, SI; \
	ADDQ $512, DI; \
	DECQ BX; \
	JNE  loop4; \
tail: \
	ANDQ $3, CX; \
	JEQ  done; \
loop1: \
	STEP(0, 0); \
	ADDQ $48, SI; \
	ADDQ $128, DI; \
	DECQ CX; \
	JNE  loop1; \
done: \
	VBROADCASTSS alpha+40(FP), Z30

// func kernelAVX512(d int, a, b, c *float32, ldc int, alpha float32, add bool)
//
// C[0:12, 0:32] += alpha * sum over p < d of a[p*12+i] * b[p*32+j]; when
// add is false, the same is stored without reading C.
TEXT ·kernelAVX512(SB), NOSPLIT, $0-45
	TILE(STEP_F32)
	CMPB add+44(FP), $0
	JEQ  overwrite
	ADD_TILE
	VZEROUPPER
	RET

overwrite:
	SET_TILE
	VZEROUPPER
	RET

// func kernelAVX512BF16(d int, a, b *uint32, c *float32, ldc int, alpha float32, add bool)
//
// The same with bf16 pairs: C[0:12, 0:32] += alpha * sum over p < d of
// a[p*12+i].lo*b[p*32+j].lo + a[p*12+i].hi*b[p*32+j].hi.
TEXT ·kernelAVX512BF16(SB), NOSPLIT, $0-45
	TILE(STEP_BF16)
	CMPB add+44(FP), $0
	JEQ  overwrite
	ADD_TILE
	VZEROUPPER
	RET

overwrite:
	SET_TILE
	VZEROUPPER
	RET
