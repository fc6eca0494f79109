// embedding.cu: the token-embedding gather and its backward (scatter-add),
// grid-stride: block 256, grid min(ceil(N*H/8/256), 8192) for the gather (a
// thread per group of 8 elements) and min(ceil(N*H/256), 8192) for the
// scatter (a thread per element of dout) (kernels.go).
#include "common.cuh"

// embedding_forward matches tensor.CPU.Embedding: out[i, :] = table[ids[i], :]
// for N ids into a [V, H] table. An id outside [0, V) cannot be an error on
// the GPU: its row is written as zeros and the lowest such position is
// recorded in *bad, which the caller sets to INT_MAX (0x7fffffff) before the
// launch and checks after it, so that the error names the position the CPU
// op would. Rows of a multiple of 8 elements in 16-byte aligned tensors go
// 8 elements at a time (load8, store8), one division per group; otherwise
// one element at a time.
// The loop counts in I (see index_fits_32).
template <class I>
__device__ __forceinline__ void embedding_forward_loop(void* out, int out_dt, const void* table, int table_dt,
                                                       const int* ids, I n, I H, int V, int* bad) {
  if (H % 8 == 0 && aligned16(out) && aligned16(table)) {
    I G = H / 8, groups = n / 8;
    for (I i = (I)grid_start(); i < groups; i += (I)grid_stride()) {
      I row = i / G, g = i % G;
      int id = ids[row];
      float v[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
      if (id < 0 || id >= V) {
        atomicMin(bad, (int)row);
      } else {
        load8(v, table, table_dt, (size_t)id * G + g);
      }
      store8(out, out_dt, i, v);
    }
    return;
  }
  for (I i = (I)grid_start(); i < n; i += (I)grid_stride()) {
    I row = i / H, j = i % H;
    int id = ids[row];
    if (id < 0 || id >= V) {
      atomicMin(bad, (int)row);
      store_f32(out, out_dt, i, 0.0f);
      continue;
    }
    store_f32(out, out_dt, i, load_f32(table, table_dt, (size_t)id * H + j));
  }
}

extern "C" __global__ void __launch_bounds__(256)
    embedding_forward(void* out, int out_dt, const void* table, int table_dt, const int* ids, int N, int H, int V,
                      int* bad) {
  size_t n = (size_t)N * H;
  if (index_fits_32(n))
    embedding_forward_loop<unsigned>(out, out_dt, table, table_dt, ids, (unsigned)n, (unsigned)H, V, bad);
  else
    embedding_forward_loop<size_t>(out, out_dt, table, table_dt, ids, n, (size_t)H, V, bad);
}

// embedding_backward adds dout [N, H] into the rows ids select of dtable
// F32 [V, H] (accumulated: the caller zeroes dtable first). Rows repeat when
// ids repeat, hence the float atomics; the order of the additions, and so
// the last bits, vary from run to run. Ids outside [0, V) are skipped
// (embedding_forward reported them). No CPU op has this backward (compass
// keeps embeddings frozen); the test checks it against a float64 sum.
template <class I>
__device__ __forceinline__ void embedding_backward_loop(float* dtable, const void* dout, int dout_dt, const int* ids,
                                                        I n, I H, int V) {
  for (I i = (I)grid_start(); i < n; i += (I)grid_stride()) {
    I row = i / H, j = i % H;
    int id = ids[row];
    if (id < 0 || id >= V) continue;
    atomicAdd(&dtable[(size_t)id * H + j], load_f32(dout, dout_dt, i));
  }
}

extern "C" __global__ void __launch_bounds__(256)
    embedding_backward(float* dtable, const void* dout, int dout_dt, const int* ids, int N, int H, int V) {
  size_t n = (size_t)N * H;
  if (index_fits_32(n))
    embedding_backward_loop<unsigned>(dtable, dout, dout_dt, ids, (unsigned)n, (unsigned)H, V);
  else
    embedding_backward_loop<size_t>(dtable, dout, dout_dt, ids, n, (size_t)H, V);
}
