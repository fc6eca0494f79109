// rope.cu: rotary position embedding in HF's rotate-half layout, forward and
// inverse (the backward). One thread per work item, grid-stride: block 256,
// grid min(ceil(N*heads*(D-R/2)/256), 8192) (kernels.go).
#include "common.cuh"

// rope matches tensor.CPU.RoPE. x and out are [N, heads, D] (out may be x:
// every item reads its elements before writing them); cos and sin are F32
// [N, R/2] with half = R/2. A row (token n, head h) has D-half items:
// item j < half rotates the pair (j, j+half),
//	out[j]      = x[j] c - x[j+half] s
//	out[j+half] = x[j+half] c + x[j] s
// with c = cos[n, j] and s = sin[n, j] (s negated for the inverse), and item
// j >= half copies dimension j+half, one of R..D-1 (partial rotary).
//
// The loop counts in I (see index_fits_32).
template <class I>
__device__ __forceinline__ void rope_loop(void* out, int out_dt, const void* x, int x_dt, const float* cos,
                                          const float* sin, I items, I per_row, int heads, int D, int half,
                                          int inverse) {
  for (I i = (I)grid_start(); i < items; i += (I)grid_stride()) {
    I row = i / per_row;  // n * heads + h
    int j = (int)(i % per_row);
    size_t base = (size_t)row * D;
    if (j < half) {
      size_t n = row / (I)heads;
      float c = cos[n * half + j], s = sin[n * half + j];
      if (inverse) s = -s;
      float a = load_f32(x, x_dt, base + j), b = load_f32(x, x_dt, base + j + half);
      store_f32(out, out_dt, base + j, a * c - b * s);
      store_f32(out, out_dt, base + j + half, b * c + a * s);
    } else {
      store_f32(out, out_dt, base + j + half, load_f32(x, x_dt, base + j + half));
    }
  }
}

extern "C" __global__ void __launch_bounds__(256)
    rope(void* out, int out_dt, const void* x, int x_dt, const float* cos, const float* sin, int N, int heads, int D,
         int half, int inverse) {
  size_t per_row = (size_t)(D - half);
  size_t items = (size_t)N * heads * per_row;
  if (index_fits_32(items))
    rope_loop<unsigned>(out, out_dt, x, x_dt, cos, sin, (unsigned)items, (unsigned)per_row, heads, D, half, inverse);
  else
    rope_loop<size_t>(out, out_dt, x, x_dt, cos, sin, items, per_row, heads, D, half, inverse);
}
