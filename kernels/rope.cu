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
// j >= half copies dimension j+half, one of R..D-1 (partial rotary). With
// heads2 > 0 the same launch also rotates x2 [N, heads2, D] into out2 (q
// and k of a layer in one launch: the rows of x2 follow those of x). cast
// and cast2, where not null, get the rotated values a second time, in their
// own dtype (RoPEPairCast: RoPE's inverse writes dq and dk in float32 for
// the LoRA products and in bf16 for the frozen ones; from a float32 out,
// the bits elementwise_cast would give).
//
// Heads whose halves are multiples of 8 (half and D, with 16-byte aligned
// tensors: every model's) go 8 pairs at a time, an item being a group of 8
// (load8, store8; one division per group); others one pair at a time. The
// loops count in I (see index_fits_32).
struct RopeRows {
  void* out;
  int out_dt;
  void* cast;  // null for none
  int cast_dt;
  const void* x;
  int x_dt;
  int heads;
};

// rope_row points r at the tensor row `row` of the launch falls in (x's
// rows first, then x2's), sets row to its index there and returns its token.
template <class I>
__device__ __forceinline__ size_t rope_row(RopeRows& r, I& row, const RopeRows& a, const RopeRows& b, I rows_a) {
  if (row < rows_a) {
    r = a;
  } else {
    r = b;
    row -= rows_a;
  }
  return (size_t)(row / (I)r.heads);
}

template <class I>
__device__ __forceinline__ void rope_loop(const RopeRows& a, const RopeRows& b, const float* cos, const float* sin,
                                          I rows_a, I rows, int D, int half, int inverse) {
  if (half % 8 == 0 && D % 8 == 0 && aligned16(a.out) && aligned16(a.cast) && aligned16(a.x) && aligned16(b.out) &&
      aligned16(b.cast) && aligned16(b.x) && aligned16(cos) && aligned16(sin)) {
    I per_row = (I)((D - half) / 8), items = rows * per_row;
    int hg = half / 8, Dg = D / 8;
    for (I i = (I)grid_start(); i < items; i += (I)grid_stride()) {
      I row = i / per_row;
      int j = (int)(i % per_row);
      RopeRows r;
      size_t n = rope_row(r, row, a, b, rows_a);
      size_t base = (size_t)row * Dg;
      if (j < hg) {
        float u[8], w[8], c[8], s[8];
        load8(u, r.x, r.x_dt, base + j);
        load8(w, r.x, r.x_dt, base + hg + j);
        load8(c, cos, DT_F32, n * hg + j);
        load8(s, sin, DT_F32, n * hg + j);
#pragma unroll
        for (int k = 0; k < 8; k++) {
          float sk = inverse ? -s[k] : s[k], uk = u[k];
          u[k] = uk * c[k] - w[k] * sk;
          w[k] = w[k] * c[k] + uk * sk;
        }
        store8(r.out, r.out_dt, base + j, u);
        store8(r.out, r.out_dt, base + hg + j, w);
        if (r.cast != nullptr) {
          store8(r.cast, r.cast_dt, base + j, u);
          store8(r.cast, r.cast_dt, base + hg + j, w);
        }
      } else {
        float v[8];
        load8(v, r.x, r.x_dt, base + hg + j);
        store8(r.out, r.out_dt, base + hg + j, v);
        if (r.cast != nullptr) store8(r.cast, r.cast_dt, base + hg + j, v);
      }
    }
    return;
  }
  I per_row = (I)(D - half), items = rows * per_row;
  for (I i = (I)grid_start(); i < items; i += (I)grid_stride()) {
    I row = i / per_row;
    int j = (int)(i % per_row);
    RopeRows r;
    size_t n = rope_row(r, row, a, b, rows_a);
    size_t base = (size_t)row * D;
    if (j < half) {
      float c = cos[n * half + j], s = sin[n * half + j];
      if (inverse) s = -s;
      float u = load_f32(r.x, r.x_dt, base + j), w = load_f32(r.x, r.x_dt, base + j + half);
      float ru = u * c - w * s, rw = w * c + u * s;
      store_f32(r.out, r.out_dt, base + j, ru);
      store_f32(r.out, r.out_dt, base + j + half, rw);
      if (r.cast != nullptr) {
        store_f32(r.cast, r.cast_dt, base + j, ru);
        store_f32(r.cast, r.cast_dt, base + j + half, rw);
      }
    } else {
      float v = load_f32(r.x, r.x_dt, base + j + half);
      store_f32(r.out, r.out_dt, base + j + half, v);
      if (r.cast != nullptr) store_f32(r.cast, r.cast_dt, base + j + half, v);
    }
  }
}

extern "C" __global__ void __launch_bounds__(256)
    rope(void* out, int out_dt, void* cast, int cast_dt, const void* x, int x_dt, void* out2, int out2_dt, void* cast2,
         int cast2_dt, const void* x2, int x2_dt, const float* cos, const float* sin, int N, int heads, int heads2, int D,
         int half, int inverse) {
  RopeRows a = {out, out_dt, cast, cast_dt, x, x_dt, heads};
  RopeRows b = {out2, out2_dt, cast2, cast2_dt, x2, x2_dt, heads2 > 0 ? heads2 : 1};
  size_t rows_a = (size_t)N * heads, rows = rows_a + (size_t)N * heads2;
  if (index_fits_32(rows * (size_t)(D - half)))
    rope_loop<unsigned>(a, b, cos, sin, (unsigned)rows_a, (unsigned)rows, D, half, inverse);
  else
    rope_loop<size_t>(a, b, cos, sin, rows_a, rows, D, half, inverse);
}
