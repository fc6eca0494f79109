// common.cuh: what every kernel shares: dtype codes, the float32 <->
// bfloat16/float16 conversions of tensor/convert.go, loads and stores of any
// float dtype, and warp/block reductions.
//
// Kernels take each tensor as a pointer plus a dtype code (the values of
// tensor.DType) and compute in float32, as the CPU backend does: values are
// widened on load and rounded once on store. The dtype switch is the same
// for every thread of a launch, so it costs a few instructions per element,
// not divergence; specialised instantiations can come when measurements ask.
#pragma once

#include "emu/cuda_emu.h"

// Dtype codes: tensor.DType's values.
#define DT_F32 1
#define DT_BF16 2
#define DT_F16 3

// IGNORE_INDEX is the label of a position that does not count in the loss.
#define IGNORE_INDEX (-100)

// The conversions are tensor/convert.go's, bit for bit: round to nearest
// even; NaN keeps its sign and top payload bits (cuda_bf16.h's conversions
// would return the canonical NaN instead); float16 subnormals are exact.
__device__ __forceinline__ float bf16_to_f32(uint16_t h) { return __uint_as_float((uint32_t)h << 16); }

__device__ __forceinline__ uint16_t f32_to_bf16(float f) {
  uint32_t b = __float_as_uint(f);
  if ((b & 0x7fffffffu) > 0x7f800000u) {  // NaN: truncate, keep it a NaN
    uint16_t h = (uint16_t)(b >> 16);
    if ((h & 0x7f) == 0) h |= 0x40;
    return h;
  }
  return (uint16_t)((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);
}

__device__ __forceinline__ float f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  uint32_t e = (h >> 10) & 0x1fu, man = h & 0x3ffu;
  if (e == 0x1f) return __uint_as_float(sign | 0x7f800000u | (man << 13));  // Inf, NaN
  if (e != 0) return __uint_as_float(sign | ((e + 127u - 15u) << 23) | (man << 13));
  float f = (float)man * 5.9604644775390625e-8f;  // zero or subnormal: man * 2^-24, exact
  return sign ? -f : f;
}

__device__ __forceinline__ uint16_t f32_to_f16(float f) {
  uint32_t b = __float_as_uint(f);
  uint16_t sign = (uint16_t)((b >> 16) & 0x8000u);
  uint32_t a = b & 0x7fffffffu;
  if (a > 0x7f800000u) {  // NaN
    uint16_t h = (uint16_t)((a >> 13) & 0x3ffu);
    return sign | 0x7c00u | (h == 0 ? 0x200u : h);
  }
  if (a >= 0x477ff000u) return sign | 0x7c00u;  // >= 65520 rounds to Inf
  if (a >= 0x38800000u) {                        // normal in float16
    uint32_t v = a - ((127u - 15u) << 23);
    v += 0xfffu + ((v >> 13) & 1u);
    return sign | (uint16_t)(v >> 13);
  }
  if (a < 0x33000000u) return sign;  // < 2^-25 rounds to zero
  uint32_t e = a >> 23, man = (a & 0x7fffffu) | 0x800000u;
  uint32_t shift = 126u - e;  // 14..24: units of 2^-24
  uint32_t half = 1u << (shift - 1), rest = man & ((1u << shift) - 1), q = man >> shift;
  if (rest > half || (rest == half && (q & 1u))) q++;
  return sign | (uint16_t)q;
}

// load_f32 reads element i of a tensor of dtype dt, widened to float32.
__device__ __forceinline__ float load_f32(const void* p, int dt, size_t i) {
  if (dt == DT_BF16) return bf16_to_f32(static_cast<const uint16_t*>(p)[i]);
  if (dt == DT_F16) return f16_to_f32(static_cast<const uint16_t*>(p)[i]);
  return static_cast<const float*>(p)[i];
}

// store_f32 rounds v to dtype dt and writes it as element i.
__device__ __forceinline__ void store_f32(void* p, int dt, size_t i, float v) {
  if (dt == DT_BF16) {
    static_cast<uint16_t*>(p)[i] = f32_to_bf16(v);
  } else if (dt == DT_F16) {
    static_cast<uint16_t*>(p)[i] = f32_to_f16(v);
  } else {
    static_cast<float*>(p)[i] = v;
  }
}

// round_to returns v rounded to dtype dt (and widened back).
__device__ __forceinline__ float round_to(int dt, float v) {
  if (dt == DT_BF16) return bf16_to_f32(f32_to_bf16(v));
  if (dt == DT_F16) return f16_to_f32(f32_to_f16(v));
  return v;
}

// Butterfly reductions: every lane ends with the result. Every lane of the
// warp must take part (and, under the emulator, every thread of the block).
__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// block_sum and block_max reduce over a 1D block of whole warps (at most
// 1024 threads); every thread gets the result. red is 32 floats of shared
// memory. The first barrier protects red from a previous call's readers.
__device__ __forceinline__ float block_sum(float v, float* red) {
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  v = warp_sum(v);
  __syncthreads();
  if (lane == 0) red[warp] = v;
  __syncthreads();
  return warp_sum(lane < nwarps ? red[lane] : 0.0f);
}
__device__ __forceinline__ float block_max(float v, float* red) {
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) red[warp] = v;
  __syncthreads();
  return warp_max(lane < nwarps ? red[lane] : -INFINITY);
}

// Grid-stride loop bounds for one-thread-per-element kernels.
__device__ __forceinline__ size_t grid_start() { return (size_t)blockIdx.x * blockDim.x + threadIdx.x; }
__device__ __forceinline__ size_t grid_stride() { return (size_t)gridDim.x * blockDim.x; }

// index_fits_32 says whether a grid-stride loop over n elements may count
// in 32 bits: below 2^31 elements, i + stride stays below 2^32 (a grid is
// at most 8192 blocks of 1024 threads). The kernels whose loops divide or
// take a modulo per element run a 32-bit copy of the loop then: on the GPU
// a 64-bit division is a long software routine, in loops otherwise bound
// by memory.
__device__ __forceinline__ bool index_fits_32(size_t n) { return n <= 0x7fffffffu; }

// Groups of 8 consecutive elements for the memory-bound kernels: one
// 16-byte load or store per group of a 16-bit dtype, two of F32 (a scalar
// loop of 2- or 4-byte accesses keeps fewer bytes in flight than the copy
// engine's rate needs). Element 8g is the group's first; the tensor's
// address must be 16-byte aligned (aligned16), which the caching
// allocator's blocks are and a view at an odd offset may not be: the
// kernels check, and take their scalar loop when it is not.
struct __align__(16) word4 {
  uint32_t w[4];
};

__device__ __forceinline__ bool aligned16(const void* p) { return ((size_t)p & 15) == 0; }

// prefetch_l1 asks for the 128-byte line holding p to be brought into L1,
// holding no register while it comes (a hint: the GPU may drop it). The
// emulator has no cache: nothing to do.
#ifdef __CUDACC__
__device__ __forceinline__ void prefetch_l1(const void* p) { asm volatile("prefetch.global.L1 [%0];\n" ::"l"(p)); }
#else
inline void prefetch_l1(const void*) {}
#endif

// load8 widens elements 8g..8g+7 of a tensor of dtype dt into v.
__device__ __forceinline__ void load8(float v[8], const void* p, int dt, size_t g) {
  const word4* q = static_cast<const word4*>(p);
  if (dt == DT_F32) {
    word4 a = q[2 * g], b = q[2 * g + 1];
    for (int k = 0; k < 4; k++) {
      v[k] = __uint_as_float(a.w[k]);
      v[4 + k] = __uint_as_float(b.w[k]);
    }
    return;
  }
  word4 a = q[g];
  for (int k = 0; k < 4; k++) {  // little-endian: the lower half is the earlier element
    uint16_t lo = (uint16_t)(a.w[k] & 0xffffu), hi = (uint16_t)(a.w[k] >> 16);
    v[2 * k] = dt == DT_BF16 ? bf16_to_f32(lo) : f16_to_f32(lo);
    v[2 * k + 1] = dt == DT_BF16 ? bf16_to_f32(hi) : f16_to_f32(hi);
  }
}

// store8 rounds v to dtype dt and writes it as elements 8g..8g+7.
__device__ __forceinline__ void store8(void* p, int dt, size_t g, const float v[8]) {
  word4* q = static_cast<word4*>(p);
  if (dt == DT_F32) {
    word4 a, b;
    for (int k = 0; k < 4; k++) {
      a.w[k] = __float_as_uint(v[k]);
      b.w[k] = __float_as_uint(v[4 + k]);
    }
    q[2 * g] = a;
    q[2 * g + 1] = b;
    return;
  }
  word4 a;
  for (int k = 0; k < 4; k++) {
    uint16_t lo = dt == DT_BF16 ? f32_to_bf16(v[2 * k]) : f32_to_f16(v[2 * k]);
    uint16_t hi = dt == DT_BF16 ? f32_to_bf16(v[2 * k + 1]) : f32_to_f16(v[2 * k + 1]);
    a.w[k] = (uint32_t)lo | ((uint32_t)hi << 16);
  }
  q[g] = a;
}
