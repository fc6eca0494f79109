// thin.cu: float32 products with one dimension of at most 16, the shapes
// of LoRA's products at rank r <= 16 (model/forward.go: linearForward,
// groupBackward, adapterInputBackward). With x [N, in], A [r, in],
// B [out, r], dy [N, out]:
//
//	t  = x A^T,   dt = s dy B       thin_narrow: C [M, n <= 16], a long K
//	y  = s t B^T, dx = dt A (+= C)  thin_small_k: K <= 16
//	dA += dt^T x, dB += s dy^T t    thin_rows: a sum over the N rows of both
//	                                operands, C [r, in] or C [out, r]
//
// cuBLAS's float32 kernels pad the side of 16 to their tiles: on an H200
// x A^T ([2048, 4096] x [4096, 16]) took 34 us where reading x once takes
// 8. These kernels are shaped for the thin side, so that they are bound by
// reading (or writing) the one large operand. They multiply and add in
// float32 on the CUDA cores, as cuBLAS's SGEMM does, in another order.
// thin_narrow and thin_rows split their sum into parts that thin_reduce
// adds in a fixed order: the results do not depend on timing.
#include "common.cuh"

#define THIN_R 16  // the thin side, at most

// ---- thin_small_k: C [M, N] = alpha A [M, K] opB [K, N] + beta C, K <= 16.
// A row-major (row stride lda); opB(k, j) = b[k * sbk + j * sbn]; C
// row-major with rows of N. Block 256: 64 column quads x 4 row lanes over a
// tile of 64 rows x 256 columns; grid (ceil(N/256), ceil(M/64)). Each
// thread keeps its 4 columns of opB in registers and runs down the rows.
#define SK_BM 64
#define SK_BN 256
#define SK_LDB (SK_BN + 4)  // pad: the staging stores hit 8 banks, not 1; rows stay 16-byte aligned

extern "C" __global__ void __launch_bounds__(256)
    thin_small_k(float* c, const float* a, long long lda, const float* b, long long sbk, long long sbn, int M,
                 int N, int K, float alpha, float beta) {
  __shared__ __align__(16) float bs[THIN_R * SK_LDB];
  __shared__ __align__(16) float as[SK_BM * THIN_R];
  int m0 = blockIdx.y * SK_BM, n0 = blockIdx.x * SK_BN;
  // Stage opB's tile (zero past K and N) in the order that reads b along
  // its contiguous dimension, and A's rows (zero past K and M).
  // The staging loops are unrolled with their loads first: a rolled loop
  // waited for each load before the next (on an H200 the kernels ran at a
  // fifth of the memory's rate).
  float vb[THIN_R * SK_BN / 256], va[SK_BM * THIN_R / 256];
#pragma unroll
  for (int u = 0; u < THIN_R * SK_BN / 256; u++) {
    int i = threadIdx.x + 256 * u, k, j;
    if (sbk == 1) {
      j = i / THIN_R, k = i % THIN_R;
    } else {
      k = i / SK_BN, j = i % SK_BN;
    }
    vb[u] = k < K && n0 + j < N ? b[(long long)k * sbk + (long long)(n0 + j) * sbn] : 0.0f;
  }
#pragma unroll
  for (int u = 0; u < SK_BM * THIN_R / 256; u++) {
    int i = threadIdx.x + 256 * u, r = i / THIN_R, k = i % THIN_R;
    va[u] = k < K && m0 + r < M ? a[(long long)(m0 + r) * lda + k] : 0.0f;
  }
#pragma unroll
  for (int u = 0; u < THIN_R * SK_BN / 256; u++) {
    int i = threadIdx.x + 256 * u, k, j;
    if (sbk == 1) {
      j = i / THIN_R, k = i % THIN_R;
    } else {
      k = i / SK_BN, j = i % SK_BN;
    }
    bs[k * SK_LDB + j] = vb[u];
  }
#pragma unroll
  for (int u = 0; u < SK_BM * THIN_R / 256; u++) as[threadIdx.x + 256 * u] = va[u];
  __syncthreads();
  int tx = threadIdx.x % (SK_BN / 4), ty = threadIdx.x / (SK_BN / 4);
  float breg[THIN_R][4];
#pragma unroll
  for (int k = 0; k < THIN_R; k++)
#pragma unroll
    for (int q = 0; q < 4; q++) breg[k][q] = bs[k * SK_LDB + 4 * tx + q];
  int col = n0 + 4 * tx;
  bool vec = col + 3 < N && (N & 3) == 0 && aligned16(c);  // whole aligned quads: one 16-byte access
  for (int r = ty; r < SK_BM && m0 + r < M; r += 256 / (SK_BN / 4)) {  // blocks of 256 threads (kernels.go)
    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
    for (int k = 0; k < THIN_R; k++) {
      float av = as[r * THIN_R + k];
#pragma unroll
      for (int q = 0; q < 4; q++) acc[q] += av * breg[k][q];
    }
    size_t row = (size_t)(m0 + r) * N;
    if (vec) {
      float4 o;
      if (beta != 0.0f) {
        float4 p = *reinterpret_cast<const float4*>(c + row + col);
        o = make_float4(alpha * acc[0] + beta * p.x, alpha * acc[1] + beta * p.y, alpha * acc[2] + beta * p.z,
                        alpha * acc[3] + beta * p.w);
      } else {
        o = make_float4(alpha * acc[0], alpha * acc[1], alpha * acc[2], alpha * acc[3]);
      }
      *reinterpret_cast<float4*>(c + row + col) = o;
    } else {
      for (int q = 0; q < 4 && col + q < N; q++) {
        float v = alpha * acc[q];
        if (beta != 0.0f) v += beta * c[row + col + q];
        c[row + col + q] = v;
      }
    }
  }
}

// ---- thin_narrow: C [M, n] = alpha A [M, K] opB [K, n] + beta C, n <= 16,
// K long. A row-major (lda, rows 16-byte aligned: lda % 4 == 0 and a
// aligned, checked by the caller); opB(k, j) = b[k * sbk + j * sbn]. Block
// 256 = 8 warps, each warp 4 rows (32 rows a block); grid
// (ceil(M/32), parts): part p sums k in [p*kpart, (p+1)*kpart), kpart a
// multiple of NA_BK. A lane reads 4 consecutive k of each of its warp's 4
// rows (16 bytes) and multiplies them with opB's rows for those k, staged
// in shared memory as [j][k] so that the lane's 4 k are one 16-byte read.
// With one part the block writes C (alpha, beta); else it writes its sums
// to part[p][m][j] (16 columns a row) for thin_reduce.
#define NA_BK 128  // k per staged tile: 32 lanes x 4
#define NA_ROWS 4  // rows per warp

extern "C" __global__ void __launch_bounds__(256)
    thin_narrow(float* c, float* part, const float* a, long long lda, const float* b, long long sbk, long long sbn,
                int M, int n, int K, int kpart, float alpha, float beta) {
  __shared__ __align__(16) float bs[THIN_R * NA_BK];
  int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  int m0 = blockIdx.x * 32 + warp * NA_ROWS;
  int kbeg = blockIdx.y * kpart, kend = min(K, kbeg + kpart);
  float acc[NA_ROWS][THIN_R];
#pragma unroll
  for (int r = 0; r < NA_ROWS; r++)
#pragma unroll
    for (int j = 0; j < THIN_R; j++) acc[r][j] = 0.0f;

  for (int k0 = kbeg; k0 < kend; k0 += NA_BK) {
    // Loads first (this tile's opB, then the warp's rows of A), then the
    // barrier, so that all are in flight at once.
    float vb[THIN_R * NA_BK / 256];
#pragma unroll
    for (int u = 0; u < THIN_R * NA_BK / 256; u++) {  // blocks of 256 threads (kernels.go)
      int i = threadIdx.x + 256 * u, j, kk;
      if (sbk == 1) {
        j = i / NA_BK, kk = i % NA_BK;
      } else {
        kk = i / THIN_R, j = i % THIN_R;
      }
      vb[u] = j < n && k0 + kk < kend ? b[(long long)(k0 + kk) * sbk + (long long)j * sbn] : 0.0f;
    }
    int k = k0 + 4 * lane;
    float4 x[NA_ROWS];
#pragma unroll
    for (int r = 0; r < NA_ROWS; r++) {
      x[r] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
      int m = m0 + r;
      if (m < M) {
        const float* p = a + (long long)m * lda + k;
        if (k + 3 < kend) {
          x[r] = *reinterpret_cast<const float4*>(p);
        } else {  // the end of the part (or of K): element by element
          if (k < kend) x[r].x = p[0];
          if (k + 1 < kend) x[r].y = p[1];
          if (k + 2 < kend) x[r].z = p[2];
        }
      }
    }
    __syncthreads();  // the previous tile is read
#pragma unroll
    for (int u = 0; u < THIN_R * NA_BK / 256; u++) {
      int i = threadIdx.x + 256 * u, j, kk;
      if (sbk == 1) {
        j = i / NA_BK, kk = i % NA_BK;
      } else {
        kk = i / THIN_R, j = i % THIN_R;
      }
      bs[j * NA_BK + kk] = vb[u];
    }
    __syncthreads();
#pragma unroll
    for (int j = 0; j < THIN_R; j++) {
      float4 w = *reinterpret_cast<const float4*>(&bs[j * NA_BK + 4 * lane]);
#pragma unroll
      for (int r = 0; r < NA_ROWS; r++) acc[r][j] += x[r].x * w.x + x[r].y * w.y + x[r].z * w.z + x[r].w * w.w;
    }
  }
  // Sum over the warp's lanes through shared memory, a row at a time: lane
  // j < n adds column j of its warp's 32 partial rows (in lane order).
  __shared__ float red[8 * 32 * (THIN_R + 1)];  // + 1: the column reads hit 32 banks
  float* mine = red + warp * 32 * (THIN_R + 1);
#pragma unroll
  for (int r = 0; r < NA_ROWS; r++) {  // unrolled, as every loop over acc: acc stays in registers
    __syncthreads();  // the previous row's sums are read
#pragma unroll
    for (int j = 0; j < THIN_R; j++) mine[lane * (THIN_R + 1) + j] = acc[r][j];
    __syncthreads();
    int m = m0 + r;
    if (lane < n && m < M) {
      float sum = 0.0f;
      for (int l = 0; l < 32; l++) sum += mine[l * (THIN_R + 1) + lane];
      if (gridDim.y == 1) {
        size_t o = (size_t)m * n + lane;
        float v = alpha * sum;
        if (beta != 0.0f) v += beta * c[o];
        c[o] = v;
      } else {
        part[((size_t)blockIdx.y * M + m) * THIN_R + lane] = sum;
      }
    }
  }
}

// ---- thin_rows: out(j, col) = sum over k of s[k][j] g[k][col], j < ns <= 16,
// col < ng: s [K, ns] and g [K, ng] row-major (rows lds and ldg; g's rows
// 16-byte aligned: ldg % 4 == 0 and g aligned, checked by the caller).
// Block 256 = 8 warps over 128 columns of g (a lane's 4 consecutive columns,
// one 16-byte read a row); the warps take turns over the rows of the
// block's part, then add their sums in shared memory (a fixed tree). Grid
// (ceil(ng/128), parts), part p the rows [p*kpart, (p+1)*kpart). The block
// writes part[p][j][col] (ng columns a row) for thin_reduce, which writes C
// as [ns, ng] or as its transpose.
#define RO_COLS 128
#define RO_BK 64  // rows of s staged at a time

extern "C" __global__ void __launch_bounds__(256)
    thin_rows(float* part, const float* s, long long lds, const float* g, long long ldg, int ns, int ng, int K,
              int kpart) {
  __shared__ __align__(16) float ss[RO_BK * THIN_R];
  __shared__ __align__(16) float red[4 * 32 * 4 * THIN_R];  // 4 warps' sums at a time: 32 KiB
  int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  int col = blockIdx.x * RO_COLS + 4 * lane;
  int kbeg = blockIdx.y * kpart, kend = min(K, kbeg + kpart);
  bool full = col + 3 < ng;
  float acc[THIN_R][4];
#pragma unroll
  for (int j = 0; j < THIN_R; j++)
#pragma unroll
    for (int q = 0; q < 4; q++) acc[j][q] = 0.0f;

  for (int k0 = kbeg; k0 < kend; k0 += RO_BK) {
    // Loads first (s's rows for the tile, then the warp's 8 rows of g),
    // then the barrier: all in flight at once.
    float vs[RO_BK * THIN_R / 256];
#pragma unroll
    for (int u = 0; u < RO_BK * THIN_R / 256; u++) {  // blocks of 256 threads (kernels.go)
      int i = threadIdx.x + 256 * u, kk = i / THIN_R, j = i % THIN_R;
      vs[u] = j < ns && k0 + kk < kend ? s[(long long)(k0 + kk) * lds + j] : 0.0f;
    }
    float4 v[RO_BK / 8];
#pragma unroll
    for (int u = 0; u < RO_BK / 8; u++) {
      int kk = warp + 8 * u;
      v[u] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
      if (k0 + kk < kend) {
        const float* p = g + (long long)(k0 + kk) * ldg + col;
        if (full) {
          v[u] = *reinterpret_cast<const float4*>(p);
        } else {
          if (col < ng) v[u].x = p[0];
          if (col + 1 < ng) v[u].y = p[1];
          if (col + 2 < ng) v[u].z = p[2];
        }
      }
    }
    __syncthreads();  // the previous rows of s are read
#pragma unroll
    for (int u = 0; u < RO_BK * THIN_R / 256; u++) ss[threadIdx.x + 256 * u] = vs[u];
    __syncthreads();
#pragma unroll
    for (int u = 0; u < RO_BK / 8; u++) {
      int kk = warp + 8 * u;  // rows past the part are zeros in v and ss
#pragma unroll
      for (int j = 0; j < THIN_R; j++) {
        float sv = ss[kk * THIN_R + j];
        acc[j][0] += sv * v[u].x;
        acc[j][1] += sv * v[u].y;
        acc[j][2] += sv * v[u].z;
        acc[j][3] += sv * v[u].w;
      }
    }
  }
  // Warps 4..7 hand their sums to 0..3, then 2..3 to 0..1, then 1 to 0.
  for (int half = 4; half >= 1; half >>= 1) {
    __syncthreads();
    if (warp >= half && warp < 2 * half) {
      float* r = red + ((warp - half) * 32 + lane) * 4 * THIN_R;
#pragma unroll
      for (int j = 0; j < THIN_R; j++)
#pragma unroll
        for (int q = 0; q < 4; q++) r[j * 4 + q] = acc[j][q];
    }
    __syncthreads();
    if (warp < half) {
      const float* r = red + (warp * 32 + lane) * 4 * THIN_R;
#pragma unroll
      for (int j = 0; j < THIN_R; j++)
#pragma unroll
        for (int q = 0; q < 4; q++) acc[j][q] += r[j * 4 + q];
    }
  }
  if (warp != 0) return;
#pragma unroll
  for (int j = 0; j < THIN_R; j++)
#pragma unroll
    for (int q = 0; q < 4; q++)
      if (j < ns && col + q < ng) part[((size_t)blockIdx.y * ns + j) * ng + col + q] = acc[j][q];
}

// ---- thin_reduce: C(i, j) = alpha sum over p of part[p][i][j] + beta C(i, j)
// for i < rows, j < cols, the parts added in order p = 0, 1, ...; part's
// rows are pld apart, parts rows * pld apart; C(i, j) is c[i * ldc + j], or
// with transposed c[j * ldc + i]. One thread per element, grid-stride
// (block 256).
extern "C" __global__ void __launch_bounds__(256)
    thin_reduce(float* c, long long ldc, int transposed, const float* part, long long pld, int parts, int rows,
                int cols, float alpha, float beta) {
  size_t n = (size_t)rows * cols;
  for (size_t e = grid_start(); e < n; e += grid_stride()) {
    size_t i = e / cols, j = e % cols;
    float sum = 0.0f;
    for (int p = 0; p < parts; p++) sum += part[((size_t)p * rows + i) * pld + j];
    size_t o = transposed ? j * ldc + i : i * ldc + j;
    float v = alpha * sum;
    if (beta != 0.0f) v += beta * c[o];
    c[o] = v;
  }
}
