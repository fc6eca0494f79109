// adamw.cu: one AdamW step over every LoRA tensor in one launch.
#include "common.cuh"

// AdamWTensor is one row of the table the launch reads (device memory, 40
// bytes, the layout kernels.go describes): a parameter tensor, its gradient
// and its two moments, n float32 elements each.
struct AdamWTensor {
  float* p;
  const float* g;
  float* m;
  float* v;
  long long n;
};

// adamw matches tensor.CPU.AdamW (torch.optim.AdamW's single-tensor path)
// bit for bit: the caller computes in float64, as the CPU op does,
// decay = float32(1 - lr*weightDecay), step_size = float32(lr / (1 -
// beta1^step)) and bc2_sqrt = float32(sqrt(1 - beta2^step)); then for each
// element, in float32,
//	p *= decay
//	m = beta1 m + (1-beta1) g
//	v = beta2 v + (1-beta2) g g
//	p -= step_size m / (sqrt(v)/bc2_sqrt + eps)
// The _rn intrinsics keep nvcc from fusing multiplies and adds into FMAs,
// which the CPU does not do; sqrtf and '/' are IEEE-exact without
// --use_fast_math. Tensor blockIdx.y, its elements grid-stride over
// blockIdx.x: grid (min(ceil(max n/1024), 1024), tensors), block 256, a
// float4 per thread of the largest tensor (a thread per element left 3/4
// of the blocks with nothing to do: 400k blocks for Llama-3.1-8B's 448
// rank-16 tensors); tensors of a multiple of 4 elements, 16-byte aligned
// (the allocator's), take 4 at a time (float4 loads and stores), others
// one at a time.
struct AdamWConsts {
  float decay, beta1, beta2, eps, step_size, bc2_sqrt, one_m_b1, one_m_b2;
};

__device__ __forceinline__ void adamw_one(float& p, float g, float& m, float& v, const AdamWConsts& k) {
  p = __fmul_rn(p, k.decay);
  m = __fadd_rn(__fmul_rn(k.beta1, m), __fmul_rn(k.one_m_b1, g));
  v = __fadd_rn(__fmul_rn(k.beta2, v), __fmul_rn(__fmul_rn(k.one_m_b2, g), g));
  float denom = __fadd_rn(__fdiv_rn(sqrtf(v), k.bc2_sqrt), k.eps);
  p = __fsub_rn(p, __fdiv_rn(__fmul_rn(k.step_size, m), denom));
}

extern "C" __global__ void __launch_bounds__(256)
    adamw(const AdamWTensor* table, int tensors, float decay, float beta1, float beta2, float eps, float step_size,
          float bc2_sqrt) {
  if ((int)blockIdx.y >= tensors) return;
  AdamWTensor t = table[blockIdx.y];
  AdamWConsts k = {decay, beta1, beta2, eps, step_size, bc2_sqrt, __fsub_rn(1.0f, beta1), __fsub_rn(1.0f, beta2)};
  size_t done = 0;
  if (t.n % 4 == 0 && aligned16(t.p) && aligned16(t.g) && aligned16(t.m) && aligned16(t.v)) {
    float4 *p4 = (float4*)t.p, *m4 = (float4*)t.m, *v4 = (float4*)t.v;
    const float4* g4 = (const float4*)t.g;
    for (size_t i = grid_start(); i < (size_t)t.n / 4; i += grid_stride()) {
      float4 p = p4[i], g = g4[i], m = m4[i], v = v4[i];
      adamw_one(p.x, g.x, m.x, v.x, k);
      adamw_one(p.y, g.y, m.y, v.y, k);
      adamw_one(p.z, g.z, m.z, v.z, k);
      adamw_one(p.w, g.w, m.w, v.w, k);
      p4[i] = p;
      m4[i] = m;
      v4[i] = v;
    }
    done = (size_t)t.n;
  }
  for (size_t i = done + grid_start(); i < (size_t)t.n; i += grid_stride()) {
    float p = t.p[i], m = t.m[i], v = t.v[i];
    adamw_one(p, t.g[i], m, v, k);
    t.p[i] = p;
    t.m[i] = m;
    t.v[i] = v;
  }
}
