// attention_kv.cu: the attention of generation (tensor.Backend.AttentionKV):
// Tq new tokens per row against a key/value cache, in two launches.
//
// Layouts: q, out [B, Tq, Hq, D]; k, v (the new tokens') [B, Tq, Hkv, D];
// k_cache, v_cache [B, S, Hkv, D] of any float dtype; pos int32 [B]: row b's
// new tokens are at positions pos[b] .. pos[b]+Tq-1. Query head h reads kv
// head h / (Hq/Hkv). D <= KV_DMAX.
//
// kv_cache_write copies the new keys and values into the cache (rounded to
// its dtype), one thread per element, skipping positions outside [0, S):
// pos stays on the device unchecked, so a bad one gives wrong results,
// never a write out of bounds.
//
// attention_kv is one block of 128 threads per (query row, query head): it
// holds the query in shared memory and walks the cached keys 0..p (p its
// position, clamped to [0, S-1]) in tiles of 128, one key per thread: the
// thread's score, the tile's max and sum by block reductions, and an online
// softmax (running max m and sum l, rescaled when m grows). Thread d < D
// keeps the accumulator of output dimension d and adds the tile's
// probabilities times v[., d], reading v coalesced. Memory traffic is the
// cache once per query head; nothing grows with Tq x S. Plain float32, no
// split over the keys: correct first, fast enough for decoding a batch.
#include "common.cuh"

#define KV_THREADS 128
#define KV_DMAX 128
#define KV_TILE KV_THREADS  // keys per tile: one per thread

extern "C" __global__ void kv_cache_write(void* k_cache, int kc_dt, void* v_cache, int vc_dt, const void* k, int k_dt,
                                          const void* v, int v_dt, const int* pos, int B, int Tq, int S, int Hkv,
                                          int D) {
  size_t row = (size_t)Hkv * D, n = (size_t)B * Tq * row;
  for (size_t i = grid_start(); i < n; i += grid_stride()) {
    size_t bt = i / row;
    int b = (int)(bt / Tq), t = (int)(bt % Tq);
    int p = pos[b] + t;
    if (p < 0 || p >= S) continue;
    size_t dst = ((size_t)b * S + p) * row + i % row;
    store_f32(k_cache, kc_dt, dst, load_f32(k, k_dt, i));
    store_f32(v_cache, vc_dt, dst, load_f32(v, v_dt, i));
  }
}

// Dynamic shared memory: the query [D], the tile's scores [KV_TILE] and the
// reductions' 32 floats.
extern "C" __global__ void __launch_bounds__(KV_THREADS)
    attention_kv(void* out, int out_dt, const void* q, int q_dt, const void* k_cache, int kc_dt, const void* v_cache,
                 int vc_dt, const int* pos, int B, int Tq, int S, int Hq, int Hkv, int D, float scale) {
  DYNAMIC_SHARED(float, smem);
  float* qs = smem;
  float* ps = qs + D;
  float* red = ps + KV_TILE;
  int bt = blockIdx.x, h = blockIdx.y, tid = threadIdx.x;
  int b = bt / Tq, t = bt % Tq;
  int g = h / (Hq / Hkv);
  int n = min(max(pos[b] + t, 0), S - 1) + 1;  // keys 0..p
  size_t qrow = ((size_t)bt * Hq + h) * D;
  for (int d = tid; d < D; d += KV_THREADS) qs[d] = load_f32(q, q_dt, qrow + d);
  __syncthreads();

  float m = -INFINITY, l = 0.0f, acc = 0.0f;
  for (int j0 = 0; j0 < n; j0 += KV_TILE) {
    int j = j0 + tid;
    float s = -INFINITY;
    if (j < n) {
      size_t krow = (((size_t)b * S + j) * Hkv + g) * D;
      float dot = 0.0f;
      for (int d = 0; d < D; d++) dot += qs[d] * load_f32(k_cache, kc_dt, krow + d);
      s = scale * dot;
    }
    float m_new = fmaxf(m, block_max(s, red));
    float p = j < n ? expf(s - m_new) : 0.0f;
    ps[tid] = p;
    float tile_sum = block_sum(p, red);  // its barriers also publish ps
    float c = expf(m - m_new);           // 0 on the first tile (m = -inf)
    l = l * c + tile_sum;
    m = m_new;
    if (tid < D) {
      float a = 0.0f;
      int cnt = min(KV_TILE, n - j0);
      size_t vbase = (((size_t)b * S + j0) * Hkv + g) * D + tid;
      for (int jj = 0; jj < cnt; jj++) a += ps[jj] * load_f32(v_cache, vc_dt, vbase + (size_t)jj * Hkv * D);
      acc = acc * c + a;
    }
    __syncthreads();  // ps is rewritten by the next tile
  }
  if (tid < D) store_f32(out, out_dt, qrow + tid, acc / l);
}
