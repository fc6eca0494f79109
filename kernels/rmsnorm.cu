// rmsnorm.cu: RMSNorm forward and backward (frozen weight). One block per
// row, threads striding over the row, the sums reduced by warp shuffles and
// a shared-memory step (block_sum): block 256 (any whole number of warps up to 8
// works), grid rows (kernels.go). Rows of a multiple of 8 elements, in
// 16-byte aligned tensors, are read and written 8 elements at a time
// (load8, store8): the scalar loop kept too few bytes in flight per block
// to reach the memory's rate (37% of a copy's on an H200). Each thread
// keeps its first RN_KEEP groups in registers between the sum and the
// output (the second pass read the row again: 56% of a copy's); longer
// rows read the rest twice.
#include "common.cuh"

#define RN_KEEP 2  // groups of 8 kept per thread: rows up to 4096 at block 256

// rmsnorm_forward matches tensor.CPU.RMSNorm: for a row x of length H,
// rstd = 1/sqrt(mean(x^2) + eps) in float32, n = x * rstd rounded to x's
// dtype (as HF casts it back before the weight), out = n * w rounded to
// out's dtype, and rstd saved (F32, one per row) for the backward. (The
// model has it write n1 and n2 in bf16, the frozen products' input.)
extern "C" __global__ void __launch_bounds__(256)
    rmsnorm_forward(void* out, int out_dt, float* rstd, const void* x, int x_dt, const void* w, int w_dt, int rows,
                    int H, float eps) {
  __shared__ float red[32];
  int row = blockIdx.x;
  size_t base = (size_t)row * H;
  float ss = 0.0f;
  if (H % 8 == 0 && aligned16(out) && aligned16(x) && aligned16(w)) {
    int G = H / 8;
    size_t gbase = (size_t)row * G;
    float v[RN_KEEP][8];  // the thread's first groups, kept for the second pass
#pragma unroll
    for (int u = 0; u < RN_KEEP; u++) {
      int g = threadIdx.x + u * blockDim.x;
      if (g < G) {
        load8(v[u], x, x_dt, gbase + g);
      } else {
#pragma unroll
        for (int k = 0; k < 8; k++) v[u][k] = 0.0f;
      }
    }
#pragma unroll
    for (int u = 0; u < RN_KEEP; u++)
#pragma unroll
      for (int k = 0; k < 8; k++) ss += v[u][k] * v[u][k];
    for (int g = threadIdx.x + RN_KEEP * blockDim.x; g < G; g += blockDim.x) {  // rows longer than that
      float t[8];
      load8(t, x, x_dt, gbase + g);
#pragma unroll
      for (int k = 0; k < 8; k++) ss += t[k] * t[k];
    }
    // The weight's groups for the kept ones, asked for before the
    // reduction: its barriers cover their latency, which after it every
    // thread of the block would wait out before its first store. Fetched
    // into L1, not registers: 16 more registers a thread cost 1/3 of the
    // blocks an SM holds (48 to 32 warps on sm_80). A group of 8 is 16 or
    // 32 bytes at a multiple of its size: one line.
#pragma unroll
    for (int u = 0; u < RN_KEEP; u++) {
      int g = threadIdx.x + u * blockDim.x;
      if (g < G) prefetch_l1((const char*)w + (size_t)g * 8 * (w_dt == DT_F32 ? 4 : 2));
    }
    ss = block_sum(ss, red);
    float inv = 1.0f / sqrtf(ss / (float)H + eps);
    if (threadIdx.x == 0) rstd[row] = inv;
#pragma unroll
    for (int u = 0; u < RN_KEEP; u++) {
      int g = threadIdx.x + u * blockDim.x;
      if (g < G) {
        float wv[8];
        load8(wv, w, w_dt, g);
#pragma unroll
        for (int k = 0; k < 8; k++) v[u][k] = round_to(out_dt, round_to(x_dt, v[u][k] * inv) * wv[k]);
        store8(out, out_dt, gbase + g, v[u]);
      }
    }
    for (int g = threadIdx.x + RN_KEEP * blockDim.x; g < G; g += blockDim.x) {
      float t[8], wv[8];
      load8(t, x, x_dt, gbase + g);
      load8(wv, w, w_dt, g);
#pragma unroll
      for (int k = 0; k < 8; k++) t[k] = round_to(out_dt, round_to(x_dt, t[k] * inv) * wv[k]);
      store8(out, out_dt, gbase + g, t);
    }
    return;
  }
  for (int i = threadIdx.x; i < H; i += blockDim.x) {
    float v = load_f32(x, x_dt, base + i);
    ss += v * v;
  }
  ss = block_sum(ss, red);
  float inv = 1.0f / sqrtf(ss / (float)H + eps);
  if (threadIdx.x == 0) rstd[row] = inv;
  for (int i = threadIdx.x; i < H; i += blockDim.x) {
    float n = round_to(x_dt, load_f32(x, x_dt, base + i) * inv);
    float y = round_to(out_dt, n * load_f32(w, w_dt, i));
    store_f32(out, out_dt, base + i, y);
  }
}

// rmsnorm_backward matches tensor.CPU.RMSNormBackward: with dn = dout * w
// and r the saved rstd, dx = r dn - r^3 x (dn . x) / H (written, not
// accumulated; the rounding of n in the forward counts as the identity).
extern "C" __global__ void __launch_bounds__(256)
    rmsnorm_backward(void* dx, int dx_dt, const void* dout, int dout_dt, const void* x, int x_dt, const void* w,
                     int w_dt, const float* rstd, int rows, int H) {
  __shared__ float red[32];
  int row = blockIdx.x;
  size_t base = (size_t)row * H;
  float dot = 0.0f;
  if (H % 8 == 0 && aligned16(dx) && aligned16(dout) && aligned16(x) && aligned16(w)) {
    int G = H / 8;
    size_t gbase = (size_t)row * G;
    float dn[RN_KEEP][8], v[RN_KEEP][8];  // dout * w and x of the thread's first groups
#pragma unroll
    for (int u = 0; u < RN_KEEP; u++) {
      int g = threadIdx.x + u * blockDim.x;
      if (g < G) {
        float wv[8];
        load8(dn[u], dout, dout_dt, gbase + g);
        load8(wv, w, w_dt, g);
        load8(v[u], x, x_dt, gbase + g);
#pragma unroll
        for (int k = 0; k < 8; k++) dn[u][k] *= wv[k];
      } else {
#pragma unroll
        for (int k = 0; k < 8; k++) dn[u][k] = v[u][k] = 0.0f;
      }
    }
#pragma unroll
    for (int u = 0; u < RN_KEEP; u++)
#pragma unroll
      for (int k = 0; k < 8; k++) dot += dn[u][k] * v[u][k];
    for (int g = threadIdx.x + RN_KEEP * blockDim.x; g < G; g += blockDim.x) {  // rows longer than that
      float d[8], wv[8], t[8];
      load8(d, dout, dout_dt, gbase + g);
      load8(wv, w, w_dt, g);
      load8(t, x, x_dt, gbase + g);
#pragma unroll
      for (int k = 0; k < 8; k++) dot += d[k] * wv[k] * t[k];
    }
    dot = block_sum(dot, red);
    float inv = rstd[row];
    float c = inv * inv * inv * dot / (float)H;
#pragma unroll
    for (int u = 0; u < RN_KEEP; u++) {
      int g = threadIdx.x + u * blockDim.x;
      if (g < G) {
#pragma unroll
        for (int k = 0; k < 8; k++) dn[u][k] = inv * dn[u][k] - c * v[u][k];
        store8(dx, dx_dt, gbase + g, dn[u]);
      }
    }
    for (int g = threadIdx.x + RN_KEEP * blockDim.x; g < G; g += blockDim.x) {
      float d[8], wv[8], t[8];
      load8(d, dout, dout_dt, gbase + g);
      load8(wv, w, w_dt, g);
      load8(t, x, x_dt, gbase + g);
#pragma unroll
      for (int k = 0; k < 8; k++) d[k] = inv * (d[k] * wv[k]) - c * t[k];
      store8(dx, dx_dt, gbase + g, d);
    }
    return;
  }
  for (int i = threadIdx.x; i < H; i += blockDim.x)
    dot += load_f32(dout, dout_dt, base + i) * load_f32(w, w_dt, i) * load_f32(x, x_dt, base + i);
  dot = block_sum(dot, red);
  float inv = rstd[row];
  float c = inv * inv * inv * dot / (float)H;
  for (int i = threadIdx.x; i < H; i += blockDim.x) {
    float dn = load_f32(dout, dout_dt, base + i) * load_f32(w, w_dt, i);
    store_f32(dx, dx_dt, base + i, inv * dn - c * load_f32(x, x_dt, base + i));
  }
}
