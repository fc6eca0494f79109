// kmeans.cu: one Lloyd iteration of k-means on the GPU, for the COMPASS
// clustering of embeddings (sampling/). x is [N, D] points of any float
// dtype, c F32 [K, D] centroids. One iteration is:
//
//	kmeans_sqnorm(cn, c)                       cn[k] = ||c_k||^2
//	kmeans_sqnorm(xn, x)                       (once: the points do not move)
//	kmeans_split(ch, cl, c)                    c as bf16 hi + lo, D padded to 32
//	kmeans_split(xh, xl, x)                    (not for bf16 x with D % 32 == 0)
//	kmeans_assign_tc(assign, dist, xh, xn, ch, cl, cn)
//	                                           nearest centroid of each point
//	                                           (kmeans_assign_tc_split with xl)
//	the update, a segmented reduction:
//	zero chunk counts I32 [C, K]               (cuMemsetD32)
//	kmeans_chunk_counts, kmeans_chunk_offsets, kmeans_cluster_starts,
//	kmeans_scatter(order, ...)                 points sorted by cluster, stably
//	kmeans_segment_mean(c, counts, x, order)   empty clusters: count 0, c kept
//
// kmeans_assign does the assignment in float32 FMA: it is the reference the
// tests hold the tensor-core kernel to, and the benchmark's baseline.
// cgo/kmeans.go runs it all (Backend.KMeansAssign, Backend.KMeansUpdate).
#include "mma.cuh"

#define KM_THREADS 128
#define KM_BM 32  // points per block
#define KM_BK 32  // centroids per tile
#define KM_BD 32  // dimensions per step
static_assert(KM_BM == KM_BK, "kmeans_assign stages point and centroid tiles in one loop");

// kmeans_sqnorm writes out F32 [rows] = the squared norm of each row of x
// [rows, Dm], one warp per row: grid ceil(rows/4), block 128.
extern "C" __global__ void __launch_bounds__(KM_THREADS)
    kmeans_sqnorm(float* out, const void* x, int x_dt, int rows, int Dm) {
  int lane = threadIdx.x & 31;
  int row = blockIdx.x * (KM_THREADS / 32) + (threadIdx.x >> 5);
  float acc = 0.0f;
  if (row < rows) {
    for (int d = lane; d < Dm; d += 32) {
      float v = load_f32(x, x_dt, (size_t)row * Dm + d);
      acc += v * v;
    }
  }
  acc = warp_sum(acc);  // outside the if: every lane takes part
  if (row < rows && lane == 0) out[row] = acc;
}

// closer says whether candidate (d, k) beats (best, best_k): smaller
// distance, or the same distance and a lower index, so that ties go to the
// lowest index whatever order the candidates come in.
__device__ __forceinline__ bool closer(float d, int k, float best, int best_k) {
  return d < best || (d == best && k < best_k);
}

// kmeans_assign writes, for each point, the index of its nearest centroid
// (assign I32 [N]; ties to the lowest index) and the squared distance to
// it, dist F32 [N] = ||x||^2 - 2 x.c + ||c||^2 (xn and cn from
// kmeans_sqnorm). The distances are a tile product with the argmin fused:
// a block takes 32 points and walks the centroids 32 at a time, both
// passing through shared memory 32 dimensions at a time; each thread scores
// one point against 8 centroids and keeps its best; the 4 threads of a
// point (consecutive lanes) merge theirs with two shuffles. No [N x K]
// matrix is ever stored. Grid ceil(N/32), block 128, static shared memory
// 8.25 KiB (8,448 bytes).
extern "C" __global__ void __launch_bounds__(KM_THREADS)
    kmeans_assign(int* assign, float* dist, const void* x, int x_dt, const float* xn, const float* c,
                  const float* cn, int N, int K, int Dm) {
  __shared__ float xs[KM_BM][KM_BD + 1];  // +1: the 32 points of a column in 32 banks
  __shared__ float cs[KM_BK][KM_BD + 1];
  int tid = threadIdx.x, p = tid >> 2, q = tid & 3;  // point p of the block; centroids q + 4j
  int n0 = blockIdx.x * KM_BM;
  float best = INFINITY;
  int best_k = 0x7fffffff;

  for (int k0 = 0; k0 < K; k0 += KM_BK) {
    float dot[KM_BK / 4];
#pragma unroll
    for (int j = 0; j < KM_BK / 4; j++) dot[j] = 0.0f;
    for (int d0 = 0; d0 < Dm; d0 += KM_BD) {
      __syncthreads();  // the previous step's tiles are read
      for (int i = tid; i < KM_BM * KM_BD; i += KM_THREADS) {
        int r = i / KM_BD, d = d0 + i % KM_BD;
        xs[r][i % KM_BD] = n0 + r < N && d < Dm ? load_f32(x, x_dt, (size_t)(n0 + r) * Dm + d) : 0.0f;
        cs[r][i % KM_BD] = k0 + r < K && d < Dm ? c[(size_t)(k0 + r) * Dm + d] : 0.0f;
      }
      __syncthreads();
#pragma unroll
      for (int j = 0; j < KM_BK / 4; j++) {
        float a = dot[j];
        for (int d = 0; d < KM_BD; d++) a += xs[p][d] * cs[q + 4 * j][d];
        dot[j] = a;
      }
    }
    float x2 = n0 + p < N ? xn[n0 + p] : 0.0f;
#pragma unroll
    for (int j = 0; j < KM_BK / 4; j++) {
      int k = k0 + q + 4 * j;
      if (k < K) {
        float d = x2 - 2.0f * dot[j] + cn[k];
        if (closer(d, k, best, best_k)) {
          best = d;
          best_k = k;
        }
      }
    }
  }
  // Merge the 4 threads of each point (lanes 4p..4p+3).
#pragma unroll
  for (int o = 1; o < 4; o <<= 1) {
    float ob = __shfl_xor_sync(0xffffffffu, best, o);
    int ok = __shfl_xor_sync(0xffffffffu, best_k, o);
    if (closer(ob, ok, best, best_k)) {
      best = ob;
      best_k = ok;
    }
  }
  if (q == 0 && n0 + p < N) {
    assign[n0 + p] = best_k;
    dist[n0 + p] = best;
  }
}

// The update, by segmented reduction: a stable counting sort of the points
// by cluster (kmeans_chunk_counts, kmeans_chunk_offsets,
// kmeans_cluster_starts, kmeans_scatter), then one pass per cluster over
// its points in index order (kmeans_segment_mean). No float atomics: the
// sums are taken in the same order on every run, so the centroids are the
// same bit for bit.
#define KS_CHUNK 8192  // points per block of the counting sort
#define KS_THREADS 256

// kmeans_chunk_counts counts the points of each chunk of KS_CHUNK in each
// cluster: counts [C, K] (zeroed by the caller; C = ceil(N/KS_CHUNK)),
// row c for chunk c. Grid C, block 256.
extern "C" __global__ void __launch_bounds__(KS_THREADS)
    kmeans_chunk_counts(int* counts, const int* assign, int N, int K) {
  int c = blockIdx.x, end = min(N, (c + 1) * KS_CHUNK);
  for (int i = c * KS_CHUNK + threadIdx.x; i < end; i += KS_THREADS) atomicAdd(&counts[(size_t)c * K + assign[i]], 1);
}

// kmeans_chunk_offsets turns each column k of counts [C, K] into its
// exclusive prefix sum over the chunks (where chunk c's points of cluster
// k go among the cluster's) and writes the column's total, the cluster's
// size, into sizes [K]. One thread per cluster: grid ceil(K/256), block 256.
extern "C" __global__ void __launch_bounds__(KS_THREADS)
    kmeans_chunk_offsets(int* counts, int* sizes, int C, int K) {
  int k = blockIdx.x * KS_THREADS + threadIdx.x;
  if (k >= K) return;
  int sum = 0;
  for (int c = 0; c < C; c++) {
    int n = counts[(size_t)c * K + k];
    counts[(size_t)c * K + k] = sum;
    sum += n;
  }
  sizes[k] = sum;
}

// kmeans_cluster_starts writes start [K + 1], the exclusive prefix sum of
// sizes [K] (start[K] = N): where each cluster's points begin in the
// sorted order. One block of 256 walks the clusters 256 at a time with a
// running carry: grid 1, block 256.
extern "C" __global__ void __launch_bounds__(KS_THREADS) kmeans_cluster_starts(int* start, const int* sizes, int K) {
  __shared__ int part[KS_THREADS];
  int carry = 0;
  for (int k0 = 0; k0 < K; k0 += KS_THREADS) {
    int k = k0 + threadIdx.x;
    int v = k < K ? sizes[k] : 0;
    part[threadIdx.x] = v;
    __syncthreads();
    // Inclusive scan of the 256 values (Hillis-Steele, in place).
    for (int o = 1; o < KS_THREADS; o <<= 1) {
      int add = (int)threadIdx.x >= o ? part[threadIdx.x - o] : 0;
      __syncthreads();
      part[threadIdx.x] += add;
      __syncthreads();
    }
    if (k < K) start[k] = carry + part[threadIdx.x] - v;
    carry += part[KS_THREADS - 1];
    __syncthreads();  // part is read before the next round writes it
  }
  if (threadIdx.x == 0) start[K] = carry;
}

// kmeans_scatter writes order [N], the point indices sorted by cluster and,
// within a cluster, by index: point i of chunk c in cluster k goes to
// start[k] + counts[c, k] + (the points of cluster k before it in its
// chunk). counts [C, K] are kmeans_chunk_offsets' offsets, advanced here
// (row c belongs to block c alone). Each round takes 256 points, one per
// thread; each warp ranks its lanes among the lower lanes of the same
// cluster with shuffles, and the 8 warps then place theirs one after the
// other. Grid C, block 256.
extern "C" __global__ void __launch_bounds__(KS_THREADS)
    kmeans_scatter(int* order, int* counts, const int* start, const int* assign, int N, int K) {
  int c = blockIdx.x, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  int* next = counts + (size_t)c * K;
  int end = min(N, (c + 1) * KS_CHUNK);
  for (int base = c * KS_CHUNK; base < end; base += KS_THREADS) {
    int i = base + threadIdx.x;
    int k = i < end ? assign[i] : -1;
    int before = 0, same = 0;  // lanes of this warp in cluster k: below this one, and all
    for (int j = 0; j < 32; j++) {
      int kj = __shfl_sync(0xffffffffu, k, j);
      if (kj == k) {
        same++;
        if (j < lane) before++;
      }
    }
    for (int w = 0; w < KS_THREADS / 32; w++) {
      int pos = 0;
      if (warp == w && k >= 0) pos = next[k];
      __syncthreads();  // every lane of warp w has read next[k]
      if (warp == w && k >= 0) {
        order[start[k] + pos + before] = i;
        if (before == 0) next[k] = pos + same;  // the warp's first lane of cluster k
      }
      __syncthreads();
    }
  }
}

// kmeans_segment_mean sets c[k] to the mean of the points of cluster k,
// x [N, D] rows order[start[k]] .. order[start[k+1] - 1], summed in that
// order in float32 (four partial sums, j mod 4, added at the end), and
// writes counts[k]; a cluster without points keeps its centroid, bit for
// bit, with count 0. Block (k, dc) takes dimensions 128 dc .. 128 dc + 127
// of cluster k: grid (K, ceil(D/128)), block 128.
extern "C" __global__ void __launch_bounds__(128)
    kmeans_segment_mean(float* c, int* counts, const void* x, int x_dt, const int* order, const int* start, int K,
                        int D) {
  int k = blockIdx.x, d = blockIdx.y * 128 + threadIdx.x;
  int j0 = start[k], j1 = start[k + 1];
  if (blockIdx.y == 0 && threadIdx.x == 0) counts[k] = j1 - j0;
  if (d >= D || j1 == j0) return;
  float s[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  int j = j0;
  for (; j + 4 <= j1; j += 4) {
#pragma unroll
    for (int u = 0; u < 4; u++) s[u] += load_f32(x, x_dt, (size_t)order[j + u] * D + d);
  }
  for (int u = 0; j < j1; j++, u++) s[u] += load_f32(x, x_dt, (size_t)order[j] * D + d);
  c[(size_t)k * D + d] = ((s[0] + s[1]) + (s[2] + s[3])) / (float)(j1 - j0);
}

// The tensor-core assignment. The distance GEMM x c^T runs on the bf16
// tensor cores with every operand split into hi = bf16(v) and
// lo = bf16(v - hi): x.c = xh.ch + xh.cl + xl.ch, three mma per tile (two
// for bf16 points, which are their own hi), each product within about
// 3 * 2^-16 of its value, near the float32 kernel's own rounding. A plain
// bf16 product would be off by up to 2^-7 ||x|| ||c|| in the distance,
// more than the gap between the two nearest of 1024 centroids for a
// large share of the points of a typical embedding set, so the split is
// the float32 correction, on every tile: no second pass over the points
// whose two best centroids are close.

#define KT_THREADS 256     // 8 warps: 4 along the points, 2 along the centroids
#define KT_BM 128          // points per block, 32 per warp
#define KT_BN 128          // centroids per tile, 64 per warp
#define KT_BK 32           // dimensions per pipeline stage
#define KT_LD (KT_BK + 8)  // bf16 per shared row: 80 bytes put an ldmatrix's eight rows in distinct banks
#define KT_TILE (KT_BM * KT_LD)
static_assert(KT_BM == KT_BN, "the four tiles of a stage have the same shape");

// kmeans_split writes hi[r, d] = bf16(v) and lo[r, d] = bf16(v - hi) for
// v = x[r, d] of x [rows, D] (any float dtype), and zeros for
// D <= d < Dp: the operands of kmeans_assign_tc, rows padded to Dp (a
// multiple of KT_BK). lo may be null (bf16 points are their own hi). One
// thread per output element, grid-stride: block 256, grid
// min(ceil(rows*Dp/256), 8192).
template <class I>
__device__ __forceinline__ void kmeans_split_loop(uint16_t* hi, uint16_t* lo, const void* x, int x_dt, I n, I D,
                                                  I Dp) {
  for (I i = (I)grid_start(); i < n; i += (I)grid_stride()) {
    I r = i / Dp, d = i % Dp;
    float v = d < D ? load_f32(x, x_dt, r * D + d) : 0.0f;
    uint16_t h = f32_to_bf16(v);
    hi[i] = h;
    if (lo != nullptr) lo[i] = f32_to_bf16(v - bf16_to_f32(h));
  }
}

extern "C" __global__ void __launch_bounds__(256)
    kmeans_split(uint16_t* hi, uint16_t* lo, const void* x, int x_dt, int rows, int D, int Dp) {
  size_t n = (size_t)rows * Dp;
  if (index_fits_32(n))
    kmeans_split_loop<unsigned>(hi, lo, x, x_dt, (unsigned)n, (unsigned)D, (unsigned)Dp);
  else
    kmeans_split_loop<size_t>(hi, lo, x, x_dt, n, (size_t)D, (size_t)Dp);
}

// kt_load_tile starts the cp.async copies of rows r0..r0+KT_BM-1, columns
// d0..d0+KT_BK-1 of src [rows, Dp] bf16 into s [KT_BM][KT_LD]; rows at or
// past `rows` are zero filled. Four 16-byte chunks per row, two per
// thread. The caller commits.
__device__ __forceinline__ void kt_load_tile(uint16_t* s, const uint16_t* src, int r0, int rows, int d0, int Dp) {
  for (int i = threadIdx.x; i < KT_BM * (KT_BK / 8); i += KT_THREADS) {
    int r = i / (KT_BK / 8), c = i % (KT_BK / 8);
    int row = r0 + r;
    const uint16_t* p = src + (size_t)min(row, rows - 1) * Dp + d0 + c * 8;
    cp_async_16(s + r * KT_LD + c * 8, p, row < rows);
  }
}

// kmeans_assign_tc and kmeans_assign_tc_split are kmeans_assign on the
// tensor cores, with the same outputs (assign I32 [N], ties to the lowest
// index; dist F32 [N] = ||x||^2 - 2 x.c + ||c||^2) from the operands of
// kmeans_split: the points' hi xh [N, Dp] (bf16 points themselves when D
// is a multiple of KT_BK) and, for kmeans_assign_tc_split (float32 or
// float16 points), their lo xl; the centroids' ch and cl [K, Dp]; Dp a
// multiple of KT_BK; the squared norms xn [N] and cn [K] of kmeans_sqnorm.
// Without xl the kernel fits in 128 registers and two blocks share an SM
// (__launch_bounds__(256, 2)); with it, 130 and one.
//
// A block takes 128 points and walks the centroids 128 at a time; each
// tile of 128 x 128 products runs over the dimensions 32 at a time, the
// four operand tiles of the next step loading (cp.async, double buffered)
// while this one's mma run. Warp (wm, wn) computes points 32wm..32wm+31
// against centroids 64wn..64wn+63 of the tile in 2 x 8 float32
// accumulator fragments. After each centroid tile every thread scores its
// 4 points against its 16 centroids, ||c||^2 - 2 x.c, and keeps its best
// per point in registers, so the argmin is the GEMM's epilogue and no
// N x K matrix exists; at the end the 4 lanes sharing a point merge with
// shuffles and the two warps sharing it through shared memory. Grid
// ceil(N/128), block 256, dynamic shared memory 2 stages x 4 tiles x
// 128 x 40 bf16 = 80 KiB.
template <bool SPLIT_X>
__device__ __forceinline__ void kmeans_assign_tc_body(int* assign, float* dist, const uint16_t* xh,
                                                      const uint16_t* xl, const float* xn, const uint16_t* ch,
                                                      const uint16_t* cl, const float* cn, int N, int K, int Dp) {
  DYNAMIC_SHARED(uint16_t, kt_smem);  // [stage][xh, xl, ch, cl][KT_BM][KT_LD]
  int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  int wm = warp >> 1, wn = warp & 1;
  int g = lane >> 2, t = lane & 3;
  int n0 = blockIdx.x * KT_BM;
  int steps = Dp / KT_BK;

  // Point i of this thread is row 32wm + 16(i >> 1) + g + 8(i & 1) of the
  // block: the rows of accumulator elements 0-1 (i even) and 2-3 (i odd)
  // of m-tile i >> 1.
  float best[4];
  int best_k[4];
#pragma unroll
  for (int i = 0; i < 4; i++) {
    best[i] = INFINITY;
    best_k[i] = 0x7fffffff;
  }

  for (int k0 = 0; k0 < K; k0 += KT_BN) {
    FragC acc[2][8];
#pragma unroll
    for (int mt = 0; mt < 2; mt++)
#pragma unroll
      for (int j = 0; j < 8; j++) acc[mt][j].x[0] = acc[mt][j].x[1] = acc[mt][j].x[2] = acc[mt][j].x[3] = 0.0f;

    // Stage s holds the tiles of dimension step s & 1 ... of this centroid
    // tile; the loads of step s + 1 start before step s computes.
    for (int s = 0; s <= steps; s++) {
      if (s < steps) {
        uint16_t* st = kt_smem + (s & 1) * 4 * KT_TILE;
        kt_load_tile(st, xh, n0, N, s * KT_BK, Dp);
        if (SPLIT_X) kt_load_tile(st + KT_TILE, xl, n0, N, s * KT_BK, Dp);
        kt_load_tile(st + 2 * KT_TILE, ch, k0, K, s * KT_BK, Dp);
        kt_load_tile(st + 3 * KT_TILE, cl, k0, K, s * KT_BK, Dp);
      }
      cp_async_commit();
      if (s == 0) continue;
      cp_async_wait<1>();  // step s - 1's tiles are in
      __syncthreads();
      const uint16_t* st = kt_smem + ((s - 1) & 1) * 4 * KT_TILE;
#pragma unroll
      for (int kk = 0; kk < KT_BK; kk += 16) {
        FragA ah[2], al[2];
#pragma unroll
        for (int mt = 0; mt < 2; mt++) {
          int row = (wm * 32 + mt * 16) * KT_LD + kk;
          ldmatrix_frag_a(ah[mt], st + row, KT_LD, lane);
          if (SPLIT_X) ldmatrix_frag_a(al[mt], st + KT_TILE + row, KT_LD, lane);
        }
#pragma unroll
        for (int nj = 0; nj < 4; nj++) {
          int row = (wn * 64 + nj * 16) * KT_LD + kk;
          FragB bh0, bh1, bl0, bl1;
          ldmatrix_frag_b2(bh0, bh1, st + 2 * KT_TILE + row, KT_LD, lane);
          ldmatrix_frag_b2(bl0, bl1, st + 3 * KT_TILE + row, KT_LD, lane);
#pragma unroll
          for (int mt = 0; mt < 2; mt++) {
            mma_bf16_m16n8k16(acc[mt][2 * nj], ah[mt], bh0);
            mma_bf16_m16n8k16(acc[mt][2 * nj], ah[mt], bl0);
            mma_bf16_m16n8k16(acc[mt][2 * nj + 1], ah[mt], bh1);
            mma_bf16_m16n8k16(acc[mt][2 * nj + 1], ah[mt], bl1);
            if (SPLIT_X) {
              mma_bf16_m16n8k16(acc[mt][2 * nj], al[mt], bh0);
              mma_bf16_m16n8k16(acc[mt][2 * nj + 1], al[mt], bh1);
            }
          }
        }
      }
      __syncthreads();  // this stage is read before step s + 1 loads into it
    }

    // The epilogue: each thread's 16 centroids, in increasing order.
#pragma unroll
    for (int j = 0; j < 8; j++) {
#pragma unroll
      for (int e = 0; e < 2; e++) {
        int k = k0 + wn * 64 + j * 8 + 2 * t + e;
        if (k < K) {
          float ck = cn[k];
#pragma unroll
          for (int i = 0; i < 4; i++) {
            float d = ck - 2.0f * acc[i >> 1][j].x[(i & 1) * 2 + e];
            if (closer(d, k, best[i], best_k[i])) {
              best[i] = d;
              best_k[i] = k;
            }
          }
        }
      }
    }
  }

  // Merge the 4 lanes of each point (lanes 4g..4g+3), then the two warps
  // (wn = 0, 1) of each point through shared memory (the pipeline's, free
  // now: the last step ended with a barrier).
#pragma unroll
  for (int i = 0; i < 4; i++) {
#pragma unroll
    for (int o = 1; o < 4; o <<= 1) {
      float ob = __shfl_xor_sync(0xffffffffu, best[i], o);
      int ok = __shfl_xor_sync(0xffffffffu, best_k[i], o);
      if (closer(ob, ok, best[i], best_k[i])) {
        best[i] = ob;
        best_k[i] = ok;
      }
    }
  }
  float* red_d = (float*)kt_smem;            // [2][KT_BM]
  int* red_k = (int*)(red_d + 2 * KT_BM);    // [2][KT_BM]
  if (t == 0) {
#pragma unroll
    for (int i = 0; i < 4; i++) {
      int r = wm * 32 + (i >> 1) * 16 + g + (i & 1) * 8;
      red_d[wn * KT_BM + r] = best[i];
      red_k[wn * KT_BM + r] = best_k[i];
    }
  }
  __syncthreads();
  int r = threadIdx.x;
  if (r < KT_BM && n0 + r < N) {
    float b = red_d[r];
    int bk = red_k[r];
    if (closer(red_d[KT_BM + r], red_k[KT_BM + r], b, bk)) {
      b = red_d[KT_BM + r];
      bk = red_k[KT_BM + r];
    }
    assign[n0 + r] = bk;
    dist[n0 + r] = xn[n0 + r] + b;
  }
}

extern "C" __global__ void __launch_bounds__(KT_THREADS, 2)
    kmeans_assign_tc(int* assign, float* dist, const uint16_t* xh, const float* xn, const uint16_t* ch,
                     const uint16_t* cl, const float* cn, int N, int K, int Dp) {
  kmeans_assign_tc_body<false>(assign, dist, xh, nullptr, xn, ch, cl, cn, N, K, Dp);
}

extern "C" __global__ void __launch_bounds__(KT_THREADS)
    kmeans_assign_tc_split(int* assign, float* dist, const uint16_t* xh, const uint16_t* xl, const float* xn,
                           const uint16_t* ch, const uint16_t* cl, const float* cn, int N, int K, int Dp) {
  kmeans_assign_tc_body<true>(assign, dist, xh, xl, xn, ch, cl, cn, N, K, Dp);
}
