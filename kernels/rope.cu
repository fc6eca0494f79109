// rope.cu: rotary position embedding in HF's rotate-half layout, forward and
// inverse (the backward). One thread per work item (a pair, or a group of 8
// pairs), grid-stride: block 256, grid min(ceil(N*heads*(D-R/2)/8/256),
// 8192) (kernels.go).
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
// Heads whose halves are multiples of 8 (half and D, with 16-byte aligned
// x, out, cos and sin: every model's) go 8 pairs at a time, an item being
// a group of 8 (load8, store8; one division per group); others one pair at
// a time. The loops count in I (see index_fits_32).
template <class I>
__device__ __forceinline__ void rope_loop(void* out, int out_dt, const void* x, int x_dt, const float* cos,
                                          const float* sin, I rows, int heads, int D, int half, int inverse) {
  if (half % 8 == 0 && D % 8 == 0 && aligned16(out) && aligned16(x) && aligned16(cos) && aligned16(sin)) {
    I per_row = (I)((D - half) / 8), items = rows * per_row;
    int hg = half / 8, Dg = D / 8;
    for (I i = (I)grid_start(); i < items; i += (I)grid_stride()) {
      I row = i / per_row;  // n * heads + h
      int j = (int)(i % per_row);
      size_t base = (size_t)row * Dg;
      if (j < hg) {
        size_t n = row / (I)heads;
        float a[8], b[8], c[8], s[8];
        load8(a, x, x_dt, base + j);
        load8(b, x, x_dt, base + hg + j);
        load8(c, cos, DT_F32, n * hg + j);
        load8(s, sin, DT_F32, n * hg + j);
#pragma unroll
        for (int k = 0; k < 8; k++) {
          float sk = inverse ? -s[k] : s[k], ak = a[k];
          a[k] = ak * c[k] - b[k] * sk;
          b[k] = b[k] * c[k] + ak * sk;
        }
        store8(out, out_dt, base + j, a);
        store8(out, out_dt, base + hg + j, b);
      } else {
        float v[8];
        load8(v, x, x_dt, base + hg + j);
        store8(out, out_dt, base + hg + j, v);
      }
    }
    return;
  }
  I per_row = (I)(D - half), items = rows * per_row;
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
  size_t rows = (size_t)N * heads;
  if (index_fits_32(rows * (size_t)(D - half)))
    rope_loop<unsigned>(out, out_dt, x, x_dt, cos, sin, (unsigned)rows, heads, D, half, inverse);
  else
    rope_loop<size_t>(out, out_dt, x, x_dt, cos, sin, rows, heads, D, half, inverse);
}
