// attention.cu: causal grouped-query attention, forward and backward,
// flash-style: tiles of K and V pass through shared memory, the softmax is
// online, and no [T x T] matrix exists anywhere. Plain float32 FMA (tensor
// cores may come later); correct first. The forward also has a
// bidirectional mode for encoders (attention_bidir_forward: no causal mask,
// right padding masked out of the keys by a length per row).
//
// Layouts (tensor.Backend.Attention): q, out, dq, dout [B, T, Hq, D]; k, v,
// dk, dv [B, T, Hkv, D]; query head h reads kv head h / (Hq/Hkv); lse and
// delta F32 [B, Hq, T]. Row t of head h of batch b of q starts at element
// ((b*T + t)*Hq + h)*D. D <= ATT_DMAX.
//
// Packed documents (FlashAttention-2's varlen attention): doc_start, int32
// [B, T] or null (one document per row), holds where the document of each
// token begins, and query t sees keys doc_start[b, t] <= s <= t. A query
// tile needs keys from the smallest start of its rows on, so the key tiles
// below that are skipped; the backward's dk/dv stops after the last query
// that sees its key tile, found by a binary search that relies on doc_start
// being non-decreasing within a row, as the CPU backend checks (each value
// is clamped to [0, t], so a bad one gives wrong results, never a read out
// of bounds).
//
// Every kernel is 128 threads = 16 rows x 8 threads: thread tid owns row
// tid/8 of its tile, and of that row the dimensions d = tid%8 + 8j (j <
// ATT_DMAX/8) of an accumulator kept in registers (the loops over j are
// unrolled, so the arrays stay in registers). A row's 8 threads are
// consecutive lanes of one warp, so its max and sum reduce with three
// xor-shuffles.
//
// Backward: three launches, no atomics, so that results do not depend on
// scheduling: attention_backward_delta (delta = rowsum(dout * out)), then
// attention_backward_dq (one block per query tile, looping over key tiles)
// and attention_backward_dkdv (one block per key tile of one kv head,
// looping over the query heads of its group and the query tiles at or after
// it). P is recomputed in both from q, k and lse; the cost is computing
// the scores twice instead of atomics on dq.
#include "common.cuh"

#define ATT_THREADS 128
#define ATT_DMAX 128
#define ATT_BQ 16   // query rows per tile
#define ATT_BK 32   // keys per tile in the forward
#define ATT_BKB 16  // keys per tile in the backward

// store_tile writes a tile of 16 rows (positions t0..t0+15, those < T) of
// head h of batch b from shared memory s [16][D] to x [B, T, heads, D]:
// query tiles, and the backward's key tiles, which have as many rows.
static_assert(ATT_BQ == ATT_BKB, "store_tile writes query and backward key tiles alike");
__device__ __forceinline__ void store_tile(void* x, int x_dt, const float* s, int t0, int T, int heads, int h, int b,
                                           int D) {
  for (int i = threadIdx.x; i < ATT_BQ * D; i += ATT_THREADS) {
    int t = t0 + i / D;
    if (t < T) store_f32(x, x_dt, ((size_t)(b * T + t) * heads + h) * D + i % D, s[i]);
  }
}

// doc_start_at is where the document of token t of row b begins: 0 without
// documents or past T, else doc_start[b, t] clamped to [0, t].
__device__ __forceinline__ int doc_start_at(const int* doc_start, int b, int T, int t) {
  if (doc_start == nullptr || t >= T) return 0;
  return min(max(doc_start[(size_t)b * T + t], 0), t);
}

// tile_doc_start is the first key that the query rows t0..t0+15 (those
// < T) see: the smallest start among them. The same in every thread.
__device__ __forceinline__ int tile_doc_start(const int* doc_start, int b, int T, int t0) {
  int lo = t0;
  for (int i = 0; i < ATT_BQ && t0 + i < T; i++) lo = min(lo, doc_start_at(doc_start, b, T, t0 + i));
  return lo;
}

// queries_until is the first query row after klast whose document starts
// after klast (T if none): no row from there on sees a key <= klast. A
// binary search, doc_start being non-decreasing within a row.
__device__ __forceinline__ int queries_until(const int* doc_start, int b, int T, int klast) {
  if (doc_start == nullptr) return T;
  int lo = klast + 1, hi = T;
  while (lo < hi) {
    int mid = (lo + hi) / 2;
    if (doc_start_at(doc_start, b, T, mid) > klast) {
      hi = mid;
    } else {
      lo = mid + 1;
    }
  }
  return lo;
}

// attention_forward_body is the forward of both masks. Causal: query t of
// row b sees keys doc_start[b, t] <= s <= t, and lse is written.
// Bidirectional (an encoder's): every query of row b sees keys
// 0 <= s < key_len[b] (clamped to [1, T]: the rest is padding), and there
// is no lse. The mask is one range [klo, khi] per query row either way.
template <bool Causal>
__device__ __forceinline__ void attention_forward_body(void* out, int out_dt, float* lse, const void* q, int q_dt,
                                                       const void* k, int k_dt, const void* v, int v_dt,
                                                       const int* doc_start, const int* key_len, int B, int T,
                                                       int Hq, int Hkv, int D, float scale) {
  DYNAMIC_SHARED(float, smem);
  float* Qs = smem;            // [ATT_BQ][D]
  float* Ks = Qs + ATT_BQ * D;  // [ATT_BK][D]
  float* Vs = Ks + ATT_BK * D;  // [ATT_BK][D]
  float* Ps = Vs + ATT_BK * D;  // [ATT_BQ][ATT_BK] probabilities of the tile

  int tid = threadIdx.x, r = tid >> 3, l8 = tid & 7;
  int q0 = blockIdx.x * ATT_BQ, h = blockIdx.y, b = blockIdx.z, g = h / (Hq / Hkv);
  int qi = q0 + r;  // this thread's query position
  // The keys it sees, klo..khi, and the tiles of keys kbegin..kend-1 that
  // the block loads: before the tile's first start and after its last
  // query (causal), or past the row's length (bidirectional), none is seen.
  int klo, khi, kbegin, kend;
  if (Causal) {
    klo = doc_start_at(doc_start, b, T, qi);
    khi = qi;
    kbegin = tile_doc_start(doc_start, b, T, q0);
    kend = min(T, q0 + ATT_BQ);
  } else {
    kend = min(max(key_len[b], 1), T);
    klo = 0;
    khi = kend - 1;
    kbegin = 0;
  }

  for (int i = tid; i < ATT_BQ * D; i += ATT_THREADS) {
    int t = q0 + i / D;
    Qs[i] = t < T ? load_f32(q, q_dt, ((size_t)(b * T + t) * Hq + h) * D + i % D) : 0.0f;
  }

  // m_run is row r's running max (the same in its 8 threads); l_part is the
  // sum of exp(score - m_run) over the keys this thread scored.
  float m_run = -INFINITY, l_part = 0.0f;
  float o[ATT_DMAX / 8];
#pragma unroll
  for (int j = 0; j < ATT_DMAX / 8; j++) o[j] = 0.0f;

  for (int k0 = kbegin; k0 < kend; k0 += ATT_BK) {
    __syncthreads();  // Qs written; the previous tile's Ks, Vs, Ps read
    for (int i = tid; i < ATT_BK * D; i += ATT_THREADS) {
      int t = k0 + i / D;
      size_t off = ((size_t)(b * T + t) * Hkv + g) * D + i % D;
      Ks[i] = t < T ? load_f32(k, k_dt, off) : 0.0f;
      Vs[i] = t < T ? load_f32(v, v_dt, off) : 0.0f;
    }
    __syncthreads();

    // Scores of row r for keys c = l8 + 8jj; keys before klo or after khi
    // (or past T) masked.
    float sc[ATT_BK / 8];
    float mt = -INFINITY;
#pragma unroll
    for (int jj = 0; jj < ATT_BK / 8; jj++) {
      int c = l8 + 8 * jj;
      float dot = 0.0f;
      for (int d = 0; d < D; d++) dot += Qs[r * D + d] * Ks[c * D + d];
      // klo <= k0 + c <= khi as one unsigned comparison: with two,
      // ptxas (nvcc 11.8) spills on sm_80.
      sc[jj] = (unsigned)(k0 + c - klo) <= (unsigned)(khi - klo) ? scale * dot : -INFINITY;
      mt = fmaxf(mt, sc[jj]);
    }
    mt = fmaxf(mt, __shfl_xor_sync(0xffffffffu, mt, 1));
    mt = fmaxf(mt, __shfl_xor_sync(0xffffffffu, mt, 2));
    mt = fmaxf(mt, __shfl_xor_sync(0xffffffffu, mt, 4));
    // m_new stays -inf until a tile holds a key the row sees (its document
    // may start in a later tile); exp(-inf - -inf) would be NaN, so the
    // exponentials take 0 as the max until then, and every one is 0. After
    // that corr is exp(-inf) = 0 once, when there is nothing to rescale.
    float m_new = fmaxf(m_run, mt);
    float m_ref = m_new == -INFINITY ? 0.0f : m_new;
    float corr = expf(m_run - m_ref);
    l_part *= corr;
#pragma unroll
    for (int jj = 0; jj < ATT_BK / 8; jj++) {
      float p = expf(sc[jj] - m_ref);
      Ps[r * ATT_BK + l8 + 8 * jj] = p;
      l_part += p;
    }
    m_run = m_new;
    __syncthreads();

#pragma unroll
    for (int j = 0; j < ATT_DMAX / 8; j++) o[j] *= corr;
    for (int c = 0; c < ATT_BK; c++) {
      float p = Ps[r * ATT_BK + c];
#pragma unroll
      for (int j = 0; j < ATT_DMAX / 8; j++) {
        int d = l8 + 8 * j;
        if (d < D) o[j] += p * Vs[c * D + d];
      }
    }
  }

  float l = l_part;
  l += __shfl_xor_sync(0xffffffffu, l, 1);
  l += __shfl_xor_sync(0xffffffffu, l, 2);
  l += __shfl_xor_sync(0xffffffffu, l, 4);
  if (Causal && qi < T && l8 == 0) lse[((size_t)b * Hq + h) * T + qi] = m_run + logf(l);
  // The tile goes out through shared memory (Qs is free now): one store
  // loop, consecutive threads on consecutive elements.
#pragma unroll
  for (int j = 0; j < ATT_DMAX / 8; j++) {
    int d = l8 + 8 * j;
    if (d < D) Qs[r * D + d] = o[j] / l;
  }
  __syncthreads();
  store_tile(out, out_dt, Qs, q0, T, Hq, h, b, D);
}

// attention_forward matches tensor.CPU.Attention: out = softmax(scale q k^T,
// causal) v per query row, lse = log-sum-exp of the row's scaled scores.
// Grid (ceil(T/16), Hq, B), block 128, dynamic shared memory
// (16 D + 2*32 D + 16*32) floats (kernels.go).
extern "C" __global__ void __launch_bounds__(ATT_THREADS)
    attention_forward(void* out, int out_dt, float* lse, const void* q, int q_dt, const void* k, int k_dt,
                      const void* v, int v_dt, const int* doc_start, int B, int T, int Hq, int Hkv, int D,
                      float scale) {
  attention_forward_body<true>(out, out_dt, lse, q, q_dt, k, k_dt, v, v_dt, doc_start, nullptr, B, T, Hq, Hkv, D,
                               scale);
}

// attention_bidir_forward matches tensor.CPU.BidirectionalAttention: out =
// softmax(scale q k^T) v over keys 0 <= s < key_len[b] for every query of
// row b, key_len int32 [B] (each clamped to [1, T]). Launched as
// attention_forward.
extern "C" __global__ void __launch_bounds__(ATT_THREADS)
    attention_bidir_forward(void* out, int out_dt, const void* q, int q_dt, const void* k, int k_dt, const void* v,
                            int v_dt, const int* key_len, int B, int T, int Hq, int Hkv, int D, float scale) {
  attention_forward_body<false>(out, out_dt, nullptr, q, q_dt, k, k_dt, v, v_dt, nullptr, key_len, B, T, Hq, Hkv, D,
                                scale);
}

// attention_backward_delta writes delta F32 [B, Hq, T] = rowsum(dout * out),
// the D of the flash-attention backward. With cast not null it also writes
// dout into cast (dout's shape, cast_dt) and takes dout's values from there:
// the float32 gradient rounded to bf16 for the tensor-core kernels, in the
// pass that reads it anyway (Backend.attentionBackwardRounded), the same
// values a cast before it would give. One warp per (b, t, h) row: grid
// ceil(B*T*Hq/4), block 128.
extern "C" __global__ void __launch_bounds__(ATT_THREADS)
    attention_backward_delta(float* delta, const void* dout, int dout_dt, void* cast, int cast_dt, const void* out,
                             int out_dt, int B, int T, int Hq, int D) {
  int lane = threadIdx.x & 31;
  size_t rows = (size_t)B * T * Hq;
  size_t row = (size_t)blockIdx.x * (ATT_THREADS / 32) + (threadIdx.x >> 5);  // (b*T + t)*Hq + h
  float acc = 0.0f;
  if (row < rows) {
    for (int d = lane; d < D; d += 32) {
      size_t i = row * D + d;
      float g = load_f32(dout, dout_dt, i);
      if (cast != nullptr) {
        store_f32(cast, cast_dt, i, g);
        g = load_f32(cast, cast_dt, i);  // its own store: the rounded value
      }
      acc += g * load_f32(out, out_dt, i);
    }
  }
  acc = warp_sum(acc);  // outside the if: every lane takes part
  if (row < rows && lane == 0) {
    size_t b = row / ((size_t)T * Hq), t = (row / Hq) % T, h = row % Hq;
    delta[(b * Hq + h) * T + t] = acc;
  }
}

// attention_backward_dq matches the dq of tensor.CPU.AttentionBackward:
// dq = scale sum_s dS[t, s] k[s] with P = exp(scale q k^T - lse) and
// dS = P (dout v^T - delta). Grid (ceil(T/16), Hq, B), block 128, dynamic
// shared memory (2*16 D + 2*16 D + 16*16) floats.
extern "C" __global__ void __launch_bounds__(ATT_THREADS)
    attention_backward_dq(void* dq, int dq_dt, const void* q, int q_dt, const void* k, int k_dt, const void* v,
                          int v_dt, const int* doc_start, const void* dout, int dout_dt, const float* lse,
                          const float* delta, int B, int T, int Hq, int Hkv, int D, float scale) {
  DYNAMIC_SHARED(float, smem);
  float* Qs = smem;               // [ATT_BQ][D]
  float* dOs = Qs + ATT_BQ * D;   // [ATT_BQ][D]
  float* Ks = dOs + ATT_BQ * D;   // [ATT_BKB][D]
  float* Vs = Ks + ATT_BKB * D;   // [ATT_BKB][D]
  float* dSs = Vs + ATT_BKB * D;  // [ATT_BQ][ATT_BKB]

  int tid = threadIdx.x, r = tid >> 3, l8 = tid & 7;
  int q0 = blockIdx.x * ATT_BQ, h = blockIdx.y, b = blockIdx.z, g = h / (Hq / Hkv);
  int qi = q0 + r, qstart = doc_start_at(doc_start, b, T, qi);

  for (int i = tid; i < ATT_BQ * D; i += ATT_THREADS) {
    int t = q0 + i / D;
    size_t off = ((size_t)(b * T + t) * Hq + h) * D + i % D;
    Qs[i] = t < T ? load_f32(q, q_dt, off) : 0.0f;
    dOs[i] = t < T ? load_f32(dout, dout_dt, off) : 0.0f;
  }
  size_t stat = ((size_t)b * Hq + h) * T + qi;
  float lse_r = qi < T ? lse[stat] : 0.0f, delta_r = qi < T ? delta[stat] : 0.0f;

  float acc[ATT_DMAX / 8];
#pragma unroll
  for (int j = 0; j < ATT_DMAX / 8; j++) acc[j] = 0.0f;

  int kend = min(T, q0 + ATT_BQ);
  for (int k0 = tile_doc_start(doc_start, b, T, q0); k0 < kend; k0 += ATT_BKB) {
    __syncthreads();
    for (int i = tid; i < ATT_BKB * D; i += ATT_THREADS) {
      int t = k0 + i / D;
      size_t off = ((size_t)(b * T + t) * Hkv + g) * D + i % D;
      Ks[i] = t < T ? load_f32(k, k_dt, off) : 0.0f;
      Vs[i] = t < T ? load_f32(v, v_dt, off) : 0.0f;
    }
    __syncthreads();
#pragma unroll
    for (int jj = 0; jj < ATT_BKB / 8; jj++) {
      int c = l8 + 8 * jj;
      float ds = 0.0f;
      if (k0 + c <= qi && k0 + c >= qstart && qi < T) {
        float s = 0.0f, dp = 0.0f;
        for (int d = 0; d < D; d++) {
          s += Qs[r * D + d] * Ks[c * D + d];
          dp += dOs[r * D + d] * Vs[c * D + d];
        }
        ds = expf(scale * s - lse_r) * (dp - delta_r);
      }
      dSs[r * ATT_BKB + c] = ds;
    }
    __syncthreads();
    for (int c = 0; c < ATT_BKB; c++) {
      float ds = dSs[r * ATT_BKB + c];
#pragma unroll
      for (int j = 0; j < ATT_DMAX / 8; j++) {
        int d = l8 + 8 * j;
        if (d < D) acc[j] += ds * Ks[c * D + d];
      }
    }
  }
  __syncthreads();  // Qs is free: the tile goes out through it
#pragma unroll
  for (int j = 0; j < ATT_DMAX / 8; j++) {
    int d = l8 + 8 * j;
    if (d < D) Qs[r * D + d] = scale * acc[j];
  }
  __syncthreads();
  store_tile(dq, dq_dt, Qs, q0, T, Hq, h, b, D);
}

// attention_backward_dkdv matches the dk and dv of
// tensor.CPU.AttentionBackward: dk = scale sum dS^T q and dv = sum P^T dout,
// summed over the query heads of the kv group (written, not accumulated).
// Grid (ceil(T/16), Hkv, B), block 128, dynamic shared memory
// (2*16 D + 2*16 D + 2*16*16 + 2*16) floats.
extern "C" __global__ void __launch_bounds__(ATT_THREADS)
    attention_backward_dkdv(void* dk, int dk_dt, void* dv, int dv_dt, const void* q, int q_dt, const void* k,
                            int k_dt, const void* v, int v_dt, const int* doc_start, const void* dout, int dout_dt,
                            const float* lse, const float* delta, int B, int T, int Hq, int Hkv, int D,
                            float scale) {
  DYNAMIC_SHARED(float, smem);
  float* Ks = smem;                  // [ATT_BKB][D]
  float* Vs = Ks + ATT_BKB * D;      // [ATT_BKB][D]
  float* Qs = Vs + ATT_BKB * D;      // [ATT_BQ][D]
  float* dOs = Qs + ATT_BQ * D;      // [ATT_BQ][D]
  float* Ps = dOs + ATT_BQ * D;      // [ATT_BQ][ATT_BKB]
  float* dSs = Ps + ATT_BQ * ATT_BKB;  // [ATT_BQ][ATT_BKB]
  float* lse_s = dSs + ATT_BQ * ATT_BKB;  // [ATT_BQ]
  float* delta_s = lse_s + ATT_BQ;        // [ATT_BQ]

  int tid = threadIdx.x, row8 = tid >> 3, l8 = tid & 7;
  int k0 = blockIdx.x * ATT_BKB, g = blockIdx.y, b = blockIdx.z, group = Hq / Hkv;

  for (int i = tid; i < ATT_BKB * D; i += ATT_THREADS) {
    int t = k0 + i / D;
    size_t off = ((size_t)(b * T + t) * Hkv + g) * D + i % D;
    Ks[i] = t < T ? load_f32(k, k_dt, off) : 0.0f;
    Vs[i] = t < T ? load_f32(v, v_dt, off) : 0.0f;
  }

  // The query rows that see any of these keys end before qend.
  int qend = queries_until(doc_start, b, T, min(k0 + ATT_BKB, T) - 1);

  // Accumulators of key row row8 (this thread's dimensions).
  float dk_acc[ATT_DMAX / 8], dv_acc[ATT_DMAX / 8];
#pragma unroll
  for (int j = 0; j < ATT_DMAX / 8; j++) dk_acc[j] = dv_acc[j] = 0.0f;

  for (int h = g * group; h < (g + 1) * group; h++) {
    // Query tiles that hold a query at or after k0 and before qend (the
    // others see none of these keys).
    for (int q0 = k0 / ATT_BQ * ATT_BQ; q0 < qend; q0 += ATT_BQ) {
      __syncthreads();  // the previous tile's Qs, dOs, Ps, dSs are read
      for (int i = tid; i < ATT_BQ * D; i += ATT_THREADS) {
        int t = q0 + i / D;
        size_t off = ((size_t)(b * T + t) * Hq + h) * D + i % D;
        Qs[i] = t < T ? load_f32(q, q_dt, off) : 0.0f;
        dOs[i] = t < T ? load_f32(dout, dout_dt, off) : 0.0f;
      }
      if (tid < ATT_BQ) {
        int t = q0 + tid;
        size_t stat = ((size_t)b * Hq + h) * T + t;
        lse_s[tid] = t < T ? lse[stat] : 0.0f;
        delta_s[tid] = t < T ? delta[stat] : 0.0f;
      }
      __syncthreads();
      // P and dS for query row row8 and keys c = l8 + 8jj.
      int qi = q0 + row8, qstart = doc_start_at(doc_start, b, T, qi);
#pragma unroll
      for (int jj = 0; jj < ATT_BKB / 8; jj++) {
        int c = l8 + 8 * jj;
        float p = 0.0f, ds = 0.0f;
        if (k0 + c <= qi && k0 + c >= qstart && qi < T) {
          float s = 0.0f, dp = 0.0f;
          for (int d = 0; d < D; d++) {
            s += Qs[row8 * D + d] * Ks[c * D + d];
            dp += dOs[row8 * D + d] * Vs[c * D + d];
          }
          p = expf(scale * s - lse_s[row8]);
          ds = p * (dp - delta_s[row8]);
        }
        Ps[row8 * ATT_BKB + c] = p;
        dSs[row8 * ATT_BKB + c] = ds;
      }
      __syncthreads();
      // Key row row8: dv += sum_r P[r, row8] dout[r], dk += sum_r dS[r, row8] q[r].
      for (int rr = 0; rr < ATT_BQ; rr++) {
        float p = Ps[rr * ATT_BKB + row8], ds = dSs[rr * ATT_BKB + row8];
#pragma unroll
        for (int j = 0; j < ATT_DMAX / 8; j++) {
          int d = l8 + 8 * j;
          if (d < D) {
            dv_acc[j] += p * dOs[rr * D + d];
            dk_acc[j] += ds * Qs[rr * D + d];
          }
        }
      }
    }
  }
  __syncthreads();  // Ks and Vs are free: the tiles go out through them
#pragma unroll
  for (int j = 0; j < ATT_DMAX / 8; j++) {
    int d = l8 + 8 * j;
    if (d < D) {
      Ks[row8 * D + d] = scale * dk_acc[j];
      Vs[row8 * D + d] = dv_acc[j];
    }
  }
  __syncthreads();
  store_tile(dk, dk_dt, Ks, k0, T, Hkv, g, b, D);
  store_tile(dv, dv_dt, Vs, k0, T, Hkv, g, b, D);
}
