// dropout.cu: LoRA dropout (PEFT's lora_dropout) with a stateless mask. One
// thread per element, grid-stride: block 256, grid min(ceil(n/256), 8192)
// (kernels.go). The mask of element i depends on (seed, i) alone, so any
// launch shape gives the CPU backend's mask bit for bit.
#include "common.cuh"

// dropout_hash is tensor.DropoutHash: output i (from 0) of SplitMix64
// seeded with seed, a Weyl sequence through a 64-bit finalizer.
__device__ __forceinline__ unsigned long long dropout_hash(unsigned long long seed, unsigned long long i) {
  unsigned long long z = seed + (i + 1ull) * 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// dropout matches tensor.CPU.Dropout: out[i] = x[i] * (hash(seed, i) >=
// threshold ? scale : 0), with threshold = tensor.DropoutThreshold(p) and
// scale = tensor.DropoutScale(p) computed by the caller; threshold 0 (p = 0)
// is a plain copy, NaN payloads kept. out may be x.
extern "C" __global__ void __launch_bounds__(256)
    dropout(void* out, int out_dt, const void* x, int x_dt, size_t n, unsigned long long seed,
            unsigned long long threshold, float scale) {
  for (size_t i = grid_start(); i < n; i += grid_stride()) {
    float v = load_f32(x, x_dt, i);
    if (threshold != 0) v *= dropout_hash(seed, i) >= threshold ? scale : 0.0f;
    store_f32(out, out_dt, i, v);
  }
}
