// swiglu.cu: SwiGLU forward and backward, one thread per element,
// grid-stride: block 256, grid min(ceil(n/256), 8192) (kernels.go).
#include "common.cuh"

// sigmoid in float32; expf(+large) = Inf gives 0, as it should. (The CPU
// computes it through a float64 exp: the two differ in the last bit or so.)
__device__ __forceinline__ float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

// swiglu_forward matches tensor.CPU.SwiGLU: out = silu(gate) * up with
// silu(g) = g * sigmoid(g).
extern "C" __global__ void __launch_bounds__(256)
    swiglu_forward(void* out, int out_dt, const void* gate, int gate_dt, const void* up, int up_dt, size_t n) {
  for (size_t i = grid_start(); i < n; i += grid_stride()) {
    float g = load_f32(gate, gate_dt, i);
    store_f32(out, out_dt, i, g * sigmoid(g) * load_f32(up, up_dt, i));
  }
}

// swiglu_backward matches tensor.CPU.SwiGLUBackward: with s = sigmoid(g),
// dgate = dout * up * s * (1 + g (1 - s)) and dup = dout * g * s (written,
// not accumulated).
extern "C" __global__ void __launch_bounds__(256)
    swiglu_backward(void* dgate, int dgate_dt, void* dup, int dup_dt, const void* dout, int dout_dt,
                    const void* gate, int gate_dt, const void* up, int up_dt, size_t n) {
  for (size_t i = grid_start(); i < n; i += grid_stride()) {
    float g = load_f32(gate, gate_dt, i), u = load_f32(up, up_dt, i), d = load_f32(dout, dout_dt, i);
    float s = sigmoid(g);
    store_f32(dgate, dgate_dt, i, d * u * s * (1.0f + g * (1.0f - s)));
    store_f32(dup, dup_dt, i, d * g * s);
  }
}
