package tensor

import "errors"

// ErrOutOfMemory is matched (errors.Is) by a backend's error for an
// allocation its device has no memory left for: on a GPU, cgo.Error with
// CUDA_ERROR_OUT_OF_MEMORY. The CPU backend does not return it.
var ErrOutOfMemory = errors.New("out of device memory")

// Backend runs tensor operations on one kind of device. Every operation has
// a CPU implementation (the reference: float32 math, wider accumulation where
// it matters) and each other backend must give the same results within the
// tolerances of the dtypes involved. Operations write into tensors the caller
// allocated, so that a training step allocates nothing in its loop.
//
// Inputs and outputs may be F32, BF16 or F16 unless an operation says
// otherwise; values are widened to float32, computed on, and rounded to the
// output's dtype once at the end.
type Backend interface {
	// Name is "cpu" or "cuda".
	Name() string

	// Alloc returns a zeroed tensor in the backend's memory.
	Alloc(dtype DType, shape ...int) (*Tensor, error)
	// Empty returns a tensor whose contents are undefined until written:
	// for the output of an operation that overwrites all of it. On a GPU it
	// saves Alloc's memset (a training step of Llama-3.1-8B made 1767 of
	// them, 7% of its device time); on the CPU it is Alloc.
	Empty(dtype DType, shape ...int) (*Tensor, error)
	// Free gives t's memory back to the backend (to its caching allocator
	// on a GPU); t must not be used afterwards. Views are not freed. On the
	// CPU it does nothing: the garbage collector frees host memory.
	Free(t *Tensor)
	// ToDevice returns t in the backend's memory: t itself when it is
	// already there (always, on the CPU), else a copy.
	ToDevice(t *Tensor) (*Tensor, error)
	// ToHost returns t in host memory: t itself when it is a host tensor,
	// else a copy.
	ToHost(t *Tensor) (*Tensor, error)

	// MatMul computes c = alpha * op(a) * op(b) + beta * c, where op(x) is x
	// or its transpose, op(a) is [M,K], op(b) is [K,N] and c is [M,N], with
	// float32 accumulation. a and c may have leading dimensions, which are
	// flattened into M when a is not transposed. When beta is 0, c is not
	// read (NaNs in it do not propagate), as in BLAS.
	MatMul(c, a, b *Tensor, transA, transB bool, alpha, beta float32) error

	// Add sets out = a + b. b has the shape of a, or of a's trailing
	// dimensions, in which case it is broadcast over the leading ones.
	Add(out, a, b *Tensor) error
	// Mul sets out = a * b elementwise, with Add's broadcasting.
	Mul(out, a, b *Tensor) error
	// Scale sets out = s * a.
	Scale(out, a *Tensor, s float32) error

	// Sum writes the sum of all elements of x into the one-element out,
	// accumulated in float64 on the CPU.
	Sum(out, x *Tensor) error
	// Mean writes the mean of all elements of x into the one-element out.
	Mean(out, x *Tensor) error

	// Copy copies src into dst, converting the dtype if they differ. The
	// element counts must match; the shapes need not.
	Copy(dst, src *Tensor) error

	// Embedding gathers rows: out[i, :] = table[ids[i], :]. ids is I32 with
	// N elements (any shape), table is [V, H] (any float dtype) and out has
	// N*H elements with last dimension H. An id outside [0, V) is an error
	// naming it and its position.
	Embedding(out, table, ids *Tensor) error

	// RMSNorm normalises each row of x [..., H] as HF does: in float32,
	// rstd = 1/sqrt(mean(x^2) + eps); the normalised row is rounded to x's
	// dtype, then multiplied by weight [H] and rounded to out's dtype. rstd
	// is F32 with one element per row, saved for the backward.
	RMSNorm(out, rstd, x, weight *Tensor, eps float32) error
	// RMSNormBackward writes (does not accumulate) dx for a frozen weight,
	// from dout, x, weight and the rstd saved by RMSNorm.
	RMSNormBackward(dx, dout, x, weight, rstd *Tensor) error
	// LayerNorm normalises each row of x [..., H] as torch.nn.LayerNorm
	// does: in float32, with the row's mean and biased variance,
	// out = (x - mean) / sqrt(var + eps) * weight + bias, rounded to out's
	// dtype once. weight is [H]; bias is [H] or nil. Forward only (the
	// encoders that use it are frozen and never trained here).
	LayerNorm(out, x, weight, bias *Tensor, eps float32) error

	// RoPE rotates, in HF's rotate-half layout, the first R = 2*cos.Dim(1)
	// dimensions of every head of x [N, heads, headDim] (N tokens; leading
	// dimensions [B, T, heads, headDim] are flattened into N): for i < R/2,
	// with c = cos[n, i] and s = sin[n, i],
	//	out[i]     = x[i] c - x[i+R/2] s
	//	out[i+R/2] = x[i+R/2] c + x[i] s
	// and dimensions R..headDim-1 are copied unchanged (partial rotary). cos
	// and sin are F32 [N, R/2], one row per token: the caller computes them
	// from the positions, the RoPE scaling and any attention factor. inverse
	// applies the transpose of the same linear map (x[i] c + x[i+R/2] s,
	// x[i+R/2] c - x[i] s), which is the backward. out may be x (in place).
	RoPE(out, x, cos, sin *Tensor, inverse bool) error

	// Attention is causal grouped-query attention. q is [B, T, Hq, D], k and
	// v are [B, T, Hkv, D] with Hq a multiple of Hkv (query head h uses kv
	// head h / (Hq/Hkv)), out is [B, T, Hq, D], and lse F32 [B, Hq, T]
	// receives the log-sum-exp of each query row's scaled scores, saved for
	// the backward. scores = scale * q·k over keys start <= s <= t; the
	// softmax is in float32. No [T x T] matrix is kept between calls.
	//
	// docStart packs several documents into a row (FlashAttention-2's
	// varlen attention): nil means one document per row (start = 0), else
	// it is I32 [B, T] and docStart[b, t] is the position in row b where the
	// document holding token t begins, so each document attends only to
	// itself. Within a row it is 0 at t = 0 and then either the previous
	// token's start (same document) or t (a new one); the CPU backend
	// checks that, the CUDA backend (whose values stay on the device) only
	// its dtype and size.
	Attention(out, lse, q, k, v, docStart *Tensor, scale float32) error
	// AttentionBackward writes dq, dk and dv (not accumulated) from dout, the
	// forward's inputs (docStart as in Attention), out and lse, recomputing
	// the probabilities as flash attention does: P = exp(scale q·k - lse),
	// D = rowsum(dout * out), dS = P (dout·v - D), dq = scale dS k,
	// dk = scale dS^T q, dv = P^T dout; dk and dv sum over the query heads
	// of a group.
	AttentionBackward(dq, dk, dv, dout, q, k, v, docStart, out, lse *Tensor, scale float32) error
	// AttentionKV is the attention of generation: Tq new tokens per row
	// against a key/value cache. kCache and vCache are [B, S, Hkv, D] (any
	// float dtype), pos is I32 [B], k and v [B, Tq, Hkv, D] are the new
	// tokens' keys and values (after RoPE), q and out [B, Tq, Hq, D]. It first
	// writes k and v, rounded to the cache's dtype, into the cache at rows
	// pos[b] .. pos[b]+Tq-1 of row b; then query t of row b, at position
	// p = pos[b]+t, attends to cache rows 0..p (its own included) with
	// scores scale * q·k and a float32 softmax. Memory is linear in S: no
	// [Tq x S] matrix. A pos[b] with pos[b]+Tq > S is an error on the CPU;
	// the CUDA backend (pos stays on the device) skips such writes and reads
	// no row at or past S.
	AttentionKV(out, q, k, v, kCache, vCache, pos *Tensor, scale float32) error
	// BidirectionalAttention is the attention of an encoder: no causal
	// mask, and right padding masked out of the keys. q and out are
	// [B, T, Hq, D], k and v [B, T, Hkv, D] (grouped as in Attention), and
	// keyLen I32 [B] holds each row's unpadded length: every query of row b,
	// padded ones included, attends to keys 0 .. keyLen[b]-1 with scores
	// scale * q·k and a float32 softmax. A keyLen[b] outside [1, T] is an
	// error on the CPU; the CUDA backend (whose values stay on the device)
	// clamps it to that range. Forward only; no [T x T] matrix is kept.
	BidirectionalAttention(out, q, k, v, keyLen *Tensor, scale float32) error

	// SwiGLU sets out = silu(gate) * up elementwise, silu(x) = x/(1+exp(-x)),
	// computed in float32. gate, up and out have the same shape.
	SwiGLU(out, gate, up *Tensor) error
	// SwiGLUBackward writes dgate and dup (not accumulated) from dout, gate
	// and up.
	SwiGLUBackward(dgate, dup, dout, gate, up *Tensor) error
	// GELU sets out = x/2 * (1 + erf(x/sqrt(2))) elementwise, the exact
	// form (torch's default, HF's "gelu"), computed in float32. out and x
	// have the same shape; out may be x. Forward only.
	GELU(out, x *Tensor) error

	// Dropout sets out = x * keep / (1-p) elementwise, where keep for
	// element i (row-major index) is decided by a counter-based hash of
	// (seed, i) alone, identically on every backend; p in [0, 1). The hash
	// is SplitMix64's output i (DropoutHash), kept when it is >= p*2^64
	// (DropoutThreshold), and 1/(1-p) is DropoutScale(p). The same seed and
	// shape give the same mask, so applied to a gradient it is the
	// backward. out and x have the same shape; out may be x.
	Dropout(out, x *Tensor, p float32, seed uint64) error

	// CrossEntropy is the causal-LM loss fused with the lm_head projection
	// and its backward, over vocabulary chunks, so that the [N x V] logits
	// are never held. h [N, H] are the final hidden states, w [V, H] the
	// lm_head (or tied embedding) weight, both of any float dtype, and labels
	// I32 [N], where -100 means ignored (any other label outside [0, V) is an
	// error). It writes logprob F32 [N] = log softmax(h w^T)[label] for
	// counted rows and 0 for ignored ones. If dh is not nil ([N, H], written,
	// not accumulated) it also writes dh = gradScale * d(sum over counted
	// rows of -logprob)/dh = gradScale * (softmax - onehot(label)) w per
	// counted row, and 0 for ignored rows.
	//
	// It takes chunk vocabulary columns at a time (chunk <= 0 means 8192),
	// in one pass: logits_c = h w_c^T, then an online log-sum-exp (running
	// max m and sum s per row, rescaled when m grows) and, when dh is wanted,
	// acc = sum_c exp(logits_c - m) w_c rescaled the same way; at the end
	// dh = gradScale * (acc/s - w[label]). It holds N x chunk float32 logits
	// plus N x H. Logits are float32.
	CrossEntropy(logprob, dh, h, w, labels *Tensor, chunk int, gradScale float32) error

	// AdamW applies one step of torch.optim.AdamW (the default: not amsgrad,
	// decoupled weight decay) to F32 tensors. For each i, with p = params[i],
	// g = grads[i] and its state m = m[i], v = v[i] (same shapes, F32,
	// starting at zero):
	//	p -= lr*weightDecay*p
	//	m = beta1 m + (1-beta1) g
	//	v = beta2 v + (1-beta2) g^2
	//	p -= (lr / (1 - beta1^step)) * m / (sqrt(v)/sqrt(1 - beta2^step) + eps)
	// step counts from 1. All tensors go in one call (one launch on a GPU).
	AdamW(params, grads, m, v []*Tensor, step int, lr, beta1, beta2, eps, weightDecay float32) error
}

// The CPU backend implements every operation.
var _ Backend = (*CPU)(nil)
