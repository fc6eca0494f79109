// attention_tc.cu: causal GQA attention on the bf16 tensor cores, the
// FlashAttention-2 way, for bf16 q, k, v, out and head dimensions 64, 96
// and 128: the fast path of tensor.Backend.Attention (cgo/ops.go picks it;
// attention.cu's float32 kernels stay the reference and do every other
// case).
//
// Forward: a block of 4 warps takes 64 query rows of one head (16 rows per
// warp) and loops over key tiles of 64 from the first key any of its rows
// sees to the diagonal. Per tile, each warp computes its 16x64 scores
// S = Q K^T with mma m16n8k16 (bf16 operands, float32 accumulators),
// updates the running max and sum of its rows in registers (online
// softmax), rounds P to bf16 and adds P V into its 16xD float32 output
// accumulators, P going from the scores' accumulator registers straight
// into the A fragments of the second product. K and V tiles are double
// buffered with cp.async: the next tile loads while this one is computed.
// Tiles wholly above the diagonal or before the rows' documents are never
// loaded; masks are applied only to the tiles that need them.
//
// Backward (FlashAttention-2, deterministic: no atomics), after
// attention.cu's attention_backward_delta: attention_tc_backward_dq takes
// 64 query rows per block and loops over key tiles, recomputing P from q,
// k and lse (dS = P (dO V^T - delta), dq = scale dS K);
// attention_tc_backward_dkdv takes 64 keys and one query head, or all of
// a kv head's, per block (16 keys per warp) and loops over those heads'
// query tiles of 32 from the key tile on (dV += P^T dO, dK += dS^T Q,
// dk = scale dK). Where dS fits a scratch tensor (cgo/ops.go's
// attentionDSMaxBytes; 132 MiB at Llama's 32 heads and T = 2048), the
// dk/dv kernel runs first and writes it in bf16, and
// attention_tc_backward_dq_ds computes dq = scale dS K from it: one product
// per tile, where attention_tc_backward_dq needs three (S and dP again,
// then dS K). FlashAttention-2 adds dq up in the dk/dv kernel with float32
// atomics instead, in no fixed order.
//
// The dk/dv kernel takes one query head per block when a kv head's would
// make few blocks: each query head's dK and dV go out in float32 and
// attention_dkdv_sum adds up the group's in a fixed order. (A kv head's
// blocks, at T = 2048 with Llama's 32/8 heads, gave the first key tile's
// blocks 256 steps where the average block had 132: with all 256 blocks
// on the 264 slots of an H200 at once, the launch took as long as those
// blocks, twice its balanced time. Measured there: 0.60 ms per layer,
// against 0.28 for the dq kernel's 3/4 as many products. With four blocks
// per SM or more, list scheduling evens the work out, and the group's
// blocks need no scratch.) Every product is an mma with
// float32 accumulators; P and dS are rounded to bf16 as operands.
//
// Shared memory rows are D + 8 bf16 long: 16 bytes of padding make the
// eight 16-byte rows an ldmatrix reads at once fall in distinct banks
// (row strides of 144, 208 and 272 bytes are 4, 20 and 4 words mod 32).
//
// The grids are (heads, B, tiles), the tiles on z: GPUs start
// blocks, in practice, in the order of their linear index (x fastest), so
// every head's longest tile starts before any shorter one, and the
// launch's tail is short tiles only. Query tiles run last to first (the
// last hold the most keys); key tiles first to last (the first see the
// most queries).
#include "mma.cuh"

#define TC_THREADS 128      // 4 warps
#define TC_BQ 64            // query rows per block, 16 per warp
#define TC_BK 64            // keys per tile
#define TC_BQB 32           // query rows per tile of attention_tc_backward_dkdv
#define TC_PAD 8            // bf16 of padding per shared-memory row
#define TC_LOG2E 1.4426950408889634f
#define TC_LN2 0.6931471805599453f

// Sixteen bytes: one cp.async or one vector store.
struct __align__(16) tc_chunk {
  uint32_t w[4];
};

// tc_doc_start_at is where the document of token t of row b begins (as
// attention.cu's doc_start_at): 0 without documents or past T, else
// doc_start[b, t] clamped to [0, t].
__device__ __forceinline__ int tc_doc_start_at(const int* doc_start, int b, int T, int t) {
  if (doc_start == nullptr || t >= T) return 0;
  return min(max(doc_start[(size_t)b * T + t], 0), t);
}

// tc_load_rows starts the cp.async copies of rows t0..t0+rows-1 of head h
// of x [B, T, heads, D] bf16 into s [rows][D + TC_PAD]; rows at or past T
// are zero filled. The caller commits.
//
// Thread i of the block copies 16-byte chunks i, i + TC_THREADS, ... of
// the rows, chunk j being column (j % (D/8)) * 8 of row j / (D/8). The
// row and column step from one chunk to the next without a division, and
// the head's address is computed once: this loop runs for every tile,
// and with a division and three 64-bit products per copy its address
// arithmetic took about 27 instructions a copy, more than the tile's
// loads of fragments (SASS of attention_tc_forward_d128, sm_90).
template <int D>
__device__ __forceinline__ void tc_load_rows(uint16_t* s, const uint16_t* x, int rows, int t0, int T, int heads,
                                             int h, int b) {
  constexpr int chunks = D / 8;  // 16-byte chunks per row
  constexpr int rstep = TC_THREADS / chunks, cstep = TC_THREADS % chunks;
  const uint16_t* head = x + ((size_t)b * T * heads + h) * D;
  unsigned tstride = (unsigned)(heads * D);  // elements from one token to the next
  int r = threadIdx.x / chunks, c = threadIdx.x % chunks;
  while (r < rows) {
    int t = t0 + r;
    cp_async_16(s + r * (D + TC_PAD) + c * 8, head + (size_t)(unsigned)min(t, T - 1) * tstride + c * 8, t < T);
    r += rstep;
    if (cstep != 0) {
      c += cstep;
      if (c >= chunks) c -= chunks, r++;
    }
  }
}

// tc_key_tiles finds the key tiles of the query block at q0: its rows see
// keys from the smallest document start among them to their last row, so
// ntiles tiles of 64 from kbegin; all of them see every key from klate
// (the largest start) to q0, so a tile from klate on that ends by q0 + 1
// needs no mask.
__device__ __forceinline__ void tc_key_tiles(const int* doc_start, int b, int T, int q0, int& kbegin, int& ntiles,
                                             int& klate) {
  int kfirst = q0;
  klate = 0;
  for (int i = 0; i < TC_BQ && q0 + i < T; i++) {
    int st = tc_doc_start_at(doc_start, b, T, q0 + i);
    kfirst = min(kfirst, st);
    klate = max(klate, st);
  }
  kbegin = kfirst / TC_BK * TC_BK;
  ntiles = (min(T, q0 + TC_BQ) - kbegin + TC_BK - 1) / TC_BK;
}

// tc_scores_step adds depth step kk (columns kk*16..kk*16+15) of A B^T to
// s for the warp: fa is A's fragment of that step, B the N rows at b (row
// stride D + TC_PAD); s[j] holds columns 8j..8j+7.
template <int D, int N>
__device__ __forceinline__ void tc_scores_step(FragC (&s)[N / 8], const FragA& fa, const uint16_t* b, int kk,
                                               int lane) {
  constexpr int LD = D + TC_PAD;
#pragma unroll
  for (int nj = 0; nj < N / 16; nj++) {
    // B rows nj*16 + 0-7 at columns kk*16 and +8, then rows + 8-15.
    uint32_t r[4];
    ldmatrix_x4(r, b + (nj * 16 + (lane & 7) + (lane >> 4) * 8) * LD + kk * 16 + ((lane >> 3) & 1) * 8);
    FragB b0 = {{r[0], r[1]}}, b1 = {{r[2], r[3]}};
    mma_bf16_m16n8k16(s[2 * nj], fa, b0);
    mma_bf16_m16n8k16(s[2 * nj + 1], fa, b1);
  }
}

// tc_load_a loads the warp's A fragments of the 16 rows of D bf16 at a
// (row stride D + TC_PAD), one per depth step of 16.
template <int D>
__device__ __forceinline__ void tc_load_a(FragA (&fa)[D / 16], const uint16_t* a, int lane) {
  constexpr int LD = D + TC_PAD;
#pragma unroll
  for (int kk = 0; kk < D / 16; kk++) {
    // Matrices: rows 0-7 and 8-15 at columns kk*16, then at kk*16 + 8.
    ldmatrix_x4(fa[kk].x, a + (lane & 15) * LD + kk * 16 + (lane >> 4) * 8);
  }
}

// tc_scores sets s = A B^T for the warp: A the 16 rows of D bf16 at a,
// loaded a depth step at a time (the backward kernels, short of
// registers), B the N rows at b.
template <int D, int N>
__device__ __forceinline__ void tc_scores(FragC (&s)[N / 8], const uint16_t* a, const uint16_t* b, int lane) {
  constexpr int LD = D + TC_PAD;
#pragma unroll
  for (int j = 0; j < N / 8; j++) s[j].x[0] = s[j].x[1] = s[j].x[2] = s[j].x[3] = 0.0f;
#pragma unroll
  for (int kk = 0; kk < D / 16; kk++) {
    FragA fa;
    ldmatrix_x4(fa.x, a + (lane & 15) * LD + kk * 16 + (lane >> 4) * 8);
    tc_scores_step<D, N>(s, fa, b, kk, lane);
  }
}

// tc_scores_a is tc_scores with A's fragments already in registers
// (tc_load_a): the forward kernel's Q, the same for every key tile.
template <int D, int N>
__device__ __forceinline__ void tc_scores_a(FragC (&s)[N / 8], const FragA (&fa)[D / 16], const uint16_t* b, int lane) {
#pragma unroll
  for (int j = 0; j < N / 8; j++) s[j].x[0] = s[j].x[1] = s[j].x[2] = s[j].x[3] = 0.0f;
#pragma unroll
  for (int kk = 0; kk < D / 16; kk++) tc_scores_step<D, N>(s, fa[kk], b, kk, lane);
}

// tc_accumulate16 adds A B to acc for the warp: A the 16 x 16 fragment fa,
// B the 16 rows of D bf16 from row r0 at b (row stride D + TC_PAD).
template <int D>
__device__ __forceinline__ void tc_accumulate16(FragC (&acc)[D / 8], const FragA& fa, const uint16_t* b, int r0,
                                                int lane) {
  constexpr int LD = D + TC_PAD;
#pragma unroll
  for (int dj = 0; dj < D / 16; dj++) {
    // Transposed: B rows r0 + 0-7 and 8-15 at columns dj*16, then +8.
    uint32_t r[4];
    ldmatrix_x4_trans(r, b + (r0 + (lane & 7) + ((lane >> 3) & 1) * 8) * LD + dj * 16 + (lane >> 4) * 8);
    FragB b0 = {{r[0], r[1]}}, b1 = {{r[2], r[3]}};
    mma_bf16_m16n8k16(acc[2 * dj], fa, b0);
    mma_bf16_m16n8k16(acc[2 * dj + 1], fa, b1);
  }
}

// tc_accumulate adds P B to acc for the warp: P is 16 x N in the
// accumulator layout of tc_scores (rounded to bf16 here), B the N rows of
// D bf16 at b. The accumulators of tiles 2kk and 2kk+1 are the A fragment
// of columns kk*16..kk*16+15 (rows g and g+8, columns 2tg, 2tg+1 and 2tg+8,
// 2tg+9), so P never goes through shared memory.
template <int D, int N>
__device__ __forceinline__ void tc_accumulate(FragC (&acc)[D / 8], const FragC (&p)[N / 8], const uint16_t* b,
                                              int lane) {
#pragma unroll
  for (int kk = 0; kk < N / 16; kk++) {
    FragA fa;
    fa.x[0] = pack_bf16_rn(p[2 * kk].x[0], p[2 * kk].x[1]);          // row g,     columns 2tg, 2tg+1
    fa.x[1] = pack_bf16_rn(p[2 * kk].x[2], p[2 * kk].x[3]);          // row g + 8
    fa.x[2] = pack_bf16_rn(p[2 * kk + 1].x[0], p[2 * kk + 1].x[1]);  // row g,     columns 2tg+8, 2tg+9
    fa.x[3] = pack_bf16_rn(p[2 * kk + 1].x[2], p[2 * kk + 1].x[3]);  // row g + 8
    tc_accumulate16<D>(acc, fa, b, kk * 16, lane);
  }
}

// tc_stage_rows writes the warp's 16 x D accumulators, times mul, as bf16
// into the 16 rows at s (row stride D + TC_PAD).
template <int D>
__device__ __forceinline__ void tc_stage_rows(uint16_t* s, const FragC (&acc)[D / 8], float mul0, float mul1,
                                              int lane) {
  constexpr int LD = D + TC_PAD;
  int g = lane >> 2, tg = lane & 3;
#pragma unroll
  for (int j = 0; j < D / 8; j++) {
    int col = 8 * j + 2 * tg;
    *(uint32_t*)(s + g * LD + col) = pack_bf16(acc[j].x[0] * mul0, acc[j].x[1] * mul0);
    *(uint32_t*)(s + (g + 8) * LD + col) = pack_bf16(acc[j].x[2] * mul1, acc[j].x[3] * mul1);
  }
}

// tc_store_rows writes rows t0..t0+rows-1 (those < T) of head h of
// x [B, T, heads, D] bf16 from s [rows][D + TC_PAD] in 16-byte stores,
// thread i chunks i, i + TC_THREADS, ... as tc_load_rows copies them.
template <int D>
__device__ __forceinline__ void tc_store_rows(uint16_t* x, const uint16_t* s, int rows, int t0, int T, int heads,
                                              int h, int b) {
  constexpr int chunks = D / 8;
  constexpr int rstep = TC_THREADS / chunks, cstep = TC_THREADS % chunks;
  uint16_t* head = x + ((size_t)b * T * heads + h) * D;
  unsigned tstride = (unsigned)(heads * D);
  int r = threadIdx.x / chunks, c = threadIdx.x % chunks;
  while (r < rows && t0 + r < T) {
    *(tc_chunk*)(head + (size_t)(unsigned)(t0 + r) * tstride + c * 8) = *(const tc_chunk*)(s + r * (D + TC_PAD) + c * 8);
    r += rstep;
    if (cstep != 0) {
      c += cstep;
      if (c >= chunks) c -= chunks, r++;
    }
  }
}

// tc_queries_until is the first query row after klast whose document
// starts after klast (T if none): no row from there on sees a key <= klast
// (attention.cu's queries_until; doc_start non-decreasing within a row).
__device__ __forceinline__ int tc_queries_until(const int* doc_start, int b, int T, int klast) {
  if (doc_start == nullptr) return T;
  int lo = klast + 1, hi = T;
  while (lo < hi) {
    int mid = (lo + hi) / 2;
    if (tc_doc_start_at(doc_start, b, T, mid) > klast) {
      hi = mid;
    } else {
      lo = mid + 1;
    }
  }
  return lo;
}

// tc_ds_tile is where the dS^T tile of keys k0..k0+63 and queries
// q0/64*64.. (k0 <= q0: the causal half) of head h of row b begins in the
// dk/dv kernel's scratch: [B, Hq, tiles, 64, 64] bf16, key rows of 64
// queries, the tiles of a head in the order (query tile qt, key tile
// kt <= qt), tiles = n (n + 1) / 2 for n = ceil(T/64).
__device__ __forceinline__ uint16_t* tc_ds_tile(const uint16_t* ds, int b, int h, int T, int Hq, int k0, int q0) {
  size_t n = (T + TC_BK - 1) / TC_BK, qt = q0 / TC_BQ, kt = k0 / TC_BK;
  size_t tile = ((size_t)b * Hq + h) * (n * (n + 1) / 2) + qt * (qt + 1) / 2 + kt;
  return (uint16_t*)ds + tile * (TC_BK * TC_BQ);
}

// attention_tc_forward matches tensor.CPU.Attention for bf16 tensors (with
// P rounded to bf16 before P V, as FlashAttention does): out = softmax(scale
// q k^T, causal, within documents) v, lse = log-sum-exp of each row's scaled
// scores, F32 [B, Hq, T] like attention_forward's. Grid (Hq, B,
// ceil(T/64)), block 128, dynamic shared memory (64 + 4*64) (D + 8) * 2 bytes
// (kernels.go). Every pointer 16-byte aligned (the caller checks).
template <int D>
__device__ __forceinline__ void attention_tc_forward(uint16_t* out, float* lse, const uint16_t* q, const uint16_t* k,
                                                     const uint16_t* v, const int* doc_start, int B, int T, int Hq,
                                                     int Hkv, float scale) {
  constexpr int LD = D + TC_PAD;
  DYNAMIC_SHARED(uint16_t, smem);
  uint16_t* Qs = smem;                // [TC_BQ][LD]
  uint16_t* Ks = Qs + TC_BQ * LD;     // [2][TC_BK][LD]
  uint16_t* Vs = Ks + 2 * TC_BK * LD;  // [2][TC_BK][LD]

  int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, tg = lane & 3;
  int q0 = (gridDim.z - 1 - blockIdx.z) * TC_BQ, h = blockIdx.x, b = blockIdx.y, kvh = h / (Hq / Hkv);

  // This thread's two rows (g and g + 8 of its warp's 16) and where their
  // documents start.
  int row[2] = {q0 + warp * 16 + g, q0 + warp * 16 + g + 8};
  int rstart[2] = {tc_doc_start_at(doc_start, b, T, row[0]), tc_doc_start_at(doc_start, b, T, row[1])};

  int kbegin, ntiles, klate;
  tc_key_tiles(doc_start, b, T, q0, kbegin, ntiles, klate);

  tc_load_rows<D>(Qs, q, TC_BQ, q0, T, Hq, h, b);
  tc_load_rows<D>(Ks, k, TC_BK, kbegin, T, Hkv, kvh, b);
  tc_load_rows<D>(Vs, v, TC_BK, kbegin, T, Hkv, kvh, b);
  cp_async_commit();

  // Scores in the log2 domain: exp2(x - m) with x = scale log2(e) q.k.
  float scale2 = scale * TC_LOG2E;
  float m_run[2] = {-INFINITY, -INFINITY}, l_part[2] = {0.0f, 0.0f};
  FragC o[D / 8];
#pragma unroll
  for (int j = 0; j < D / 8; j++) o[j].x[0] = o[j].x[1] = o[j].x[2] = o[j].x[3] = 0.0f;

  // This warp's 16 rows of Q as A fragments, kept in registers for every
  // tile (an eighth of the tile's shared-memory reads otherwise); their
  // copies are the first group, done once the first wait returns.
  FragA qf[D / 16];
  for (int it = 0; it < ntiles; it++) {
    int k0 = kbegin + it * TC_BK, buf = it & 1;
    // Start the next tile's copies into the other buffer (freed by the
    // barrier at the end of the previous iteration), then wait for this
    // one's.
    if (it + 1 < ntiles) {
      tc_load_rows<D>(Ks + (buf ^ 1) * TC_BK * LD, k, TC_BK, k0 + TC_BK, T, Hkv, kvh, b);
      tc_load_rows<D>(Vs + (buf ^ 1) * TC_BK * LD, v, TC_BK, k0 + TC_BK, T, Hkv, kvh, b);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const uint16_t* Kt = Ks + buf * TC_BK * LD;
    const uint16_t* Vt = Vs + buf * TC_BK * LD;
    if (it == 0) tc_load_a<D>(qf, Qs + warp * 16 * LD, lane);

    // S = Q K^T: 16 rows x 64 keys per warp, 8 accumulator tiles of 16x8.
    FragC s[TC_BK / 8];
    tc_scores_a<D, TC_BK>(s, qf, Kt, lane);

    // Scale, mask where the tile may hold keys a row does not see (past
    // the row, or before its document), and find each row's tile max.
    // Element i of tile j is row row[i >> 1], key k0 + 8j + 2tg + (i & 1).
    bool masked = k0 < klate || k0 + TC_BK > q0 + 1;
    float mt[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int j = 0; j < TC_BK / 8; j++) {
#pragma unroll
      for (int i = 0; i < 4; i++) {
        float x = s[j].x[i] * scale2;
        if (masked) {
          int key = k0 + 8 * j + 2 * tg + (i & 1), r = i >> 1;
          // rstart <= key <= row as one unsigned comparison.
          if ((unsigned)(key - rstart[r]) > (unsigned)(row[r] - rstart[r])) x = -INFINITY;
        }
        s[j].x[i] = x;
        mt[i >> 1] = fmaxf(mt[i >> 1], x);
      }
    }
    // The four lanes of a quad hold a row between them.
    float corr[2], m_ref[2];
#pragma unroll
    for (int r = 0; r < 2; r++) {
      mt[r] = fmaxf(mt[r], __shfl_xor_sync(0xffffffffu, mt[r], 1));
      mt[r] = fmaxf(mt[r], __shfl_xor_sync(0xffffffffu, mt[r], 2));
      // Until a tile holds a key the row sees, its max is -inf and the
      // exponentials take 0 as the reference (exp2(-inf - -inf) is NaN):
      // every one is 0 then, and corr is 0 once, with nothing to rescale.
      float m_new = fmaxf(m_run[r], mt[r]);
      m_ref[r] = m_new == -INFINITY ? 0.0f : m_new;
      corr[r] = exp2_approx(m_run[r] - m_ref[r]);
      m_run[r] = m_new;
      l_part[r] *= corr[r];
    }
#pragma unroll
    for (int j = 0; j < D / 8; j++) {
      o[j].x[0] *= corr[0];
      o[j].x[1] *= corr[0];
      o[j].x[2] *= corr[1];
      o[j].x[3] *= corr[1];
    }

    // P = exp2(x - m) and O += P V.
#pragma unroll
    for (int j = 0; j < TC_BK / 8; j++) {
#pragma unroll
      for (int i = 0; i < 4; i++) {
        s[j].x[i] = exp2_approx(s[j].x[i] - m_ref[i >> 1]);
        l_part[i >> 1] += s[j].x[i];
      }
    }
    tc_accumulate<D, TC_BK>(o, s, Vt, lane);
    __syncthreads();  // every warp is done with this buffer before it is refilled
  }

  // Each row's sum over the quad; out = o / l, lse = (m + log2 l) ln 2.
  float inv[2];
#pragma unroll
  for (int r = 0; r < 2; r++) {
    float l = l_part[r];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    inv[r] = 1.0f / l;
    if (tg == 0 && row[r] < T) lse[((size_t)b * Hq + h) * T + row[r]] = (m_run[r] + log2f(l)) * TC_LN2;
  }
  // The tile goes out through Qs (each warp overwrites only its own rows,
  // which only it read), then in 16-byte stores of whole rows.
  tc_stage_rows<D>(Qs + warp * 16 * LD, o, inv[0], inv[1], lane);
  __syncthreads();
  tc_store_rows<D>(out, Qs, TC_BQ, q0, T, Hq, h, b);
}

// attention_tc_backward_dq matches the dq of tensor.CPU.AttentionBackward
// for bf16 tensors: dq = scale sum_s dS[t, s] k[s], P = exp(scale q k^T -
// lse), dS = P (dout v^T - delta), delta F32 [B, Hq, T] from
// attention_backward_delta. Grid (Hq, B, ceil(T/64)), block 128, dynamic
// shared memory (2*64 + 4*64) (D + 8) * 2 bytes.
template <int D>
__device__ __forceinline__ void attention_tc_backward_dq(uint16_t* dq, const uint16_t* q, const uint16_t* k,
                                                         const uint16_t* v, const int* doc_start, const uint16_t* dout,
                                                         const float* lse, const float* delta, int B, int T, int Hq,
                                                         int Hkv, float scale) {
  constexpr int LD = D + TC_PAD;
  DYNAMIC_SHARED(uint16_t, smem);
  uint16_t* Qs = smem;                 // [TC_BQ][LD]
  uint16_t* dOs = Qs + TC_BQ * LD;     // [TC_BQ][LD]
  uint16_t* Ks = dOs + TC_BQ * LD;     // [2][TC_BK][LD]
  uint16_t* Vs = Ks + 2 * TC_BK * LD;  // [2][TC_BK][LD]

  int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, tg = lane & 3;
  int q0 = (gridDim.z - 1 - blockIdx.z) * TC_BQ, h = blockIdx.x, b = blockIdx.y, kvh = h / (Hq / Hkv);
  int row[2] = {q0 + warp * 16 + g, q0 + warp * 16 + g + 8};
  int rstart[2] = {tc_doc_start_at(doc_start, b, T, row[0]), tc_doc_start_at(doc_start, b, T, row[1])};
  // lse in the log2 domain; +inf past T makes those rows' P 0.
  float lse2[2], delta_r[2];
#pragma unroll
  for (int r = 0; r < 2; r++) {
    size_t stat = ((size_t)b * Hq + h) * T + row[r];
    lse2[r] = row[r] < T ? lse[stat] * TC_LOG2E : INFINITY;
    delta_r[r] = row[r] < T ? delta[stat] : 0.0f;
  }
  int kbegin, ntiles, klate;
  tc_key_tiles(doc_start, b, T, q0, kbegin, ntiles, klate);

  tc_load_rows<D>(Qs, q, TC_BQ, q0, T, Hq, h, b);
  tc_load_rows<D>(dOs, dout, TC_BQ, q0, T, Hq, h, b);
  tc_load_rows<D>(Ks, k, TC_BK, kbegin, T, Hkv, kvh, b);
  tc_load_rows<D>(Vs, v, TC_BK, kbegin, T, Hkv, kvh, b);
  cp_async_commit();

  float scale2 = scale * TC_LOG2E;
  FragC acc[D / 8];
#pragma unroll
  for (int j = 0; j < D / 8; j++) acc[j].x[0] = acc[j].x[1] = acc[j].x[2] = acc[j].x[3] = 0.0f;
  const uint16_t* Qw = Qs + warp * 16 * LD;
  const uint16_t* dOw = dOs + warp * 16 * LD;
  for (int it = 0; it < ntiles; it++) {
    int k0 = kbegin + it * TC_BK, buf = it & 1;
    if (it + 1 < ntiles) {
      tc_load_rows<D>(Ks + (buf ^ 1) * TC_BK * LD, k, TC_BK, k0 + TC_BK, T, Hkv, kvh, b);
      tc_load_rows<D>(Vs + (buf ^ 1) * TC_BK * LD, v, TC_BK, k0 + TC_BK, T, Hkv, kvh, b);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const uint16_t* Kt = Ks + buf * TC_BK * LD;
    const uint16_t* Vt = Vs + buf * TC_BK * LD;

    FragC s[TC_BK / 8], dp[TC_BK / 8];
    tc_scores<D, TC_BK>(s, Qw, Kt, lane);
    tc_scores<D, TC_BK>(dp, dOw, Vt, lane);
    bool masked = k0 < klate || k0 + TC_BK > q0 + 1;
#pragma unroll
    for (int j = 0; j < TC_BK / 8; j++) {
#pragma unroll
      for (int i = 0; i < 4; i++) {
        int r = i >> 1;
        float x = s[j].x[i] * scale2;
        if (masked) {
          int key = k0 + 8 * j + 2 * tg + (i & 1);
          if ((unsigned)(key - rstart[r]) > (unsigned)(row[r] - rstart[r])) x = -INFINITY;
        }
        float p = exp2_approx(x - lse2[r]);
        s[j].x[i] = p * (dp[j].x[i] - delta_r[r]);  // dS
      }
    }
    tc_accumulate<D, TC_BK>(acc, s, Kt, lane);
    __syncthreads();  // every warp is done with this buffer before it is refilled
  }
  // Qs is free (each warp read only its own rows): the tile goes out
  // through it.
  tc_stage_rows<D>(Qs + warp * 16 * LD, acc, scale, scale, lane);
  __syncthreads();
  tc_store_rows<D>(dq, Qs, TC_BQ, q0, T, Hq, h, b);
}

// attention_tc_backward_dkdv matches the dk and dv of
// tensor.CPU.AttentionBackward for bf16 tensors: dk = scale sum dS^T q,
// dv = sum P^T dout, summed over the query heads of the kv group. A block
// takes 64 keys and `heads` query heads of one group, the whole group or
// one head: with the whole group it writes dk and dv, bf16 [B, T, Hkv, D];
// with one head of several it writes that head's dK (without the scale)
// and dV in float32 into dk_part and dv_part [B, T, Hq, D], for
// attention_dkdv_sum. Written, not accumulated. With ds_out not null it
// also writes dS^T there, the bf16 values its dK product reads, for
// attention_tc_backward_dq_ds, for every query tile the block visits
// (pairs no query sees are not all written): ds_out [B, Hq, tiles, 64, 64]
// (tc_ds_tile). Grid (Hq / heads, B,
// ceil(T/64)), block 128, dynamic shared memory (2*64 + 4*32) (D + 8) * 2
// + 2*3*32*4 bytes.
template <int D>
__device__ __forceinline__ void attention_tc_backward_dkdv(uint16_t* dk, uint16_t* dv, float* dk_part, float* dv_part,
                                                           uint16_t* ds_out, const uint16_t* q, const uint16_t* k, const uint16_t* v,
                                                           const int* doc_start, const uint16_t* dout,
                                                           const float* lse, const float* delta, int B, int T, int Hq,
                                                           int Hkv, int heads, float scale) {
  constexpr int LD = D + TC_PAD;
  DYNAMIC_SHARED(uint16_t, smem);
  uint16_t* Ks = smem;                   // [TC_BK][LD]
  uint16_t* Vs = Ks + TC_BK * LD;        // [TC_BK][LD]
  uint16_t* Qs = Vs + TC_BK * LD;        // [2][TC_BQB][LD]
  uint16_t* dOs = Qs + 2 * TC_BQB * LD;  // [2][TC_BQB][LD]
  float* lse_s = (float*)(dOs + 2 * TC_BQB * LD);  // [2][TC_BQB], log2 domain, +inf past T
  float* delta_s = lse_s + 2 * TC_BQB;             // [2][TC_BQB]
  int* qstart_s = (int*)(delta_s + 2 * TC_BQB);    // [2][TC_BQB]

  int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, tg = lane & 3;
  int k0 = blockIdx.z * TC_BK, h0 = blockIdx.x * heads, b = blockIdx.y, kvh = h0 / (Hq / Hkv);
  int key[2] = {k0 + warp * 16 + g, k0 + warp * 16 + g + 8};  // this thread's two key rows

  // The query rows that see any of these keys: from k0 to qend.
  int qend = tc_queries_until(doc_start, b, T, min(k0 + TC_BK, T) - 1);
  int ntiles = (qend - k0 + TC_BQB - 1) / TC_BQB;  // per query head
  int nsteps = ntiles * heads;

  // load_step starts the copies of step st (head, query tile) into buffer
  // st & 1. Its lse, delta and documents' starts, one query row per thread
  // below TC_BQB, are plain loads: load_stats reads them into registers
  // and store_stats writes them, ready for use, into the buffer. The loop
  // loads the next step's at its top and stores them at its end, so that
  // their latency passes under the step's products (stored at once, they
  // held warp 0, and with it the block at the next barrier, for a whole
  // global load's latency every step).
  auto load_step = [&](int st) {
    int h = h0 + st / ntiles, q0 = k0 + (st % ntiles) * TC_BQB, buf = st & 1;
    tc_load_rows<D>(Qs + buf * TC_BQB * LD, q, TC_BQB, q0, T, Hq, h, b);
    tc_load_rows<D>(dOs + buf * TC_BQB * LD, dout, TC_BQB, q0, T, Hq, h, b);
  };
  float lse_next = 0.0f, delta_next = 0.0f;
  int qstart_next = 0;
  auto load_stats = [&](int st) {
    int h = h0 + st / ntiles, t = k0 + (st % ntiles) * TC_BQB + tid;
    if (tid >= TC_BQB || t >= T) return;
    size_t stat = ((size_t)b * Hq + h) * T + t;
    lse_next = lse[stat];
    delta_next = delta[stat];
    if (doc_start != nullptr) qstart_next = doc_start[(size_t)b * T + t];
  };
  auto store_stats = [&](int st) {
    int t = k0 + (st % ntiles) * TC_BQB + tid, buf = st & 1;
    if (tid >= TC_BQB) return;
    // In the log2 domain, +inf past T; the start as tc_doc_start_at gives
    // it (0 past T or without documents, else clamped to [0, t]).
    lse_s[buf * TC_BQB + tid] = t < T ? lse_next * TC_LOG2E : INFINITY;
    delta_s[buf * TC_BQB + tid] = t < T ? delta_next : 0.0f;
    qstart_s[buf * TC_BQB + tid] = t < T ? min(max(qstart_next, 0), t) : 0;
  };
  tc_load_rows<D>(Ks, k, TC_BK, k0, T, Hkv, kvh, b);
  tc_load_rows<D>(Vs, v, TC_BK, k0, T, Hkv, kvh, b);
  if (nsteps > 0) {
    load_step(0);
    load_stats(0);
    store_stats(0);
  }
  cp_async_commit();

  float scale2 = scale * TC_LOG2E;
  FragC dk_acc[D / 8], dv_acc[D / 8];
#pragma unroll
  for (int j = 0; j < D / 8; j++) {
    dk_acc[j].x[0] = dk_acc[j].x[1] = dk_acc[j].x[2] = dk_acc[j].x[3] = 0.0f;
    dv_acc[j].x[0] = dv_acc[j].x[1] = dv_acc[j].x[2] = dv_acc[j].x[3] = 0.0f;
  }
  const uint16_t* Kw = Ks + warp * 16 * LD;
  const uint16_t* Vw = Vs + warp * 16 * LD;
  for (int st = 0; st < nsteps; st++) {
    int q0 = k0 + (st % ntiles) * TC_BQB, buf = st & 1;
    if (st + 1 < nsteps) {
      load_step(st + 1);
      cp_async_commit();
      load_stats(st + 1);
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const uint16_t* Qt = Qs + buf * TC_BQB * LD;
    const uint16_t* dOt = dOs + buf * TC_BQB * LD;
    const float* lse_t = lse_s + buf * TC_BQB;
    const float* delta_t = delta_s + buf * TC_BQB;
    const int* qstart_t = qstart_s + buf * TC_BQB;

    // S^T = K Q^T and dP^T = V dO^T: 16 keys x 32 queries per warp.
    FragC p[TC_BQB / 8], ds[TC_BQB / 8];
    tc_scores<D, TC_BQB>(p, Kw, Qt, lane);
    tc_scores<D, TC_BQB>(ds, Vw, dOt, lane);
    // Masks where a query may not see a key: on the diagonal, or when the
    // tile's last query's document starts after k0.
    int qlast = min(q0 + TC_BQB, T) - 1;
    bool masked = q0 < k0 + TC_BK || qstart_t[qlast - q0] > k0;
#pragma unroll
    for (int j = 0; j < TC_BQB / 8; j++) {
#pragma unroll
      for (int i = 0; i < 4; i++) {
        int c = 8 * j + 2 * tg + (i & 1), kr = key[i >> 1];
        float x = p[j].x[i] * scale2;
        if (masked && (unsigned)(kr - qstart_t[c]) > (unsigned)(q0 + c - qstart_t[c])) x = -INFINITY;
        float pv = exp2_approx(x - lse_t[c]);
        p[j].x[i] = pv;
        ds[j].x[i] = pv * (ds[j].x[i] - delta_t[c]);
      }
    }
    if (ds_out != nullptr) {
      // This warp's 16 keys x 32 queries of dS^T, rounded as the dK
      // product rounds them: a quad writes 16 contiguous bytes of a row.
      uint16_t* at = tc_ds_tile(ds_out, b, h0 + st / ntiles, T, Hq, k0, q0) + (warp * 16 + g) * TC_BQ + (q0 % TC_BQ) +
                     2 * tg;
#pragma unroll
      for (int j = 0; j < TC_BQB / 8; j++) {
        *(uint32_t*)(at + 8 * j) = pack_bf16_rn(ds[j].x[0], ds[j].x[1]);
        *(uint32_t*)(at + 8 * TC_BQ + 8 * j) = pack_bf16_rn(ds[j].x[2], ds[j].x[3]);
      }
    }
    tc_accumulate<D, TC_BQB>(dv_acc, p, dOt, lane);
    tc_accumulate<D, TC_BQB>(dk_acc, ds, Qt, lane);
    // The other buffer was last read in the previous step, before its
    // closing barrier.
    if (st + 1 < nsteps) store_stats(st + 1);
    __syncthreads();  // every warp is done with this buffer before it is refilled
  }
  if (nsteps == 0) {
    // Nothing to compute (no query sees these keys: not reached today, as
    // qend > k0), but the K and V copies must land before the stores
    // below overwrite those rows.
    cp_async_wait<0>();
    __syncthreads();
  }
  if (heads != Hq / Hkv) {
    // Head h0's share in float32: each thread's pairs of columns as
    // 8-byte stores (a quad writes 32 contiguous bytes of a row).
#pragma unroll
    for (int r = 0; r < 2; r++) {
      if (key[r] >= T) continue;
      size_t at = (((size_t)b * T + key[r]) * Hq + h0) * D + 2 * tg;
#pragma unroll
      for (int j = 0; j < D / 8; j++) {
        *(float2*)(dk_part + at + 8 * j) = make_float2(dk_acc[j].x[2 * r], dk_acc[j].x[2 * r + 1]);
        *(float2*)(dv_part + at + 8 * j) = make_float2(dv_acc[j].x[2 * r], dv_acc[j].x[2 * r + 1]);
      }
    }
    return;
  }
  // Each warp's own rows of Ks and Vs, which only it read, take the tiles
  // out.
  tc_stage_rows<D>(Ks + warp * 16 * LD, dk_acc, scale, scale, lane);
  tc_stage_rows<D>(Vs + warp * 16 * LD, dv_acc, 1.0f, 1.0f, lane);
  __syncthreads();
  tc_store_rows<D>(dk, Ks, TC_BK, k0, T, Hkv, kvh, b);
  tc_store_rows<D>(dv, Vs, TC_BK, k0, T, Hkv, kvh, b);
}

// attention_tc_backward_dq_ds is attention_tc_backward_dq from the dS^T
// that attention_tc_backward_dkdv wrote into ds (tc_ds_tile): dq = scale
// dS K, one product per key tile. The dS tile is read with transposing
// ldmatrix straight into the A fragments; where the tile may hold pairs a
// row does not see (the diagonal, document starts), those halves of the
// fragments are cleared bit by bit, so that entries the dk/dv kernel did
// not write (stale values, NaN) never reach the sum. Grid (Hq, B,
// ceil(T/64)), block 128, dynamic shared memory 2*64 (64 + 8) * 2 +
// 2*64 (D + 8) * 2 bytes.
template <int D>
__device__ __forceinline__ void attention_tc_backward_dq_ds(uint16_t* dq, const uint16_t* ds, const uint16_t* k,
                                                            const int* doc_start, int B, int T, int Hq, int Hkv,
                                                            float scale) {
  constexpr int LD = D + TC_PAD, LDS = TC_BK + TC_PAD;
  DYNAMIC_SHARED(uint16_t, smem);
  uint16_t* Ss = smem;                   // [2][TC_BK][LDS]: dS^T, key rows of the block's 64 queries
  uint16_t* Ks = Ss + 2 * TC_BK * LDS;   // [2][TC_BK][LD]

  int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, tg = lane & 3;
  int q0 = (gridDim.z - 1 - blockIdx.z) * TC_BQ, h = blockIdx.x, b = blockIdx.y, kvh = h / (Hq / Hkv);
  int row[2] = {q0 + warp * 16 + g, q0 + warp * 16 + g + 8};
  int rstart[2] = {tc_doc_start_at(doc_start, b, T, row[0]), tc_doc_start_at(doc_start, b, T, row[1])};
  int kbegin, ntiles, klate;
  tc_key_tiles(doc_start, b, T, q0, kbegin, ntiles, klate);

  // The tile of keys k0.. and the block's queries: 8 KiB in one piece.
  auto load_ds = [&](uint16_t* s, int k0) {
    const uint16_t* tile = tc_ds_tile(ds, b, h, T, Hq, k0, q0);
    int c = tid % (TC_BQ / 8);
    for (int r = tid / (TC_BQ / 8); r < TC_BK; r += TC_THREADS / (TC_BQ / 8))
      cp_async_16(s + r * LDS + c * 8, tile + r * TC_BQ + c * 8, true);
  };
  load_ds(Ss, kbegin);
  tc_load_rows<D>(Ks, k, TC_BK, kbegin, T, Hkv, kvh, b);
  cp_async_commit();

  FragC acc[D / 8];
#pragma unroll
  for (int j = 0; j < D / 8; j++) acc[j].x[0] = acc[j].x[1] = acc[j].x[2] = acc[j].x[3] = 0.0f;
  for (int it = 0; it < ntiles; it++) {
    int k0 = kbegin + it * TC_BK, buf = it & 1;
    if (it + 1 < ntiles) {
      load_ds(Ss + (buf ^ 1) * TC_BK * LDS, k0 + TC_BK);
      tc_load_rows<D>(Ks + (buf ^ 1) * TC_BK * LD, k, TC_BK, k0 + TC_BK, T, Hkv, kvh, b);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const uint16_t* St = Ss + buf * TC_BK * LDS + warp * 16;  // this warp's 16 query columns
    const uint16_t* Kt = Ks + buf * TC_BK * LD;
    bool masked = k0 < klate || k0 + TC_BK > q0 + 1;
#pragma unroll
    for (int kk = 0; kk < TC_BK / 16; kk++) {
      FragA fa;
      ldmatrix_frag_a_trans(fa, St + kk * 16 * LDS, LDS, lane);
      if (masked) {
        // x[i]: row row[i & 1], keys key and key + 1 in its low and high
        // halves (mma.cuh's A fragment).
#pragma unroll
        for (int i = 0; i < 4; i++) {
          int r = i & 1, key = k0 + kk * 16 + 2 * tg + (i >> 1) * 8;
          unsigned span = (unsigned)(row[r] - rstart[r]);
          uint32_t keep = ((unsigned)(key - rstart[r]) <= span ? 0x0000ffffu : 0u) |
                          ((unsigned)(key + 1 - rstart[r]) <= span ? 0xffff0000u : 0u);
          fa.x[i] &= keep;
        }
      }
      tc_accumulate16<D>(acc, fa, Kt, kk * 16, lane);
    }
    __syncthreads();  // every warp is done with these tiles before the next load refills them
  }
  // Ks is free after the last barrier: the tile goes out through it.
  tc_stage_rows<D>(Ks + warp * 16 * LD, acc, scale, scale, lane);
  __syncthreads();
  tc_store_rows<D>(dq, Ks, TC_BQ, q0, T, Hq, h, b);
}

// attention_dkdv_sum finishes attention_tc_backward_dkdv under GQA:
// dk = bf16(scale sum_j dk_part[.., kvh*group + j, ..]) and dv the same
// without the scale, the group's heads added in order (deterministic).
// rows = B*T*Hkv, D a multiple of 8; parts [B, T, Hq, D] float32, dk and
// dv [B, T, Hkv, D] bf16, all 16-byte aligned. Grid-stride over groups of
// 8 elements, block 256. The group index and its division are 32-bit
// (a 64-bit division by a runtime D is a call of some 70 instructions):
// rows * D / 8 is below q's elements, which the caller holds under 2^31.
extern "C" __global__ void __launch_bounds__(256)
    attention_dkdv_sum(uint16_t* dk, uint16_t* dv, const float* dk_part, const float* dv_part, int rows,
                          int group, int D, float scale) {
  const unsigned per_row = D / 8, n = (unsigned)rows * per_row;
  for (unsigned i = grid_start(); i < n; i += grid_stride()) {
    unsigned row = i / per_row, c = i - row * per_row;
    float sk[8] = {}, sv[8] = {};
    for (int j = 0; j < group; j++) {
      size_t at = ((size_t)row * group + j) * D + c * 8;
      float4 k0 = *(const float4*)(dk_part + at), k1 = *(const float4*)(dk_part + at + 4);
      float4 v0 = *(const float4*)(dv_part + at), v1 = *(const float4*)(dv_part + at + 4);
      sk[0] += k0.x, sk[1] += k0.y, sk[2] += k0.z, sk[3] += k0.w, sk[4] += k1.x, sk[5] += k1.y, sk[6] += k1.z,
          sk[7] += k1.w;
      sv[0] += v0.x, sv[1] += v0.y, sv[2] += v0.z, sv[3] += v0.w, sv[4] += v1.x, sv[5] += v1.y, sv[6] += v1.z,
          sv[7] += v1.w;
    }
    tc_chunk ok, ov;
#pragma unroll
    for (int w = 0; w < 4; w++) {
      ok.w[w] = pack_bf16(sk[2 * w] * scale, sk[2 * w + 1] * scale);
      ov.w[w] = pack_bf16(sv[2 * w], sv[2 * w + 1]);
    }
    *(tc_chunk*)(dk + (size_t)row * D + c * 8) = ok;
    *(tc_chunk*)(dv + (size_t)row * D + c * 8) = ov;
  }
}

// The entry points, one per head dimension (the accumulators are sized
// at compile time). Written out: with the three generated by a macro,
// ptxas 11.8 crashes on the sm_90 PTX's line information.
extern "C" __global__ void __launch_bounds__(TC_THREADS)
    attention_tc_forward_d64(uint16_t* out, float* lse, const uint16_t* q, const uint16_t* k, const uint16_t* v,
                             const int* doc_start, int B, int T, int Hq, int Hkv, float scale) {
  attention_tc_forward<64>(out, lse, q, k, v, doc_start, B, T, Hq, Hkv, scale);
}
extern "C" __global__ void __launch_bounds__(TC_THREADS)
    attention_tc_forward_d96(uint16_t* out, float* lse, const uint16_t* q, const uint16_t* k, const uint16_t* v,
                             const int* doc_start, int B, int T, int Hq, int Hkv, float scale) {
  attention_tc_forward<96>(out, lse, q, k, v, doc_start, B, T, Hq, Hkv, scale);
}
extern "C" __global__ void __launch_bounds__(TC_THREADS)
    attention_tc_forward_d128(uint16_t* out, float* lse, const uint16_t* q, const uint16_t* k, const uint16_t* v,
                             const int* doc_start, int B, int T, int Hq, int Hkv, float scale) {
  attention_tc_forward<128>(out, lse, q, k, v, doc_start, B, T, Hq, Hkv, scale);
}
extern "C" __global__ void __launch_bounds__(TC_THREADS)
    attention_tc_backward_dq_d64(uint16_t* dq, const uint16_t* q, const uint16_t* k, const uint16_t* v,
                                 const int* doc_start, const uint16_t* dout, const float* lse, const float* delta,
                                 int B, int T, int Hq, int Hkv, float scale) {
  attention_tc_backward_dq<64>(dq, q, k, v, doc_start, dout, lse, delta, B, T, Hq, Hkv, scale);
}
extern "C" __global__ void __launch_bounds__(TC_THREADS)
    attention_tc_backward_dkdv_d64(uint16_t* dk, uint16_t* dv, float* dk_part, float* dv_part, uint16_t* ds_out,
                                   const uint16_t* q,
                                   const uint16_t* k, const uint16_t* v, const int* doc_start, const uint16_t* dout,
                                   const float* lse, const float* delta, int B, int T, int Hq, int Hkv, int heads,
                                   float scale) {
  attention_tc_backward_dkdv<64>(dk, dv, dk_part, dv_part, ds_out, q, k, v, doc_start, dout, lse, delta, B, T, Hq, Hkv, heads,
                                scale);
}
extern "C" __global__ void __launch_bounds__(TC_THREADS)
    attention_tc_backward_dq_d96(uint16_t* dq, const uint16_t* q, const uint16_t* k, const uint16_t* v,
                                 const int* doc_start, const uint16_t* dout, const float* lse, const float* delta,
                                 int B, int T, int Hq, int Hkv, float scale) {
  attention_tc_backward_dq<96>(dq, q, k, v, doc_start, dout, lse, delta, B, T, Hq, Hkv, scale);
}
extern "C" __global__ void __launch_bounds__(TC_THREADS)
    attention_tc_backward_dkdv_d96(uint16_t* dk, uint16_t* dv, float* dk_part, float* dv_part, uint16_t* ds_out,
                                   const uint16_t* q,
                                   const uint16_t* k, const uint16_t* v, const int* doc_start, const uint16_t* dout,
                                   const float* lse, const float* delta, int B, int T, int Hq, int Hkv, int heads,
                                   float scale) {
  attention_tc_backward_dkdv<96>(dk, dv, dk_part, dv_part, ds_out, q, k, v, doc_start, dout, lse, delta, B, T, Hq, Hkv, heads,
                                scale);
}
extern "C" __global__ void __launch_bounds__(TC_THREADS)
    attention_tc_backward_dq_d128(uint16_t* dq, const uint16_t* q, const uint16_t* k, const uint16_t* v,
                                 const int* doc_start, const uint16_t* dout, const float* lse, const float* delta,
                                 int B, int T, int Hq, int Hkv, float scale) {
  attention_tc_backward_dq<128>(dq, q, k, v, doc_start, dout, lse, delta, B, T, Hq, Hkv, scale);
}
extern "C" __global__ void __launch_bounds__(TC_THREADS)
    attention_tc_backward_dkdv_d128(uint16_t* dk, uint16_t* dv, float* dk_part, float* dv_part, uint16_t* ds_out,
                                   const uint16_t* q,
                                   const uint16_t* k, const uint16_t* v, const int* doc_start, const uint16_t* dout,
                                   const float* lse, const float* delta, int B, int T, int Hq, int Hkv, int heads,
                                   float scale) {
  attention_tc_backward_dkdv<128>(dk, dv, dk_part, dv_part, ds_out, q, k, v, doc_start, dout, lse, delta, B, T, Hq, Hkv, heads,
                                scale);
}
extern "C" __global__ void __launch_bounds__(TC_THREADS)
    attention_tc_backward_dq_ds_d64(uint16_t* dq, const uint16_t* ds, const uint16_t* k, const int* doc_start, int B,
                                    int T, int Hq, int Hkv, float scale) {
  attention_tc_backward_dq_ds<64>(dq, ds, k, doc_start, B, T, Hq, Hkv, scale);
}
extern "C" __global__ void __launch_bounds__(TC_THREADS)
    attention_tc_backward_dq_ds_d96(uint16_t* dq, const uint16_t* ds, const uint16_t* k, const int* doc_start, int B,
                                    int T, int Hq, int Hkv, float scale) {
  attention_tc_backward_dq_ds<96>(dq, ds, k, doc_start, B, T, Hq, Hkv, scale);
}
extern "C" __global__ void __launch_bounds__(TC_THREADS)
    attention_tc_backward_dq_ds_d128(uint16_t* dq, const uint16_t* ds, const uint16_t* k, const int* doc_start, int B,
                                    int T, int Hq, int Hkv, float scale) {
  attention_tc_backward_dq_ds<128>(dq, ds, k, doc_start, B, T, Hq, Hkv, scale);
}
