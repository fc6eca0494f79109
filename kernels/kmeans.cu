// kmeans.cu: one Lloyd iteration of k-means on the GPU, for the COMPASS
// clustering of embeddings (sampling/). x is [N, Dm] points of any float
// dtype, c F32 [K, Dm] centroids. One iteration is:
//
//	kmeans_sqnorm(cn, c)                       cn[k] = ||c_k||^2
//	kmeans_sqnorm(xn, x)                       (once: the points do not move)
//	kmeans_assign(assign, dist, x, xn, c, cn)  nearest centroid of each point
//	zero sums F32 [K, Dm] and counts I32 [K]   (cuMemsetD32)
//	kmeans_accumulate(sums, counts, x, assign)
//	kmeans_divide(c, sums, counts)             empty clusters: count 0, c kept
//
// cgo/kmeans.go runs it (Backend.KMeansAssign, Backend.KMeansUpdate).
#include "common.cuh"

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
// 8.4 KiB.
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

// kmeans_accumulate adds each point into its cluster's sum (sums F32
// [K, Dm]) and counts it (counts I32 [K]), with atomics: the caller zeroes
// both first. The order of the float additions varies from run to run.
// One thread per element of x, grid-stride: block 256, grid
// min(ceil(N*Dm/256), 8192).
template <class I>
__device__ __forceinline__ void kmeans_accumulate_loop(float* sums, int* counts, const void* x, int x_dt,
                                                       const int* assign, I n, I Dm) {
  for (I i = (I)grid_start(); i < n; i += (I)grid_stride()) {
    I point = i / Dm, d = i % Dm;
    int k = assign[point];
    atomicAdd(&sums[(size_t)k * Dm + d], load_f32(x, x_dt, i));
    if (d == 0) atomicAdd(&counts[k], 1);
  }
}

extern "C" __global__ void __launch_bounds__(256)
    kmeans_accumulate(float* sums, int* counts, const void* x, int x_dt, const int* assign, int N, int Dm) {
  size_t n = (size_t)N * Dm;
  if (index_fits_32(n))
    kmeans_accumulate_loop<unsigned>(sums, counts, x, x_dt, assign, (unsigned)n, (unsigned)Dm);
  else
    kmeans_accumulate_loop<size_t>(sums, counts, x, x_dt, assign, n, (size_t)Dm);
}

// kmeans_divide sets each centroid with points to the mean of its points,
// c = sums / count; a centroid whose count is 0 (an empty cluster, which
// the caller finds in counts) keeps its value. One thread per element of c,
// grid-stride: block 256, grid min(ceil(K*Dm/256), 8192).
extern "C" __global__ void __launch_bounds__(256)
    kmeans_divide(float* c, const float* sums, const int* counts, int K, int Dm) {
  size_t n = (size_t)K * Dm;
  if (index_fits_32(n)) {
    for (unsigned i = (unsigned)grid_start(); i < (unsigned)n; i += (unsigned)grid_stride()) {
      int count = counts[i / (unsigned)Dm];
      if (count > 0) c[i] = sums[i] / (float)count;
    }
  } else {
    for (size_t i = grid_start(); i < n; i += grid_stride()) {
      int count = counts[i / Dm];
      if (count > 0) c[i] = sums[i] / (float)count;
    }
  }
}
