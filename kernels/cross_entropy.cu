// cross_entropy.cu: the causal-LM loss fused with lm_head and its backward,
// over vocabulary chunks, as tensor.CPU.CrossEntropy computes it. The two
// products per chunk are cuBLAS calls made by the Go side; these kernels do
// the rest. For h [N, H], w [V, H], labels I32 [N] (-100: ignored), a chunk
// width C and float32 buffers m, s, target, rescale [N], logits [N, C] and,
// when dh is wanted, acc [N, H], the launches are:
//
//	ce_init(m, s, target, acc)                        m = -inf, s = 0, acc = 0
//	for c0 = 0; c0 < V; c0 += C:                      n = min(C, V - c0)
//	    cuBLAS: logits[N, n] = h w[c0:c0+n]^T         (f32 out, beta 0)
//	    ce_chunk_update(logits, p, rescale, m, s, target, labels, c0)
//	                                                  p = P = exp(logits - m_new), when dh is wanted
//	    if dh wanted:
//	        ce_rescale(acc, rescale)                  acc *= exp(m_old - m_new) per row
//	        cuBLAS: acc[N, H] += P[N, n] w[c0:c0+n]   (beta 1)
//	ce_finalize(logprob, dh, acc, w, m, s, target, labels, gradScale)
//
// After the last chunk s is each row's softmax denominator (relative to m)
// and acc/s = softmax(h w^T) w, so dh = gradScale * (acc/s - w[label]). The
// caller checks the labels before uploading them (a label outside [0, V)
// other than -100 is an error there). cgo/loss.go runs this sequence; the
// GPU tests run it on the emulated device, whose cuBLAS is plain loops.
#include "common.cuh"

// ce_init starts the running statistics: m = -inf, s = 0, target = 0 for
// each of the N rows and, when acc is not null, acc [N, H] = 0. One thread
// per element of the larger of the two, grid-stride: block 256, grid
// min(ceil(max(N*H, N)/256), 8192).
extern "C" __global__ void __launch_bounds__(256)
    ce_init(float* m, float* s, float* target, float* acc, int N, int H) {
  size_t nacc = acc ? (size_t)N * H : 0;
  size_t n = nacc > (size_t)N ? nacc : (size_t)N;
  for (size_t i = grid_start(); i < n; i += grid_stride()) {
    if (i < (size_t)N) {
      m[i] = -INFINITY;
      s[i] = 0.0f;
      target[i] = 0.0f;
    }
    if (i < nacc) acc[i] = 0.0f;
  }
}

// ce_chunk_update folds one chunk of logits [N, n] (columns c0..c0+n-1 of
// the vocabulary) into each row's running max m and sum s, and writes
// P = exp(logit - m_new), the weights of the chunk's rows of w in acc, into
// p [N, n] of dtype p_dt: the dtype the P w product reads (bf16 beside a
// bf16 lm_head, so that no cast comes between), the logits themselves when
// F32, and nothing when p is null (no dh wanted). rescale[row] =
// exp(m_old - m_new) (1 when the max did not grow, as the CPU only
// rescales then), which ce_rescale applies to acc before the P w product.
// The label's logit is caught in its chunk. Ignored rows get P = 0 and
// rescale 1: their acc stays 0. One block per row (the branch on the label
// is the same for the whole block): block 128, grid N.
extern "C" __global__ void __launch_bounds__(1024)
    ce_chunk_update(const float* logits, void* p, int p_dt, float* rescale, float* m, float* s, float* target,
                    const int* labels, int N, int n, int c0) {
  __shared__ float red[32];
  int row = blockIdx.x;
  const float* x = logits + (size_t)row * n;
  size_t p0 = (size_t)row * n;  // the row's first element of p
  int label = labels[row];
  if (label == IGNORE_INDEX) {
    if (p) {
      for (int j = threadIdx.x; j < n; j += blockDim.x) store_f32(p, p_dt, p0 + j, 0.0f);
    }
    if (threadIdx.x == 0) rescale[row] = 1.0f;
    return;
  }
  // Read before any thread overwrites the logits (p may be them) or thread
  // 0 writes m: the barriers of block_max come in between.
  float m_old = m[row];
  bool has_label = label >= c0 && label < c0 + n;
  float label_logit = threadIdx.x == 0 && has_label ? x[label - c0] : 0.0f;
  float mc = -INFINITY;
  for (int j = threadIdx.x; j < n; j += blockDim.x) mc = fmaxf(mc, x[j]);
  mc = block_max(mc, red);
  float m_new = fmaxf(m_old, mc);
  float r = mc > m_old ? expf(m_old - m_new) : 1.0f;
  float sum = 0.0f;
  for (int j = threadIdx.x; j < n; j += blockDim.x) {
    float e = expf(x[j] - m_new);
    if (p) store_f32(p, p_dt, p0 + j, e);
    sum += e;
  }
  sum = block_sum(sum, red);
  if (threadIdx.x == 0) {
    if (has_label) target[row] = label_logit;
    s[row] = s[row] * r + sum;
    m[row] = m_new;
    rescale[row] = r;
  }
}

// ce_rescale multiplies each row of acc [N, H] by rescale[row]. One thread
// per element, grid-stride: block 256, grid min(ceil(N*H/256), 8192).
extern "C" __global__ void __launch_bounds__(256) ce_rescale(float* acc, const float* rescale, int N, int H) {
  size_t n = (size_t)N * H;
  if (index_fits_32(n)) {
    for (unsigned i = (unsigned)grid_start(); i < (unsigned)n; i += (unsigned)grid_stride())
      acc[i] *= rescale[i / (unsigned)H];
  } else {
    for (size_t i = grid_start(); i < n; i += grid_stride()) acc[i] *= rescale[i / H];
  }
}

// ce_finalize writes logprob F32 [N] = target - m - log(s) for counted rows
// and 0 for ignored ones and, when dh is not null, dh [N, H] = gradScale *
// (acc/s - w[label]) for counted rows and 0 for ignored ones (written, not
// accumulated; dh may be acc itself when it is F32: each element is read
// before it is written, by the same thread). One thread per element of dh
// (the thread of column 0 also writes logprob), grid-stride: block 256,
// grid min(ceil(N*H/256), 8192).
//
// The loop counts in I (see index_fits_32).
template <class I>
__device__ __forceinline__ void ce_finalize_loop(float* logprob, void* dh, int dh_dt, const float* acc, const void* w,
                                                 int w_dt, const float* m, const float* s, const float* target,
                                                 const int* labels, I n, I H, float grad_scale) {
  for (I i = (I)grid_start(); i < n; i += (I)grid_stride()) {
    I row = i / H, j = i % H;
    int label = labels[row];
    bool counted = label != IGNORE_INDEX;
    if (j == 0) logprob[row] = counted ? target[row] - m[row] - logf(s[row]) : 0.0f;
    if (!dh) continue;
    float g = 0.0f;
    if (counted) {
      float inv = 1.0f / s[row];
      g = grad_scale * (acc[i] * inv - load_f32(w, w_dt, (size_t)label * H + j));
    }
    store_f32(dh, dh_dt, i, g);
  }
}

extern "C" __global__ void __launch_bounds__(256)
    ce_finalize(float* logprob, void* dh, int dh_dt, const float* acc, const void* w, int w_dt, const float* m,
                const float* s, const float* target, const int* labels, int N, int H, float grad_scale) {
  size_t n = (size_t)N * H;
  if (index_fits_32(n))
    ce_finalize_loop<unsigned>(logprob, dh, dh_dt, acc, w, w_dt, m, s, target, labels, (unsigned)n, (unsigned)H,
                               grad_scale);
  else
    ce_finalize_loop<size_t>(logprob, dh, dh_dt, acc, w, w_dt, m, s, target, labels, n, (size_t)H, grad_scale);
}
