// layernorm.cu: LayerNorm with weight and bias, forward only (the encoders
// that use it are frozen). One block per row, threads striding over the
// row, sums reduced by warp shuffles and a shared-memory step (block_sum):
// block 128, grid rows (kernels.go).
#include "common.cuh"

// layernorm_forward matches tensor.CPU.LayerNorm: for a row x of length H,
// mean and biased variance in float32, two passes over the row (the second
// sums (x - mean)^2, so that a large mean does not cancel the variance),
// out = (x - mean) * rstd * w + b rounded to out's dtype, rstd =
// 1/sqrt(var + eps). b may be null (no bias).
extern "C" __global__ void __launch_bounds__(1024)
    layernorm_forward(void* out, int out_dt, const void* x, int x_dt, const void* w, int w_dt, const void* bias,
                      int bias_dt, int rows, int H, float eps) {
  __shared__ float red[32];
  int row = blockIdx.x;
  size_t base = (size_t)row * H;
  float s = 0.0f;
  for (int i = threadIdx.x; i < H; i += blockDim.x) s += load_f32(x, x_dt, base + i);
  float mean = block_sum(s, red) / (float)H;
  float ss = 0.0f;
  for (int i = threadIdx.x; i < H; i += blockDim.x) {
    float d = load_f32(x, x_dt, base + i) - mean;
    ss += d * d;
  }
  float rstd = 1.0f / sqrtf(block_sum(ss, red) / (float)H + eps);
  for (int i = threadIdx.x; i < H; i += blockDim.x) {
    float n = (load_f32(x, x_dt, base + i) - mean) * rstd * load_f32(w, w_dt, i);
    if (bias != nullptr) n += load_f32(bias, bias_dt, i);
    store_f32(out, out_dt, base + i, n);
  }
}
