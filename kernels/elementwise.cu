// elementwise.cu: dtype casts, add and mul with trailing-dimension
// broadcasting, scale, and the exact GELU of encoders. Grid-stride loops:
// block 256, grid min(ceil(n/256), 8192) (kernels.go); cast, add, mul and
// scale take 8 elements per step with 16-byte accesses (load8, store8) when
// their tensors are 16-byte aligned, then one per step for the tail. Each
// computes in float32 and rounds once, so it matches the CPU op bit for bit
// (GELU: to the last bit or so of erf).
#include "common.cuh"

// elementwise_cast matches tensor.CPU.Copy (dst and src of any float dtype):
// out[i] = in[i], rounded to nearest even, NaN payloads kept.
extern "C" __global__ void __launch_bounds__(256)
    elementwise_cast(void* out, int out_dt, const void* in, int in_dt, size_t n) {
  size_t done = 0;
  if (aligned16(out) && aligned16(in)) {
    size_t groups = n / 8;
    for (size_t g = grid_start(); g < groups; g += grid_stride()) {
      float v[8];
      load8(v, in, in_dt, g);
      store8(out, out_dt, g, v);
    }
    done = groups * 8;
  }
  for (size_t i = done + grid_start(); i < n; i += grid_stride()) store_f32(out, out_dt, i, load_f32(in, in_dt, i));
}

// binary_loop is add (mul = 0) or mul over n elements with b broadcast,
// counting in I (see index_fits_32). Groups of 8 need b's period nb to be
// a multiple of 8, so that a group of a reads a group of b. out2, when not
// null, gets out again in its own dtype (a cast of out fused in).
template <class I>
__device__ __forceinline__ void binary_loop(void* out, int out_dt, void* out2, int out2_dt, const void* a, int a_dt,
                                            const void* b, int b_dt, I n, I nb, int mul) {
  I done = 0;
  if (nb % 8 == 0 && aligned16(out) && aligned16(out2) && aligned16(a) && aligned16(b)) {
    I groups = n / 8, bgroups = nb / 8;
    for (I g = (I)grid_start(); g < groups; g += (I)grid_stride()) {
      float x[8], y[8];
      load8(x, a, a_dt, g);
      load8(y, b, b_dt, g % bgroups);
      for (int k = 0; k < 8; k++) x[k] = round_to(out_dt, mul ? x[k] * y[k] : x[k] + y[k]);
      store8(out, out_dt, g, x);
      if (out2 != nullptr) store8(out2, out2_dt, g, x);
    }
    done = groups * 8;
  }
  for (I i = done + (I)grid_start(); i < n; i += (I)grid_stride()) {
    float x = load_f32(a, a_dt, i), y = load_f32(b, b_dt, i % nb);
    float v = round_to(out_dt, mul ? x * y : x + y);
    store_f32(out, out_dt, i, v);
    if (out2 != nullptr) store_f32(out2, out2_dt, i, v);
  }
}

// elementwise_add matches tensor.CPU.Add: out[i] = a[i] + b[i % nb], where
// b has a's shape (nb = n) or its trailing dimensions (broadcast); out2, when
// not null, gets out[i] again in its dtype (Backend.AddCast: the residual
// stream's gradient and its bf16 copy for the next frozen product).
extern "C" __global__ void __launch_bounds__(256)
    elementwise_add(void* out, int out_dt, void* out2, int out2_dt, const void* a, int a_dt, const void* b, int b_dt,
                    size_t n, size_t nb) {
  if (index_fits_32(n))
    binary_loop<unsigned>(out, out_dt, out2, out2_dt, a, a_dt, b, b_dt, (unsigned)n, (unsigned)nb, 0);
  else
    binary_loop<size_t>(out, out_dt, out2, out2_dt, a, a_dt, b, b_dt, n, nb, 0);
}

// elementwise_mul matches tensor.CPU.Mul: out[i] = a[i] * b[i % nb].
extern "C" __global__ void __launch_bounds__(256)
    elementwise_mul(void* out, int out_dt, const void* a, int a_dt, const void* b, int b_dt, size_t n, size_t nb) {
  if (index_fits_32(n))
    binary_loop<unsigned>(out, out_dt, nullptr, 0, a, a_dt, b, b_dt, (unsigned)n, (unsigned)nb, 1);
  else
    binary_loop<size_t>(out, out_dt, nullptr, 0, a, a_dt, b, b_dt, n, nb, 1);
}

// elementwise_scale matches tensor.CPU.Scale: out[i] = s * a[i].
extern "C" __global__ void __launch_bounds__(256)
    elementwise_scale(void* out, int out_dt, const void* a, int a_dt, float s, size_t n) {
  size_t done = 0;
  if (aligned16(out) && aligned16(a)) {
    size_t groups = n / 8;
    for (size_t g = grid_start(); g < groups; g += grid_stride()) {
      float v[8];
      load8(v, a, a_dt, g);
      for (int k = 0; k < 8; k++) v[k] *= s;
      store8(out, out_dt, g, v);
    }
    done = groups * 8;
  }
  for (size_t i = done + grid_start(); i < n; i += grid_stride()) store_f32(out, out_dt, i, load_f32(a, a_dt, i) * s);
}

// gelu_forward matches tensor.CPU.GELU: out[i] = x/2 (1 + erf(x/sqrt(2))),
// the exact GELU, in float32 as x/2 erfc(-x/sqrt(2)): 1 + erff(...) would
// cancel for x < -2 (a relative error of 1e-4 at x = -3.3), erfcf does not.
// It matches the CPU's float64 erf to a few float32 ulps. out may be x.
extern "C" __global__ void __launch_bounds__(256) gelu_forward(void* out, int out_dt, const void* x, int x_dt, size_t n) {
  for (size_t i = grid_start(); i < n; i += grid_stride()) {
    float v = load_f32(x, x_dt, i);
    store_f32(out, out_dt, i, 0.5f * v * erfcf(v * -0.70710678118654752f));
  }
}

// ZeroTensor is one row of zero_tensors' table (device memory, 16 bytes,
// the layout kernels.go describes): a tensor's address and its size in
// bytes.
struct ZeroTensor {
  unsigned char* p;
  long long bytes;
};

// Sixteen zero bytes: one vector store.
struct __align__(16) Zero16 {
  unsigned long long lo, hi;
};

// zero_tensors sets every byte of every tensor of the table to zero: what
// Backend.ZeroTensors does for the LoRA gradients of a step in one launch
// (one memset per tensor was 448 launches per Llama-3.1-8B step, about
// 2 ms of device time on an H200). Tensor blockIdx.y, its bytes
// grid-stride over blockIdx.x: grid (min(ceil(max bytes/4096), 1024),
// tensors), block 256; 16-byte stores from a 16-byte aligned address.
extern "C" __global__ void __launch_bounds__(256) zero_tensors(const ZeroTensor* table, int tensors) {
  if ((int)blockIdx.y >= tensors) return;
  ZeroTensor t = table[blockIdx.y];
  size_t n = (size_t)t.bytes, done = 0;
  if (aligned16(t.p)) {
    Zero16* p16 = (Zero16*)t.p;
    for (size_t i = grid_start(); i < n / 16; i += grid_stride()) p16[i] = Zero16{0, 0};
    done = n / 16 * 16;
  }
  for (size_t i = done + grid_start(); i < n; i += grid_stride()) t.p[i] = 0;
}
