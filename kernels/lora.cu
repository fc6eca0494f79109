// lora.cu: the LoRA products, on the tensor cores (mma.cuh). A LoRA adapter
// of rank r on a frozen projection y = x W^T adds s (x A^T) B^T, with x
// [N, in], A [r, in], B [out, r] (F32 parameters) and s the scaling. Every
// product of the forward and the backward (model/forward.go's linearForward
// and groupBackward) is one launch of lora_gemm with the right strides:
//
//	forward   t  = x A^T           opA = x   [N, in]  opB(k, n) = A[n, k]   M=N,   Ncols=r,  K=in,  alpha 1, beta 0
//	          y += s t B^T         opA = t   [N, r]   opB(k, n) = B[n, k]   M=N,   Ncols=out, K=r,  alpha s, beta 1
//	backward  dB += s dy^T t       opA(m, k) = dy[k, m]  opB = t [N, r]     M=out, Ncols=r,  K=N,   alpha s, beta 1
//	          dt  = s dy B         opA = dy  [N, out] opB = B  [out, r]     M=N,   Ncols=r,  K=out, alpha s, beta 0
//	          dA += dt^T x         opA(m, k) = dt[k, m]  opB = x [N, in]    M=r,   Ncols=in, K=N,   alpha 1, beta 1
//	          dx += dt A           opA = dt  [N, r]   opB = A  [r, in]      M=N,   Ncols=in, K=r,   alpha 1, beta 1
//
// (t is saved from the forward; y is the frozen GEMM's output, dx the
// frozen backward's; Phi-3's fused projections take row slices of B and dB
// and accumulate dt over their parts with beta 1.)
//
// Precision. The mma multiplies bf16 values and adds in float32. With
// split = 0 each operand is rounded to bf16: up to 2^-8 relative error per
// product; the tests bound the result at 2e-2 of its scale (the largest
// seen is 8e-3), fine for an inference-time forward on bf16 activations.
// With split = 1 each operand is split into hi = bf16(v) and
// lo = bf16(v - hi), and the tile product is hi*hi + hi*lo + lo*hi, three
// mma per step: about 2^-16 relative per product, bounded at 1e-4 in the
// tests (the largest seen is 1.3e-5), near enough to float32 for the
// float32 LoRA parameters and gradients of DESIGN decision 5. These
// products have one small dimension (r), so they are bound by memory, not
// by the tensor cores, and the three mma cost little: kernels.go's
// LoRASplitTraining is 1.
#include "mma.cuh"

#define LG_THREADS 128  // 4 warps, 2 x 2 over the output tile, each 16 x 16
#define LG_BM 32
#define LG_BN 32
#define LG_BK 32
#define LG_LDW (LG_BK / 2 + 4)  // words per tile row; the pad puts the 32 lanes' fragment loads in 32 banks

// stage_tile converts a tile of rows x LG_BK elements of an operand into
// bf16 pairs in shared memory: element (row i, depth k) of the tile is
// p[(row0 + i) * s_row + (k0 + k) * s_k], and zero for rows i >= valid or
// depths k0 + k >= K (the edges of the matrix). With split the remainders
// v - hi go to lo.
__device__ __forceinline__ void stage_tile(uint32_t* hi, uint32_t* lo, const void* p, int dt, long long s_row,
                                           long long s_k, int row0, int rows, int valid, int k0, int K,
                                           int split) {
  for (int i = threadIdx.x; i < rows * (LG_BK / 2); i += LG_THREADS) {
    int r = i / (LG_BK / 2), kp = i % (LG_BK / 2);
    long long gr = row0 + r, gk = k0 + 2 * kp;
    float v0 = 0.0f, v1 = 0.0f;
    if (r < valid) {
      if (gk < K) v0 = load_f32(p, dt, (size_t)(gr * s_row + gk * s_k));
      if (gk + 1 < K) v1 = load_f32(p, dt, (size_t)(gr * s_row + (gk + 1) * s_k));
    }
    uint32_t h = pack_bf16(v0, v1);
    hi[r * LG_LDW + kp] = h;
    if (split) lo[r * LG_LDW + kp] = pack_bf16(v0 - bf16_to_f32((uint16_t)h), v1 - bf16_to_f32((uint16_t)(h >> 16)));
  }
}

// lora_gemm computes C = alpha opA opB + beta C for C [M, Ncols] row-major
// (ldc elements per row; with beta = 0, C is not read, as in BLAS), where
// opA(m, k) = a[m*sam + k*sak] and opB(k, n) = b[n*sbn + k*sbk]: strides
// in elements let every product of the table above read its operands where
// they are, transposed or not. Operands and C of any float dtype. It is
// checked against tensor.CPU.MatMul. Grid (ceil(Ncols/32), ceil(M/32)),
// block 128, static shared memory 10 KiB.
extern "C" __global__ void __launch_bounds__(LG_THREADS)
    lora_gemm(void* c, int c_dt, long long ldc, const void* a, int a_dt, long long sam, long long sak, const void* b,
              int b_dt, long long sbk, long long sbn, int M, int Ncols, int K, float alpha, float beta, int split) {
  __shared__ uint32_t a_hi[LG_BM * LG_LDW], a_lo[LG_BM * LG_LDW];
  __shared__ uint32_t b_hi[LG_BN * LG_LDW], b_lo[LG_BN * LG_LDW];
  int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  int wm = warp >> 1, wn = warp & 1;  // this warp's 16 x 16 part of the tile
  int m0 = blockIdx.y * LG_BM, n0 = blockIdx.x * LG_BN;
  int mrows = min(LG_BM, M - m0), ncols = min(LG_BN, Ncols - n0);

  FragC acc[2];
#pragma unroll
  for (int j = 0; j < 2; j++)
#pragma unroll
    for (int i = 0; i < 4; i++) acc[j].x[i] = 0.0f;

  for (int k0 = 0; k0 < K; k0 += LG_BK) {
    __syncthreads();  // the previous step's tiles are read
    stage_tile(a_hi, a_lo, a, a_dt, sam, sak, m0, LG_BM, mrows, k0, K, split);
    stage_tile(b_hi, b_lo, b, b_dt, sbn, sbk, n0, LG_BN, ncols, k0, K, split);
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < LG_BK / 2; kk += 8) {  // 16 k = 8 words per mma
      FragA ah, al;
      load_frag_a(ah, a_hi + wm * 16 * LG_LDW + kk, LG_LDW, lane);
      if (split) load_frag_a(al, a_lo + wm * 16 * LG_LDW + kk, LG_LDW, lane);
#pragma unroll
      for (int j = 0; j < 2; j++) {
        FragB bh, bl;
        const int nrow = (wn * 16 + j * 8) * LG_LDW + kk;
        load_frag_b(bh, b_hi + nrow, LG_LDW, lane);
        mma_bf16_m16n8k16(acc[j], ah, bh);
        if (split) {
          load_frag_b(bl, b_lo + nrow, LG_LDW, lane);
          mma_bf16_m16n8k16(acc[j], ah, bl);
          mma_bf16_m16n8k16(acc[j], al, bh);
        }
      }
    }
  }

#pragma unroll
  for (int j = 0; j < 2; j++) {
#pragma unroll
    for (int i = 0; i < 4; i++) {
      int row = m0 + wm * 16 + frag_c_row(lane, i);
      int col = n0 + wn * 16 + j * 8 + frag_c_col(lane, i);
      if (row < M && col < Ncols) {
        size_t off = (size_t)row * ldc + col;
        float v = alpha * acc[j].x[i];
        if (beta != 0.0f) v += beta * load_f32(c, c_dt, off);
        store_f32(c, c_dt, off, v);
      }
    }
  }
}
