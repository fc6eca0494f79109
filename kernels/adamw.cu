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
// blockIdx.x: grid (min(ceil(max n/256), 1024), tensors), block 256.
extern "C" __global__ void __launch_bounds__(256)
    adamw(const AdamWTensor* table, int tensors, float decay, float beta1, float beta2, float eps, float step_size,
          float bc2_sqrt) {
  if ((int)blockIdx.y >= tensors) return;
  AdamWTensor t = table[blockIdx.y];
  float one_m_b1 = __fsub_rn(1.0f, beta1), one_m_b2 = __fsub_rn(1.0f, beta2);
  for (size_t i = grid_start(); i < (size_t)t.n; i += grid_stride()) {
    float g = t.g[i];
    float p = __fmul_rn(t.p[i], decay);
    float m = __fadd_rn(__fmul_rn(beta1, t.m[i]), __fmul_rn(one_m_b1, g));
    float v = __fadd_rn(__fmul_rn(beta2, t.v[i]), __fmul_rn(__fmul_rn(one_m_b2, g), g));
    float denom = __fadd_rn(__fdiv_rn(sqrtf(v), bc2_sqrt), eps);
    p = __fsub_rn(p, __fdiv_rn(__fmul_rn(step_size, m), denom));
    t.p[i] = p;
    t.m[i] = m;
    t.v[i] = v;
  }
}
