// swiglu.cu: SwiGLU forward and backward, grid-stride: block 256, grid
// min(ceil(n/256), 8192) (kernels.go); 8 elements per step with 16-byte
// accesses when every tensor is 16-byte aligned, then one per step for the
// tail.
#include "common.cuh"

// sigmoid in float32; expf(+large) = Inf gives 0, as it should. (The CPU
// computes it through a float64 exp: the two differ in the last bit or so.)
__device__ __forceinline__ float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

// swiglu_forward matches tensor.CPU.SwiGLU: out = silu(gate) * up with
// silu(g) = g * sigmoid(g), rounded once to out's dtype. (The model has it
// write bf16, the down projection's input.)
extern "C" __global__ void __launch_bounds__(256)
    swiglu_forward(void* out, int out_dt, const void* gate, int gate_dt, const void* up, int up_dt, size_t n) {
  size_t done = 0;
  if (aligned16(out) && aligned16(gate) && aligned16(up)) {
    size_t groups = n / 8;
    for (size_t g8 = grid_start(); g8 < groups; g8 += grid_stride()) {
      float g[8], u[8];
      load8(g, gate, gate_dt, g8);
      load8(u, up, up_dt, g8);
      for (int k = 0; k < 8; k++) g[k] = round_to(out_dt, g[k] * sigmoid(g[k]) * u[k]);
      store8(out, out_dt, g8, g);
    }
    done = groups * 8;
  }
  for (size_t i = done + grid_start(); i < n; i += grid_stride()) {
    float g = load_f32(gate, gate_dt, i);
    float y = round_to(out_dt, g * sigmoid(g) * load_f32(up, up_dt, i));
    store_f32(out, out_dt, i, y);
  }
}

// swiglu_backward matches tensor.CPU.SwiGLUBackward: with s = sigmoid(g),
// dgate = dout * up * s * (1 + g (1 - s)) and dup = dout * g * s (written,
// not accumulated). dgate2 and dup2, when not null, get dgate and dup
// again in their own dtypes (casts fused in: the bf16 inputs of the gate
// and up projections' frozen-weight products in the backward).
extern "C" __global__ void __launch_bounds__(256)
    swiglu_backward(void* dgate, int dgate_dt, void* dup, int dup_dt, void* dgate2, int dgate2_dt, void* dup2,
                    int dup2_dt, const void* dout, int dout_dt, const void* gate, int gate_dt, const void* up, int up_dt,
                    size_t n) {
  size_t done = 0;
  if (aligned16(dgate) && aligned16(dup) && aligned16(dgate2) && aligned16(dup2) && aligned16(dout) &&
      aligned16(gate) && aligned16(up)) {
    size_t groups = n / 8;
    for (size_t g8 = grid_start(); g8 < groups; g8 += grid_stride()) {
      float g[8], u[8], d[8], dg[8], du[8];
      load8(g, gate, gate_dt, g8);
      load8(u, up, up_dt, g8);
      load8(d, dout, dout_dt, g8);
      for (int k = 0; k < 8; k++) {
        float s = sigmoid(g[k]);
        dg[k] = round_to(dgate_dt, d[k] * u[k] * s * (1.0f + g[k] * (1.0f - s)));
        du[k] = round_to(dup_dt, d[k] * g[k] * s);
      }
      store8(dgate, dgate_dt, g8, dg);
      store8(dup, dup_dt, g8, du);
      if (dgate2 != nullptr) store8(dgate2, dgate2_dt, g8, dg);
      if (dup2 != nullptr) store8(dup2, dup2_dt, g8, du);
    }
    done = groups * 8;
  }
  for (size_t i = done + grid_start(); i < n; i += grid_stride()) {
    float g = load_f32(gate, gate_dt, i), u = load_f32(up, up_dt, i), d = load_f32(dout, dout_dt, i);
    float s = sigmoid(g);
    float dg = round_to(dgate_dt, d * u * s * (1.0f + g * (1.0f - s))), du = round_to(dup_dt, d * g * s);
    store_f32(dgate, dgate_dt, i, dg);
    store_f32(dup, dup_dt, i, du);
    if (dgate2 != nullptr) store_f32(dgate2, dgate2_dt, i, dg);
    if (dup2 != nullptr) store_f32(dup2, dup2_dt, i, du);
  }
}
