// lora.cu: the LoRA products, on the tensor cores (mma.cuh). A LoRA adapter
// of rank r on a frozen projection y = x W^T adds s (x A^T) B^T, with x
// [N, in], A [r, in], B [out, r] (float32 parameters and activations) and s
// the scaling. The model (model/forward.go) keeps t = A x^T transposed,
// [r, N], and its six products are three kernels:
//
//	lora_narrow  t  = A x^T,          dt = s B^T dy^T     the sum along x's or dy's rows
//	lora_grad    dA += dt x,          dB += s (t dy)^T    the sum over the tokens
//	lora_expand  y  = s t^T B^T,      dx += dt^T A        the sum over the rank
//
// (When the first two split their long sum over blocks, the last block of
// each output tile adds the partial sums up: lora_finish.) Each reads or
// writes one large float32 matrix and does little arithmetic per element,
// so it should run at memory speed if
// the arithmetic keeps up; at rank 16 float32 FMA does not (thin.cu, in the
// history, lost to cuBLAS for that reason), so every product runs on the
// bf16 tensor cores with each float32 operand split into hi = bf16(v) and
// lo = bf16(v - hi) and three mma per step, hi*hi + hi*lo + lo*hi: about
// 2^-16 relative per product (kernels/README.md gives the bounds the tests
// hold them to). lora_narrow and lora_grad also take their large operand
// in bf16 (the _bf16 entries: the attention output, which the model keeps
// in bf16 for o_proj, and the attention's dv for v's adapter): read as it
// is, hi = the value and lo = 0, so the al mma is left out; the sums are
// those of the float32 entries on the widened values.
#include "mma.cuh"

#define LORA_THREADS 128  // 4 warps, in all three kernels

// lora_narrow computes the LoRA products whose output has few rows and whose
// sum runs along the rows of a large operand: C [R, N] = alpha P Q^T + beta C
// with Q [N, K] row-major (ldq elements per row; float32, bf16 in
// lora_narrow_bf16) and P(i, k) = p[i*spi + k*spk] float32, R small (a
// rank, or the stacked ranks of a loraGroup):
//
//	forward   t  = A x^T       P = A [r, in]            Q = x  [N, in]
//	backward  dt = s B^T dy^T  P(i, k) = B[k, i] (spi 1) Q = dy [N, out]
//
// These products read N x K floats to write R x N of them.
//
// The grid is (ceil(N/64), ceil(R/64), S): a block takes 64 tokens (16 per
// warp, the mma's M side), 64 rows of P (eight n-tiles of 8) and one of S
// chunks of the sum, kchunk long (a multiple of LN_BK). Each warp reads its
// tokens' Q straight into registers, 8-byte loads in the mma's A-fragment
// order (a quad of lanes covers 32 contiguous bytes of a row, so every
// sector fetched is used), and splits them there; P's chunk is split into
// shared memory once per block and read with ldmatrix. With S = 1 the block
// writes C = alpha acc + beta C (C not read when beta is 0); with S > 1 it
// writes its partial sum to ws [S, R, N] and the tile's last block adds
// the S partials in order (lora_finish), so the result does not depend on
// scheduling. Block 128, static shared memory 18 KiB.
#define LN_BT 64           // tokens per block, 16 per warp
#define LN_BR 64           // rows of P per block
#define LN_BK 64           // depth per stage
#define LN_LD (LN_BK + 8)  // bf16 per shared row: 144 bytes, so ldmatrix's 8 rows fall in 32 distinct banks

// ln_ld2 is a load of Q's two elements at p, one A-fragment register's
// worth: 8 bytes of float32, or 4 of bf16 (p aligned to its size).
__device__ __forceinline__ float2 ln_ld2(const float* p) {
#ifndef __CUDACC__
  if ((uintptr_t)p % 8 != 0) emu::fail("lora_narrow: an 8-byte load from an address that is not 8-byte aligned");
#endif
  return *(const float2*)p;
}

__device__ __forceinline__ uint32_t ln_ld2(const uint16_t* p) {
#ifndef __CUDACC__
  if ((uintptr_t)p % 4 != 0) emu::fail("lora_narrow: a 4-byte load from an address that is not 4-byte aligned");
#endif
  return *(const uint32_t*)p;
}

// ln_load2 returns Q[row, k] and Q[row, k+1], zero past N rows or past kend;
// vec says that the paired loads are aligned (ldq even, q aligned to two
// elements).
__device__ __forceinline__ float2 ln_load2(const float* q, long long ldq, int row, int N, int k, int kend, bool vec) {
  float2 v = make_float2(0.0f, 0.0f);
  if (row < N) {
    const float* r = q + (size_t)row * ldq + k;
    if (vec && k + 1 < kend) {
      v = ln_ld2(r);
    } else {
      if (k < kend) v.x = r[0];
      if (k + 1 < kend) v.y = r[1];
    }
  }
  return v;
}

__device__ __forceinline__ uint32_t ln_load2(const uint16_t* q, long long ldq, int row, int N, int k, int kend,
                                             bool vec) {
  uint32_t v = 0;
  if (row < N) {
    const uint16_t* r = q + (size_t)row * ldq + k;
    if (vec && k + 1 < kend) {
      v = ln_ld2(r);
    } else {
      if (k < kend) v = r[0];
      if (k + 1 < kend) v |= (uint32_t)r[1] << 16;
    }
  }
  return v;
}

// QPair is what ln_ld2 returns for Q's element type X: two floats, or two
// bf16 packed as an A-fragment register.
template <class X>
struct QPair;
template <>
struct QPair<float> {
  typedef float2 type;
};
template <>
struct QPair<uint16_t> {
  typedef uint32_t type;
};

// ln_split sets hi to the bf16 pair of v and lo to the pair of what
// rounding left over; a bf16 pair is its own hi (lo, zero, is not used).
__device__ __forceinline__ void ln_split(uint32_t& hi, uint32_t& lo, float2 v) {
  hi = pack_bf16_rn(v.x, v.y);
  lo = pack_bf16_rn(v.x - bf16_to_f32((uint16_t)hi), v.y - bf16_to_f32((uint16_t)(hi >> 16)));
}

__device__ __forceinline__ void ln_split(uint32_t& hi, uint32_t& lo, uint32_t v) {
  hi = v;
  lo = 0;
}

// mma_split_pair adds to the n-tiles c0 and c1 (a pair: 16 columns) the
// product of a 16 x 16 A tile given as bf16 ah + al by the B tile stored
// [n][k] as bf16 hi + lo at bhi and blo (ld elements per n): ah bh + ah bl
// + al bh, the three mma of the hi + lo split (al bl, about 2^-18 of the
// product, is left out: the split's own rounding is of that order). With
// ALo false al is zero (a bf16 A) and its mma is left out too.
template <bool ALo = true>
__device__ __forceinline__ void mma_split_pair(FragC& c0, FragC& c1, const FragA& ah, const FragA& al,
                                               const uint16_t* bhi, const uint16_t* blo, int ld, int lane) {
  FragB bh0, bh1, bl0, bl1;
  ldmatrix_frag_b2(bh0, bh1, bhi, ld, lane);
  ldmatrix_frag_b2(bl0, bl1, blo, ld, lane);
  mma_bf16_m16n8k16(c0, ah, bh0);
  mma_bf16_m16n8k16(c0, ah, bl0);
  if (ALo) mma_bf16_m16n8k16(c0, al, bh0);
  mma_bf16_m16n8k16(c1, ah, bh1);
  mma_bf16_m16n8k16(c1, ah, bl1);
  if (ALo) mma_bf16_m16n8k16(c1, al, bh1);
}

// lora_out writes an output element's sum v: to its slot ws[wsoff] of the
// partial sums when there are chunks (ws not null), else C[off] = alpha v
// + beta C[off] (C not read when beta is 0).
__device__ __forceinline__ void lora_out(float* c, size_t off, float* ws, size_t wsoff, float v, float alpha,
                                         float beta) {
  if (ws != nullptr) {
    ws[wsoff] = v;
    return;
  }
  float o = alpha * v;
  if (beta != 0.0f) o += beta * c[off];
  c[off] = o;
}

// lora_finish ends a block of lora_narrow or lora_grad whose sum was split
// into S chunks (blockIdx.z the block's), its partial sums for C's rows
// r0.. and columns m0.. (a tile_rows x tile_cols tile; ws [S, R, M]) written:
// the last of the tile's S blocks to get here adds the S partials up, in
// chunk order whichever block is last (so the bits do not depend on the
// schedule), and writes C(i, m) = c[i*sci + m*scm] = alpha sum + beta C (C
// not read when beta is 0). counters (one per tile of the grid's x and y,
// zero at the launch) count the tile's blocks done; the last block sets
// its counter back to zero for the next launch. The threadfence-and-count
// pattern of the CUDA programming guide's memory fence example: every
// thread's partials are visible device-wide before its block is counted,
// and the last block reads them past L1 (__ldcg). Without it, a separate
// reduction kernel would cost a launch per product, about 5 us each.
__device__ __noinline__ void lora_finish(float* c, long long sci, long long scm, const float* ws,
                                            unsigned* counters, int R, int M, int S, int r0, int m0, int tile_rows,
                                            int tile_cols, float alpha, float beta) {
  __shared__ int last;
  __threadfence();
  __syncthreads();  // the block's partials are all written and fenced
  if (threadIdx.x == 0) {
    unsigned* counter = counters + (size_t)blockIdx.y * gridDim.x + blockIdx.x;
    last = atomicAdd(counter, 1u) == (unsigned)S - 1;
    if (last) *counter = 0;  // every block of the tile has counted
  }
  __syncthreads();
  if (!last) return;
  __threadfence();
  int rows = min(tile_rows, R - r0), cols = min(tile_cols, M - m0);
  size_t n = (size_t)R * M;
  for (int e = threadIdx.x; e < rows * cols; e += LORA_THREADS) {
    int r = r0 + e / cols, m = m0 + e % cols;  // along ws's rows: coalesced
    size_t at = (size_t)r * M + m;
    float sum = 0.0f;
    for (int z = 0; z < S; z++) sum += __ldcg(ws + (size_t)z * n + at);
    size_t off = (size_t)r * sci + (size_t)m * scm;
    float v = alpha * sum;
    if (beta != 0.0f) v += beta * c[off];
    c[off] = v;
  }
}

// lora_narrow_tile is lora_narrow with Q's elements of type X: float, or
// bf16 (uint16_t) for lora_narrow_bf16.
template <class X>
__device__ __forceinline__ void lora_narrow_tile(float* c, long long ldc, float* ws, unsigned* counters, const X* q,
                                                 long long ldq, const float* p, long long spi, long long spk, int R,
                                                 int N, int K, int kchunk, float alpha, float beta) {
  constexpr bool split = sizeof(X) == 4;  // float32 Q: hi + lo; bf16 Q: hi alone
  __shared__ __align__(16) uint16_t p_hi[LN_BR * LN_LD];
  __shared__ __align__(16) uint16_t p_lo[LN_BR * LN_LD];
  int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  int g = lane >> 2, t = lane & 3;
  int n0 = blockIdx.x * LN_BT + warp * 16;  // this warp's first token
  int r0 = blockIdx.y * LN_BR;
  int rows = min(LN_BR, R - r0);
  int pairs = (rows + 15) / 16;  // n-tile pairs with a row of P in them (warp-uniform)
  int kbeg = blockIdx.z * kchunk, kend = min(K, kbeg + kchunk);
  bool vec = (ldq & 1) == 0 && ((uintptr_t)q % (2 * sizeof(X))) == 0;

  FragC acc[LN_BR / 8];
#pragma unroll
  for (int j = 0; j < LN_BR / 8; j++) acc[j].x[0] = acc[j].x[1] = acc[j].x[2] = acc[j].x[3] = 0.0f;

  for (int k0 = kbeg; k0 < kend; k0 += LN_BK) {
    // This stage's Q: 4 k-steps of the A fragment, a0a1, a2a3, a4a5, a6a7;
    // without a test per load where the warp's 16 rows and the stage's
    // depths are all inside Q (warp-uniform).
    typename QPair<X>::type xv[LN_BK / 16][4];
    if (vec && n0 + 16 <= N && k0 + LN_BK <= kend) {
      const X* row_g = q + (size_t)(n0 + g) * ldq + k0 + 2 * t;
      const X* row_g8 = row_g + 8 * ldq;
#pragma unroll
      for (int s = 0; s < LN_BK / 16; s++) {
        xv[s][0] = ln_ld2(row_g + 16 * s);
        xv[s][1] = ln_ld2(row_g8 + 16 * s);
        xv[s][2] = ln_ld2(row_g + 16 * s + 8);
        xv[s][3] = ln_ld2(row_g8 + 16 * s + 8);
      }
    } else {
#pragma unroll
      for (int s = 0; s < LN_BK / 16; s++) {
        int k = k0 + 16 * s + 2 * t;
        xv[s][0] = ln_load2(q, ldq, n0 + g, N, k, kend, vec);
        xv[s][1] = ln_load2(q, ldq, n0 + g + 8, N, k, kend, vec);
        xv[s][2] = ln_load2(q, ldq, n0 + g, N, k + 8, kend, vec);
        xv[s][3] = ln_load2(q, ldq, n0 + g + 8, N, k + 8, kend, vec);
      }
    }
    __syncthreads();  // the previous stage's P is read
    // P's rows r0.. at depths k0..k0+LN_BK-1, split, for the n-tile pairs
    // that have a row of P (rows past R zero), two depths at a time: pair
    // e is (i, kp), e = kp * (pairs * 16) + i where P's unit stride runs
    // along i (spi 1), else e = i * (LN_BK / 2) + kp, so that the loads
    // coalesce; (i, kp) steps from one pair to the next without a
    // division (this loop runs for every stage of every block, and with a
    // division and two conversions in integer arithmetic per element it
    // took more instructions than the stage's loads and products).
    {
      int inner = spi == 1 ? pairs * 16 : LN_BK / 2, outer = spi == 1 ? LN_BK / 2 : pairs * 16;
      int istep = LORA_THREADS % inner, ostep = LORA_THREADS / inner;
      for (int a = threadIdx.x % inner, o = threadIdx.x / inner; o < outer;) {
        int i = spi == 1 ? a : o, k = 2 * (spi == 1 ? o : a);
        float2 v = make_float2(0.0f, 0.0f);
        if (i < rows) {
          const float* src = p + (size_t)(r0 + i) * spi + (size_t)(k0 + k) * spk;
          if (k0 + k < kend) v.x = src[0];
          if (k0 + k + 1 < kend) v.y = src[spk];
        }
        uint32_t hi, lo;
        ln_split(hi, lo, v);
        *(uint32_t*)(p_hi + i * LN_LD + k) = hi;
        *(uint32_t*)(p_lo + i * LN_LD + k) = lo;
        a += istep;
        o += ostep;
        if (a >= inner) a -= inner, o++;
      }
    }
    __syncthreads();
#pragma unroll
    for (int s = 0; s < LN_BK / 16; s++) {
      FragA ah, al;
#pragma unroll
      for (int i = 0; i < 4; i++) ln_split(ah.x[i], al.x[i], xv[s][i]);
#pragma unroll
      for (int jp = 0; jp < LN_BR / 16; jp++) {
        if (jp < pairs)
          mma_split_pair<split>(acc[2 * jp], acc[2 * jp + 1], ah, al, p_hi + jp * 16 * LN_LD + 16 * s,
                                p_lo + jp * 16 * LN_LD + 16 * s, LN_LD, lane);
      }
    }
  }

  // Accumulator element i of n-tile j: token n0 + g (+8 for i >= 2), row
  // r0 + 8j + 2t + (i & 1) of C.
#pragma unroll
  for (int j = 0; j < LN_BR / 8; j++) {
#pragma unroll
    for (int i = 0; i < 4; i++) {
      int n = n0 + frag_c_row(lane, i), r = r0 + 8 * j + frag_c_col(lane, i);
      if (n < N && r < R)
        lora_out(c, (size_t)r * ldc + n, ws, ((size_t)blockIdx.z * R + r) * N + n, acc[j].x[i], alpha, beta);
    }
  }
  if (ws != nullptr)
    lora_finish(c, ldc, 1, ws, counters, R, N, gridDim.z, r0, blockIdx.x * LN_BT, LN_BR, LN_BT, alpha, beta);
}

extern "C" __global__ void __launch_bounds__(LORA_THREADS)
    lora_narrow(float* c, long long ldc, float* ws, unsigned* counters, const float* q, long long ldq, const float* p,
                long long spi, long long spk, int R, int N, int K, int kchunk, float alpha, float beta) {
  lora_narrow_tile(c, ldc, ws, counters, q, ldq, p, spi, spk, R, N, K, kchunk, alpha, beta);
}

extern "C" __global__ void __launch_bounds__(LORA_THREADS)
    lora_narrow_bf16(float* c, long long ldc, float* ws, unsigned* counters, const uint16_t* q, long long ldq,
                     const float* p, long long spi, long long spk, int R, int N, int K, int kchunk, float alpha,
                     float beta) {
  lora_narrow_tile(c, ldc, ws, counters, q, ldq, p, spi, spk, R, N, K, kchunk, alpha, beta);
}

// lora_grad computes the LoRA products whose sum runs over the tokens,
// the adapters' gradients: C = alpha P Q + beta C with P [R, N] float32
// row-major (ldp elements per row; R small), Q [N, M] row-major (ldq;
// float32, bf16 in lora_grad_bf16) and C(i, m) = c[i*sci + m*scm]:
//
//	dA += dt x         P = dt [r, N]   Q = x  [N, in]   C = dA [r, in]   (sci in, scm 1)
//	dB += s (t dy)^T   P = t  [r, N]   Q = dy [N, out]  C = dB [out, r]  (sci 1, scm r)
//
// Like lora_narrow they read a large Q to write few values, on the tensor
// cores with each operand split into bf16 hi + lo. Here the sum runs along
// Q's columns' length, so Q goes through shared memory: a stage of 32
// tokens x 64 features is loaded with 16-byte loads (coalesced along the
// features), split, stored [token][feature], and read as the mma's A
// operand (features x tokens) with ldmatrix .trans; P's stage, [rank][token],
// as the B operand. The next stage's loads are in flight, in registers,
// while this one's mma run. The grid is (ceil(M/64), ceil(R/64), S): 64
// features (16 per warp), 64 rows of P, one of S chunks of the tokens
// (nchunk long, a multiple of LG_BN); with S > 1 the partial sums go to
// ws [S, R, M] and the tile's last block adds them in order
// (lora_finish). Block 128, static shared memory 19 KiB.
#define LG_BM 64             // features per block, 16 per warp
#define LG_BR 64             // rows of P per block
#define LG_BN 32             // tokens per stage
#define LG_LDQ (LG_BM + 8)   // bf16 per shared row of the Q tile: 144 bytes (ldmatrix rows in 32 distinct banks)
#define LG_LDP (LG_BN + 8)   // bf16 per shared row of the P tile: 80 bytes (likewise)

// lg_ld4 is a load of four elements at p: 16 bytes of float32, or 8 of
// bf16 (p aligned to its size).
__device__ __forceinline__ float4 lg_ld4(const float* p) {
#ifndef __CUDACC__
  if ((uintptr_t)p % 16 != 0) emu::fail("lora_grad: a 16-byte load from an address that is not 16-byte aligned");
#endif
  return *(const float4*)p;
}

__device__ __forceinline__ uint2 lg_ld4(const uint16_t* p) {
#ifndef __CUDACC__
  if ((uintptr_t)p % 8 != 0) emu::fail("lora_grad: an 8-byte load from an address that is not 8-byte aligned");
#endif
  return *(const uint2*)p;
}

// lg_load4 returns base[row, col..col+3] (ld elements per row), zero past
// rowEnd rows or colEnd columns; vec says that the loads of four are
// aligned at columns that are multiples of 4.
__device__ __forceinline__ float4 lg_load4(const float* base, long long ld, int row, int rowEnd, int col, int colEnd,
                                           bool vec) {
  float4 v = {0.0f, 0.0f, 0.0f, 0.0f};
  if (row < rowEnd) {
    const float* r = base + (size_t)row * ld + col;
    if (vec && col + 3 < colEnd) {
      v = lg_ld4(r);
    } else {
      if (col < colEnd) v.x = r[0];
      if (col + 1 < colEnd) v.y = r[1];
      if (col + 2 < colEnd) v.z = r[2];
      if (col + 3 < colEnd) v.w = r[3];
    }
  }
  return v;
}

__device__ __forceinline__ uint2 lg_load4(const uint16_t* base, long long ld, int row, int rowEnd, int col,
                                          int colEnd, bool vec) {
  uint2 v = {0u, 0u};
  if (row < rowEnd) {
    const uint16_t* r = base + (size_t)row * ld + col;
    if (vec && col + 3 < colEnd) {
      v = lg_ld4(r);
    } else {
      if (col < colEnd) v.x = r[0];
      if (col + 1 < colEnd) v.x |= (uint32_t)r[1] << 16;
      if (col + 2 < colEnd) v.y = r[2];
      if (col + 3 < colEnd) v.y |= (uint32_t)r[3] << 16;
    }
  }
  return v;
}

// lg_store4 stores v's four values split, as bf16 hi at hi and lo at lo
// (4-byte aligned); four bf16 are their own hi (lo is not stored: the
// kernel does not read it).
__device__ __forceinline__ void lg_store4(uint16_t* hi, uint16_t* lo, float4 v) {
  uint32_t h0 = pack_bf16_rn(v.x, v.y), h1 = pack_bf16_rn(v.z, v.w);
  uint32_t* h = (uint32_t*)hi;
  uint32_t* l = (uint32_t*)lo;
  h[0] = h0;
  h[1] = h1;
  l[0] = pack_bf16_rn(v.x - bf16_to_f32((uint16_t)h0), v.y - bf16_to_f32((uint16_t)(h0 >> 16)));
  l[1] = pack_bf16_rn(v.z - bf16_to_f32((uint16_t)h1), v.w - bf16_to_f32((uint16_t)(h1 >> 16)));
}

__device__ __forceinline__ void lg_store4(uint16_t* hi, uint16_t*, uint2 v) {
  uint32_t* h = (uint32_t*)hi;
  h[0] = v.x;
  h[1] = v.y;
}

// QQuad is what lg_ld4 returns for Q's element type X.
template <class X>
struct QQuad;
template <>
struct QQuad<float> {
  typedef float4 type;
};
template <>
struct QQuad<uint16_t> {
  typedef uint2 type;
};

// lora_grad_tile is lora_grad with Q's elements of type X: float, or bf16
// (uint16_t) for lora_grad_bf16.
template <class X>
__device__ __forceinline__ void lora_grad_tile(float* c, long long sci, long long scm, float* ws, unsigned* counters,
                                               const float* p, long long ldp, const X* q, long long ldq, int R, int M,
                                               int N, int nchunk, float alpha, float beta) {
  constexpr bool split = sizeof(X) == 4;  // float32 Q: hi + lo; bf16 Q: hi alone
  __shared__ __align__(16) uint16_t q_hi[LG_BN * LG_LDQ];
  __shared__ __align__(16) uint16_t q_lo[LG_BN * LG_LDQ];
  __shared__ __align__(16) uint16_t p_hi[LG_BR * LG_LDP];
  __shared__ __align__(16) uint16_t p_lo[LG_BR * LG_LDP];
  int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  int m0 = blockIdx.x * LG_BM, r0 = blockIdx.y * LG_BR;
  int rows = min(LG_BR, R - r0);
  int pairs = (rows + 15) / 16;  // n-tile pairs with a row of P in them (warp-uniform)
  int nbeg = blockIdx.z * nchunk, nend = min(N, nbeg + nchunk);
  bool qvec = (ldq & 3) == 0 && ((uintptr_t)q % (4 * sizeof(X))) == 0;
  bool pvec = (ldp & 3) == 0 && ((uintptr_t)p & 15) == 0;

  FragC acc[LG_BR / 8];
#pragma unroll
  for (int j = 0; j < LG_BR / 8; j++) acc[j].x[0] = acc[j].x[1] = acc[j].x[2] = acc[j].x[3] = 0.0f;

  // A stage is 512 float4 of Q (token e / 16, features 4 (e % 16)) and 512
  // of P (row e / 8, tokens 4 (e % 8)): four of each per thread.
  // Rows of P past pairs * 16 are never read: not loaded. Where the stage
  // is inside Q (or P's tokens inside the chunk), the loads go without a
  // test each (block-uniform).
  typename QQuad<X>::type qv[4];
  float4 pv[4];
  const float* pr = p + (size_t)r0 * ldp;
  auto load = [&](int n0) {
    bool qfull = qvec && n0 + LG_BN <= nend && m0 + LG_BM <= M;
    bool pfull = pvec && n0 + LG_BN <= nend;
#pragma unroll
    for (int j = 0; j < 4; j++) {
      int e = threadIdx.x + LORA_THREADS * j;
      int tok = n0 + e / 16, m = m0 + 4 * (e % 16);
      qv[j] = qfull ? lg_ld4(q + (size_t)tok * ldq + m) : lg_load4(q, ldq, tok, nend, m, M, qvec);
      int i = e / 8, n = n0 + 4 * (e % 8);
      if (i < pairs * 16) pv[j] = pfull && i < rows ? lg_ld4(pr + (size_t)i * ldp + n) : lg_load4(pr, ldp, i, rows, n, nend, pvec);
    }
  };
  load(nbeg);
  for (int n0 = nbeg; n0 < nend; n0 += LG_BN) {
    __syncthreads();  // the previous stage's tiles are read
#pragma unroll
    for (int j = 0; j < 4; j++) {
      int e = threadIdx.x + LORA_THREADS * j;
      lg_store4(q_hi + (e / 16) * LG_LDQ + 4 * (e % 16), q_lo + (e / 16) * LG_LDQ + 4 * (e % 16), qv[j]);
      if (e / 8 < pairs * 16) lg_store4(p_hi + (e / 8) * LG_LDP + 4 * (e % 8), p_lo + (e / 8) * LG_LDP + 4 * (e % 8), pv[j]);
    }
    __syncthreads();
    if (n0 + LG_BN < nend) load(n0 + LG_BN);  // in flight while this stage computes
#pragma unroll
    for (int s = 0; s < LG_BN / 16; s++) {
      FragA ah, al;
      ldmatrix_frag_a_trans(ah, q_hi + 16 * s * LG_LDQ + 16 * warp, LG_LDQ, lane);
      if (split) ldmatrix_frag_a_trans(al, q_lo + 16 * s * LG_LDQ + 16 * warp, LG_LDQ, lane);
#pragma unroll
      for (int jp = 0; jp < LG_BR / 16; jp++) {
        if (jp < pairs)
          mma_split_pair<split>(acc[2 * jp], acc[2 * jp + 1], ah, al, p_hi + jp * 16 * LG_LDP + 16 * s,
                                p_lo + jp * 16 * LG_LDP + 16 * s, LG_LDP, lane);
      }
    }
  }

  // Accumulator element i of n-tile j: feature m0 + 16 warp + g (+8 for
  // i >= 2), row r0 + 8j + 2t + (i & 1) of P.
#pragma unroll
  for (int j = 0; j < LG_BR / 8; j++) {
#pragma unroll
    for (int i = 0; i < 4; i++) {
      int m = m0 + 16 * warp + frag_c_row(lane, i), r = r0 + 8 * j + frag_c_col(lane, i);
      if (m < M && r < R)
        lora_out(c, (size_t)r * sci + (size_t)m * scm, ws, ((size_t)blockIdx.z * R + r) * M + m, acc[j].x[i], alpha,
                 beta);
    }
  }
  if (ws != nullptr) lora_finish(c, sci, scm, ws, counters, R, M, gridDim.z, r0, m0, LG_BR, LG_BM, alpha, beta);
}

extern "C" __global__ void __launch_bounds__(LORA_THREADS, 3)
    lora_grad(float* c, long long sci, long long scm, float* ws, unsigned* counters, const float* p, long long ldp,
              const float* q, long long ldq, int R, int M, int N, int nchunk, float alpha, float beta) {
  lora_grad_tile(c, sci, scm, ws, counters, p, ldp, q, ldq, R, M, N, nchunk, alpha, beta);
}

extern "C" __global__ void __launch_bounds__(LORA_THREADS, 3)
    lora_grad_bf16(float* c, long long sci, long long scm, float* ws, unsigned* counters, const float* p,
                   long long ldp, const uint16_t* q, long long ldq, int R, int M, int N, int nchunk, float alpha,
                   float beta) {
  lora_grad_tile(c, sci, scm, ws, counters, p, ldp, q, ldq, R, M, N, nchunk, alpha, beta);
}

// lora_expand computes the two LoRA products whose sum runs over the rank:
// C [N, M] = alpha P^T W + beta C with P [R, N] float32 row-major (ldp
// elements per row), W(i, m) = w[i*swi + m*swm] and C row-major (ldc):
//
//	forward   y  = s t^T B^T   P = t  [r, N]   W(i, m) = B[m, i] (B [out, r]: swi 1, swm r)
//	backward  dx += dt^T A     P = dt [r, N]   W = A [r, in] (swi in, swm 1)
//
// They write an [N, M] float32 matrix from a sum of R terms each, so they
// are bound by the write (and the read of C with beta), as long as the
// arithmetic keeps up: on the tensor cores with hi + lo as the other
// kernels of this file. A block computes 64 tokens x 64 columns: per stage
// of 16 ranks it splits P's [16 ranks][64 tokens] and W's [64 columns][16
// ranks] into shared memory; warp w takes tokens 16w..16w+15 against the
// 64 columns (P^T's A fragment read with ldmatrix .trans, W's B fragments
// without), eight n-tiles. Each lane then writes two adjacent floats per
// row (a quad of lanes covers 32 contiguous bytes). Grid (ceil(M/64),
// ceil(N/64)), block 128, static shared memory 10.5 KiB.
#define LE_BN 64            // tokens per block, 16 per warp
#define LE_BM 64            // columns per block
#define LE_BR 16            // ranks per stage: a rank of 16 in one, with no zeros staged or multiplied
#define LE_LDP (LE_BN + 8)  // bf16 per shared row of the P tile [rank][token]: 144 bytes
#define LE_LDW (LE_BR + 8)  // bf16 per shared row of the W tile [column][rank]: 48 bytes (12 words: ldmatrix's 8 rows in 32 distinct banks)

extern "C" __global__ void __launch_bounds__(LORA_THREADS)
    lora_expand(float* c, long long ldc, const float* p, long long ldp, const float* w, long long swi, long long swm,
                int R, int N, int M, float alpha, float beta) {
  __shared__ __align__(16) uint16_t p_hi[LE_BR * LE_LDP];
  __shared__ __align__(16) uint16_t p_lo[LE_BR * LE_LDP];
  __shared__ __align__(16) uint16_t w_hi[LE_BM * LE_LDW];
  __shared__ __align__(16) uint16_t w_lo[LE_BM * LE_LDW];
  int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  int m0 = blockIdx.x * LE_BM, n0 = blockIdx.y * LE_BN;

  // Whether P's pairs of tokens and W's pairs of ranks (swi 1) are aligned
  // 8-byte loads (n0 and r0 are even).
  bool pvec = (ldp & 1) == 0 && ((uintptr_t)p & 7) == 0;
  bool wvec = swi == 1 && (swm & 1) == 0 && ((uintptr_t)w & 7) == 0;

  FragC acc[LE_BM / 8];
#pragma unroll
  for (int j = 0; j < LE_BM / 8; j++) acc[j].x[0] = acc[j].x[1] = acc[j].x[2] = acc[j].x[3] = 0.0f;

  for (int r0 = 0; r0 < R; r0 += LE_BR) {
    __syncthreads();  // the previous stage's tiles are read
    // P: rank e / 64, token e % 64 (along P's rows: coalesced). W: along
    // whichever of its strides is 1. Zero past R, N and M.
    // Two elements at a time, split with one conversion per pair (in
    // integer arithmetic an element took about 57 instructions: more than
    // the output's own store). P: rank e / 32, tokens 2 (e % 32) and + 1
    // (along P's rows: coalesced). W: ranks i and i + 1 of column m, m
    // running along W's unit stride where that is m's (dx: A [r, in]),
    // else along the ranks (y: B [out, r]). Zero past R, N and M.
    for (int e = threadIdx.x; e < LE_BR * LE_BN / 2; e += LORA_THREADS) {
      int i = e / (LE_BN / 2), n = 2 * (e % (LE_BN / 2));
      float2 v = make_float2(0.0f, 0.0f);
      if (r0 + i < R) {
        const float* src = p + (size_t)(r0 + i) * ldp + n0 + n;
        if (pvec && n0 + n + 1 < N) {
          v = ln_ld2(src);
        } else {
          if (n0 + n < N) v.x = src[0];
          if (n0 + n + 1 < N) v.y = src[1];
        }
      }
      uint32_t hi, lo;
      ln_split(hi, lo, v);
      *(uint32_t*)(p_hi + i * LE_LDP + n) = hi;
      *(uint32_t*)(p_lo + i * LE_LDP + n) = lo;
    }
    for (int e = threadIdx.x; e < LE_BM * LE_BR / 2; e += LORA_THREADS) {
      int i, m;
      if (swm == 1) {
        i = 2 * (e / LE_BM);
        m = e % LE_BM;
      } else {
        i = 2 * (e % (LE_BR / 2));
        m = e / (LE_BR / 2);
      }
      float2 v = make_float2(0.0f, 0.0f);
      if (m0 + m < M) {
        const float* src = w + (size_t)(r0 + i) * swi + (size_t)(m0 + m) * swm;
        if (wvec && r0 + i + 1 < R) {
          v = ln_ld2(src);
        } else {
          if (r0 + i < R) v.x = src[0];
          if (r0 + i + 1 < R) v.y = src[swi];
        }
      }
      uint32_t hi, lo;
      ln_split(hi, lo, v);
      *(uint32_t*)(w_hi + m * LE_LDW + i) = hi;
      *(uint32_t*)(w_lo + m * LE_LDW + i) = lo;
    }
    __syncthreads();
#pragma unroll
    for (int s = 0; s < LE_BR / 16; s++) {
      FragA ah, al;
      ldmatrix_frag_a_trans(ah, p_hi + 16 * s * LE_LDP + 16 * warp, LE_LDP, lane);
      ldmatrix_frag_a_trans(al, p_lo + 16 * s * LE_LDP + 16 * warp, LE_LDP, lane);
#pragma unroll
      for (int jp = 0; jp < LE_BM / 16; jp++) {
        mma_split_pair(acc[2 * jp], acc[2 * jp + 1], ah, al, w_hi + jp * 16 * LE_LDW + 16 * s,
                       w_lo + jp * 16 * LE_LDW + 16 * s, LE_LDW, lane);
      }
    }
  }

  // Accumulator elements 0-1 (2-3) of n-tile j: token n0 + 16 warp + g
  // (+8), columns m0 + 8j + 2t and + 1.
  bool vec = (ldc & 1) == 0 && ((uintptr_t)c & 7) == 0;
#pragma unroll
  for (int j = 0; j < LE_BM / 8; j++) {
#pragma unroll
    for (int h = 0; h < 2; h++) {
      int n = n0 + 16 * warp + frag_c_row(lane, 2 * h), m = m0 + 8 * j + frag_c_col(lane, 0);
      if (n >= N) continue;
      float* out = c + (size_t)n * ldc + m;
      float v0 = alpha * acc[j].x[2 * h], v1 = alpha * acc[j].x[2 * h + 1];
      if (vec && m + 1 < M) {
        if (beta != 0.0f) {
          float2 old = ln_ld2(out);
          v0 += beta * old.x;
          v1 += beta * old.y;
        }
        *(float2*)out = make_float2(v0, v1);
      } else {
        if (m < M) out[0] = beta != 0.0f ? v0 + beta * out[0] : v0;
        if (m + 1 < M) out[1] = beta != 0.0f ? v1 + beta * out[1] : v1;
      }
    }
  }
}
