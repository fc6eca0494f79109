// Package kernels holds compass's hand-written CUDA kernels: their sources
// (*.cu), the PTX that gen.sh generates from them with nvcc (committed under
// ptx/ and embedded here) and the table of entry points and launch shapes
// the GPU backend (cgo/) runs them with. Every kernel also compiles as plain
// C++ under a kernel emulator (emu/cuda_emu.h) and `go test` checks it
// there against the CPU backend; README.md says how, and what that cannot
// show.
package kernels

import (
	"embed"
	"fmt"
)

//go:embed ptx/*.ptx
var ptxFiles embed.FS

// Sources are the .cu files, without the extension; each has one PTX file
// per architecture.
var Sources = []string{"adamw", "attention", "attention_kv", "attention_tc", "cross_entropy", "dropout", "elementwise", "embedding", "kmeans", "layernorm", "lora", "rmsnorm", "rope", "swiglu"}

// Architectures are the PTX targets gen.sh generates: compute_80 (A100 and
// later) and compute_90 (H100, H200). The driver compiles the PTX for the
// device it runs on.
var Architectures = []string{"sm80", "sm90"}

// PTX returns the PTX of a source file for an architecture, e.g.
// PTX("attention", "sm90").
func PTX(source, arch string) ([]byte, error) {
	b, err := ptxFiles.ReadFile("ptx/" + source + "_" + arch + ".ptx")
	if err != nil {
		return nil, fmt.Errorf("kernels: no PTX for %s on %s: %w", source, arch, err)
	}
	return b, nil
}

// ArchFor returns the PTX architecture for a device of compute capability
// major.minor: sm90 from 9.0 on, sm80 for 8.x. Older devices (no bf16
// tensor cores) are not supported.
func ArchFor(major, minor int) (string, error) {
	switch {
	case major >= 9:
		return "sm90", nil
	case major == 8:
		return "sm80", nil
	}
	return "", fmt.Errorf("kernels: compute capability %d.%d: compass needs 8.0 or later (bf16 tensor cores)", major, minor)
}

// Dtype codes the kernels take next to each tensor pointer: tensor.DType's
// values.
const (
	F32  = 1
	BF16 = 2
	F16  = 3
)

// Limits and conventions the caller must respect.
const (
	// AttentionMaxHeadDim is the largest head dimension the attention
	// kernels handle (their per-thread accumulators are sized for it).
	AttentionMaxHeadDim = 128
	// LoRANarrowDepth is lora_narrow's depth per stage: the chunks its sum
	// is split into are multiples of it.
	LoRANarrowDepth = 64
	// LoRAGradTokens is lora_grad's tokens per stage: the chunks its sum
	// is split into are multiples of it.
	LoRAGradTokens = 32
	// AdamWTensorBytes is the size of one row of adamw's table: pointers p,
	// g, m, v (8 bytes each) and the element count n (int64), in that order.
	AdamWTensorBytes = 40
	// ZeroTensorBytes is the size of one row of zero_tensors' table: the
	// tensor's address and its size in bytes (int64), in that order.
	ZeroTensorBytes = 16
	// IgnoreIndex is the label that does not count in the loss.
	IgnoreIndex = -100
)

// Sizes are the problem sizes a launch shape is computed from. Each kernel's
// entry in Table says which it reads.
type Sizes struct {
	N       int // elements, rows, tokens (lora_expand: C's rows) or points
	H       int // row length: hidden size, vocabulary chunk, point dimension
	Heads   int // rope: heads per token; attention_tc_backward_dkdv: query heads per block
	D       int // head dimension (rope, attention)
	Half    int // rope: rotated pairs per head, R/2
	B, T    int // attention: batch and sequence length
	Hq, Hkv int // attention: query and key/value heads
	M, Cols int // lora_narrow, lora_grad: the output C is [M, Cols] (lora_expand: [N, Cols])
	Splits  int // lora_narrow, lora_grad: the chunks the sum is split into
	K       int // k-means: centroids
	Tensors int // adamw, zero_tensors: tensors in the table (N is then the largest)
}

// Launch is a launch shape: grid and block dimensions and the dynamic shared
// memory in bytes.
type Launch struct {
	Grid, Block [3]int
	Shared      int
}

// Kernel describes one entry point of the PTX.
type Kernel struct {
	Name    string // the extern "C" entry point
	Source  string // the .cu file (without extension) it is in
	Matches string // the CPU op (or the part of one) the tests hold it to
	Block   int    // threads per block
	// Grid and Shared compute the launch shape from the sizes the kernel
	// reads (named in Sizes' comment); Shared is nil when the kernel uses
	// no dynamic shared memory.
	Grid   func(s Sizes) [3]int
	Shared func(s Sizes) int
}

// Launch returns the kernel's launch shape for s.
func (k *Kernel) Launch(s Sizes) Launch {
	l := Launch{Grid: k.Grid(s), Block: [3]int{k.Block, 1, 1}}
	if k.Shared != nil {
		l.Shared = k.Shared(s)
	}
	return l
}

// Lookup returns the kernel named name.
func Lookup(name string) (*Kernel, error) {
	for i := range Table {
		if Table[i].Name == name {
			return &Table[i], nil
		}
	}
	return nil, fmt.Errorf("kernels: no kernel %q", name)
}

// maxGridStride caps the grid of grid-stride kernels: enough blocks to
// fill any current GPU several times over, few enough that each thread
// takes several elements of a large tensor.
const maxGridStride = 8192

// strided is the grid of a one-thread-per-element kernel over n elements.
func strided(n, block int) [3]int {
	return [3]int{max(1, min(ceilDiv(n, block), maxGridStride)), 1, 1}
}

func ceilDiv(a, b int) int { return (a + b - 1) / b }

// Tiles of the attention and k-means kernels (attention.cu, kmeans.cu).
const (
	attBQ       = 16         // query rows per block
	attBK       = 32         // keys per tile, forward
	attBKB      = 16         // keys per tile, backward
	attTcBQ     = 64         // attention_tc: query rows per block
	attTcBK     = 64         // attention_tc: keys per tile
	attTcBQB    = 32         // attention_tc_backward_dkdv: query rows per tile
	attTcPad    = 8          // attention_tc: bf16 of padding per shared-memory row
	kmBM        = 32         // points per block
	kmSortChunk = 8192       // the k-means update's counting sort: points per block
	kmTcBM      = 128        // kmeans_assign_tc: points per block
	kmTcBK      = 32         // kmeans_assign_tc: dimensions per stage; kmeans_split pads rows to a multiple
	kmTcLD      = kmTcBK + 8 // kmeans_assign_tc: bf16 per shared-memory row
	loraNarrowN = 64         // lora_narrow: tokens (columns of C) per block
	loraNarrowR = 64         // lora_narrow, lora_grad: rows of C per block
	loraGradM   = 64         // lora_grad: features (columns of C) per block
	loraExpandN = 64         // lora_expand: tokens (rows of C) per block
	loraExpandM = 64         // lora_expand: columns of C per block
	f32Bytes    = 4          // bytes of a float32
)

// Table lists every kernel. Arguments are in the .cu file's signature;
// each tensor is a device pointer followed, for float tensors of any dtype,
// by its dtype code.
var Table = []Kernel{
	// elementwise.cu: N = elements.
	{Name: "elementwise_cast", Source: "elementwise", Matches: "Copy", Block: 256,
		Grid: func(s Sizes) [3]int { return strided(s.N, 256) }},
	{Name: "elementwise_add", Source: "elementwise", Matches: "Add", Block: 256,
		Grid: func(s Sizes) [3]int { return strided(s.N, 256) }},
	{Name: "elementwise_mul", Source: "elementwise", Matches: "Mul", Block: 256,
		Grid: func(s Sizes) [3]int { return strided(s.N, 256) }},
	{Name: "elementwise_scale", Source: "elementwise", Matches: "Scale", Block: 256,
		Grid: func(s Sizes) [3]int { return strided(s.N, 256) }},
	{Name: "gelu_forward", Source: "elementwise", Matches: "GELU", Block: 256,
		Grid: func(s Sizes) [3]int { return strided(s.N, 256) }},
	// N = the largest tensor's bytes.
	{Name: "zero_tensors", Source: "elementwise", Matches: "(Backend.ZeroTensors: every byte 0, through its test)", Block: 256,
		Grid: func(s Sizes) [3]int { return [3]int{max(1, min(ceilDiv(s.N, 16*256), 1024)), s.Tensors, 1} }},

	// dropout.cu: N = elements.
	{Name: "dropout", Source: "dropout", Matches: "Dropout", Block: 256,
		Grid: func(s Sizes) [3]int { return strided(s.N, 256) }},

	// rmsnorm.cu: N = rows, one block each.
	{Name: "rmsnorm_forward", Source: "rmsnorm", Matches: "RMSNorm", Block: 256,
		Grid: func(s Sizes) [3]int { return [3]int{s.N, 1, 1} }},
	{Name: "rmsnorm_backward", Source: "rmsnorm", Matches: "RMSNormBackward", Block: 256,
		Grid: func(s Sizes) [3]int { return [3]int{s.N, 1, 1} }},

	// layernorm.cu: N = rows, one block each.
	{Name: "layernorm_forward", Source: "layernorm", Matches: "LayerNorm", Block: 128,
		Grid: func(s Sizes) [3]int { return [3]int{s.N, 1, 1} }},

	// rope.cu: N tokens, Heads, D, Half = R/2.
	{Name: "rope", Source: "rope", Matches: "RoPE", Block: 256,
		Grid: func(s Sizes) [3]int { return strided(ceilDiv(s.N*s.Heads*(s.D-s.Half), 8), 256) }},

	// swiglu.cu: N = elements.
	{Name: "swiglu_forward", Source: "swiglu", Matches: "SwiGLU", Block: 256,
		Grid: func(s Sizes) [3]int { return strided(s.N, 256) }},
	{Name: "swiglu_backward", Source: "swiglu", Matches: "SwiGLUBackward", Block: 256,
		Grid: func(s Sizes) [3]int { return strided(s.N, 256) }},

	// embedding.cu: N ids, H = row length.
	{Name: "embedding_forward", Source: "embedding", Matches: "Embedding", Block: 256,
		Grid: func(s Sizes) [3]int { return strided(ceilDiv(s.N*s.H, 8), 256) }},
	{Name: "embedding_backward", Source: "embedding", Matches: "(no CPU op: a float64 scatter-add in the test)", Block: 256,
		Grid: func(s Sizes) [3]int { return strided(s.N*s.H, 256) }},

	// cross_entropy.cu: N rows, H hidden size (for ce_chunk_update, H is
	// unused: one block per row).
	{Name: "ce_init", Source: "cross_entropy", Matches: "CrossEntropy (start)", Block: 256,
		Grid: func(s Sizes) [3]int { return strided(max(s.N*s.H, s.N), 256) }},
	{Name: "ce_chunk_update", Source: "cross_entropy", Matches: "CrossEntropy (one chunk's online softmax)", Block: 128,
		Grid: func(s Sizes) [3]int { return [3]int{s.N, 1, 1} }},
	{Name: "ce_rescale", Source: "cross_entropy", Matches: "CrossEntropy (rescale of acc)", Block: 256,
		Grid: func(s Sizes) [3]int { return strided(s.N*s.H, 256) }},
	{Name: "ce_finalize", Source: "cross_entropy", Matches: "CrossEntropy (logprob and dh)", Block: 256,
		Grid: func(s Sizes) [3]int { return strided(s.N*s.H, 256) }},

	// attention.cu: B, T, Hq, Hkv, D.
	{Name: "attention_forward", Source: "attention", Matches: "Attention", Block: 128,
		Grid:   func(s Sizes) [3]int { return [3]int{ceilDiv(s.T, attBQ), s.Hq, s.B} },
		Shared: func(s Sizes) int { return (attBQ*s.D + 2*attBK*s.D + attBQ*attBK) * f32Bytes }},
	{Name: "attention_bidir_forward", Source: "attention", Matches: "BidirectionalAttention", Block: 128,
		Grid:   func(s Sizes) [3]int { return [3]int{ceilDiv(s.T, attBQ), s.Hq, s.B} },
		Shared: func(s Sizes) int { return (attBQ*s.D + 2*attBK*s.D + attBQ*attBK) * f32Bytes }},
	{Name: "attention_backward_delta", Source: "attention", Matches: "AttentionBackward (D = rowsum(dout*out))", Block: 128,
		Grid: func(s Sizes) [3]int { return [3]int{ceilDiv(s.B*s.T*s.Hq, 4), 1, 1} }},
	{Name: "attention_backward_dq", Source: "attention", Matches: "AttentionBackward (dq)", Block: 128,
		Grid:   func(s Sizes) [3]int { return [3]int{ceilDiv(s.T, attBQ), s.Hq, s.B} },
		Shared: func(s Sizes) int { return (2*attBQ*s.D + 2*attBKB*s.D + attBQ*attBKB) * f32Bytes }},
	{Name: "attention_backward_dkdv", Source: "attention", Matches: "AttentionBackward (dk, dv)", Block: 128,
		Grid:   func(s Sizes) [3]int { return [3]int{ceilDiv(s.T, attBKB), s.Hkv, s.B} },
		Shared: func(s Sizes) int { return (2*attBKB*s.D + 2*attBQ*s.D + 2*attBQ*attBKB + 2*attBQ) * f32Bytes }},

	// attention_tc.cu: B, T, Hq, Hkv; D is in the name (64, 96, 128). Q
	// tile, then K and V tiles double buffered, rows padded.
	attentionTcForward(64), attentionTcForward(96), attentionTcForward(128),
	attentionTcBackwardDq(64), attentionTcBackwardDq(96), attentionTcBackwardDq(128),
	attentionTcBackwardDkdv(64), attentionTcBackwardDkdv(96), attentionTcBackwardDkdv(128),
	attentionTcBackwardDqDs(64), attentionTcBackwardDqDs(96), attentionTcBackwardDqDs(128),
	{Name: "attention_dkdv_sum", Source: "attention_tc", Matches: "AttentionBackward (dk, dv under GQA: the group's query heads added up)", Block: 256,
		Grid: func(s Sizes) [3]int { return strided(s.B*s.T*s.Hkv*s.D/8, 256) }},

	// attention_kv.cu: B, T = new tokens per row, N = cache rows S, Hq,
	// Hkv, D.
	{Name: "kv_cache_write", Source: "attention_kv", Matches: "AttentionKV (the cache write)", Block: 256,
		Grid: func(s Sizes) [3]int { return strided(s.B*s.T*s.Hkv*s.D, 256) }},
	{Name: "attention_kv", Source: "attention_kv", Matches: "AttentionKV", Block: 128,
		Grid:   func(s Sizes) [3]int { return [3]int{s.B * s.T, s.Hq, 1} },
		Shared: func(s Sizes) int { return (s.D + 128 + 32) * f32Bytes }},

	// lora.cu: C is [M, Cols].
	{Name: "lora_narrow", Source: "lora", Matches: "MatMul (t = A x^T and dt = s B^T dy^T, C [M, Cols] with M a rank)", Block: 128,
		Grid: func(s Sizes) [3]int {
			return [3]int{ceilDiv(s.Cols, loraNarrowN), ceilDiv(s.M, loraNarrowR), max(1, s.Splits)}
		}},
	{Name: "lora_narrow_bf16", Source: "lora", Matches: "MatMul (t = A x^T with x bf16, as lora_narrow)", Block: 128,
		Grid: func(s Sizes) [3]int {
			return [3]int{ceilDiv(s.Cols, loraNarrowN), ceilDiv(s.M, loraNarrowR), max(1, s.Splits)}
		}},
	{Name: "lora_grad", Source: "lora", Matches: "MatMul (dA += dt x and dB += s (t dy)^T, C [M, Cols] or its transpose, M a rank)", Block: 128,
		Grid: func(s Sizes) [3]int {
			return [3]int{ceilDiv(s.Cols, loraGradM), ceilDiv(s.M, loraNarrowR), max(1, s.Splits)}
		}},
	{Name: "lora_grad_bf16", Source: "lora", Matches: "MatMul (dA += dt x with x bf16, as lora_grad)", Block: 128,
		Grid: func(s Sizes) [3]int {
			return [3]int{ceilDiv(s.Cols, loraGradM), ceilDiv(s.M, loraNarrowR), max(1, s.Splits)}
		}},
	{Name: "lora_expand", Source: "lora", Matches: "MatMul (y = s t^T B^T and dx += dt^T A, C [N, Cols] from sums over a rank)", Block: 128,
		Grid: func(s Sizes) [3]int { return [3]int{ceilDiv(s.Cols, loraExpandM), ceilDiv(s.N, loraExpandN), 1} }},

	// adamw.cu: Tensors, N = the largest tensor's elements.
	{Name: "adamw", Source: "adamw", Matches: "AdamW", Block: 256,
		Grid: func(s Sizes) [3]int { return [3]int{max(1, min(ceilDiv(s.N, 4*256), 1024)), s.Tensors, 1} }},

	// kmeans.cu: N points (kmeans_sqnorm, kmeans_split: N rows), K
	// centroids, H = point dimension (kmeans_split: the padded one).
	{Name: "kmeans_sqnorm", Source: "kmeans", Matches: "(k-means: squared norms)", Block: 128,
		Grid: func(s Sizes) [3]int { return [3]int{max(1, ceilDiv(s.N, 4)), 1, 1} }},
	{Name: "kmeans_assign", Source: "kmeans", Matches: "(k-means: nearest centroid, float64 brute force in the test)", Block: 128,
		Grid: func(s Sizes) [3]int { return [3]int{max(1, ceilDiv(s.N, kmBM)), 1, 1} }},
	{Name: "kmeans_split", Source: "kmeans", Matches: "(k-means: bf16 hi and lo parts, through the tensor-core assignment's test)", Block: 256,
		Grid: func(s Sizes) [3]int { return strided(s.N*s.H, 256) }},
	{Name: "kmeans_assign_tc", Source: "kmeans", Matches: "(k-means: nearest centroid on the tensor cores, against kmeans_assign and float64)", Block: 256,
		Grid:   func(s Sizes) [3]int { return [3]int{max(1, ceilDiv(s.N, kmTcBM)), 1, 1} },
		Shared: func(s Sizes) int { return 2 * 4 * kmTcBM * kmTcLD * 2 }},
	{Name: "kmeans_assign_tc_split", Source: "kmeans", Matches: "(k-means: nearest centroid on the tensor cores, split points, against kmeans_assign and float64)", Block: 256,
		Grid:   func(s Sizes) [3]int { return [3]int{max(1, ceilDiv(s.N, kmTcBM)), 1, 1} },
		Shared: func(s Sizes) int { return 2 * 4 * kmTcBM * kmTcLD * 2 }},
	{Name: "kmeans_chunk_counts", Source: "kmeans", Matches: "(k-means update: the counting sort, through KMeansUpdate's test)", Block: 256,
		Grid: func(s Sizes) [3]int { return [3]int{max(1, ceilDiv(s.N, kmSortChunk)), 1, 1} }},
	{Name: "kmeans_chunk_offsets", Source: "kmeans", Matches: "(k-means update: the counting sort, through KMeansUpdate's test)", Block: 256,
		Grid: func(s Sizes) [3]int { return [3]int{max(1, ceilDiv(s.K, 256)), 1, 1} }},
	{Name: "kmeans_cluster_starts", Source: "kmeans", Matches: "(k-means update: the counting sort, through KMeansUpdate's test)", Block: 256,
		Grid: func(s Sizes) [3]int { return [3]int{1, 1, 1} }},
	{Name: "kmeans_scatter", Source: "kmeans", Matches: "(k-means update: the counting sort, through KMeansUpdate's test)", Block: 256,
		Grid: func(s Sizes) [3]int { return [3]int{max(1, ceilDiv(s.N, kmSortChunk)), 1, 1} }},
	{Name: "kmeans_segment_mean", Source: "kmeans", Matches: "(k-means update: centroids = means, float64 sums in the test)", Block: 128,
		Grid: func(s Sizes) [3]int { return [3]int{s.K, ceilDiv(s.H, 128), 1} }},
}

// AttentionTCHeadDims are the head dimensions of the tensor-core attention
// kernels (attention_tc.cu), which take bf16 q, k, v and out.
var AttentionTCHeadDims = []int{64, 96, 128}

// attentionTcForward is the Table entry of attention_tc_forward_dD.
func attentionTcForward(D int) Kernel {
	return Kernel{Name: fmt.Sprintf("attention_tc_forward_d%d", D), Source: "attention_tc",
		Matches: fmt.Sprintf("Attention (bf16, D %d, tensor cores)", D), Block: 128,
		Grid:   func(s Sizes) [3]int { return [3]int{s.Hq, s.B, ceilDiv(s.T, attTcBQ)} },
		Shared: func(s Sizes) int { return (attTcBQ + 4*attTcBK) * (D + attTcPad) * 2 }}
}

// attentionTcBackwardDq is the Table entry of attention_tc_backward_dq_dD:
// Q and dO tiles, then K and V tiles double buffered.
func attentionTcBackwardDq(D int) Kernel {
	return Kernel{Name: fmt.Sprintf("attention_tc_backward_dq_d%d", D), Source: "attention_tc",
		Matches: fmt.Sprintf("AttentionBackward (dq; bf16, D %d, tensor cores)", D), Block: 128,
		Grid:   func(s Sizes) [3]int { return [3]int{s.Hq, s.B, ceilDiv(s.T, attTcBQ)} },
		Shared: func(s Sizes) int { return (2*attTcBQ + 4*attTcBK) * (D + attTcPad) * 2 }}
}

// attentionTcBackwardDkdv is the Table entry of
// attention_tc_backward_dkdv_dD, one block per key tile and Heads query
// heads (one, or a kv head's): K and V tiles, then Q and dO tiles double
// buffered, and lse, delta and the documents' starts of the Q tiles.
func attentionTcBackwardDkdv(D int) Kernel {
	return Kernel{Name: fmt.Sprintf("attention_tc_backward_dkdv_d%d", D), Source: "attention_tc",
		Matches: fmt.Sprintf("AttentionBackward (dk, dv; bf16, D %d, tensor cores)", D), Block: 128,
		Grid:   func(s Sizes) [3]int { return [3]int{s.Hq / max(1, s.Heads), s.B, ceilDiv(s.T, attTcBK)} },
		Shared: func(s Sizes) int { return (2*attTcBK+4*attTcBQB)*(D+attTcPad)*2 + 2*3*attTcBQB*f32Bytes }}
}

// attentionTcBackwardDqDs is the Table entry of
// attention_tc_backward_dq_ds_dD: dq from the dS the dk/dv kernel wrote,
// its tiles (64 keys by the block's 64 queries) and K's double buffered.
func attentionTcBackwardDqDs(D int) Kernel {
	return Kernel{Name: fmt.Sprintf("attention_tc_backward_dq_ds_d%d", D), Source: "attention_tc",
		Matches: fmt.Sprintf("AttentionBackward (dq from the dk/dv kernel's dS; bf16, D %d, tensor cores)", D), Block: 128,
		Grid:   func(s Sizes) [3]int { return [3]int{s.Hq, s.B, ceilDiv(s.T, attTcBQ)} },
		Shared: func(s Sizes) int { return 2*attTcBK*(attTcBQ+attTcPad)*2 + 2*attTcBK*(D+attTcPad)*2 }}
}

// KMeansSortChunk is the points per block of the k-means update's counting
// sort: its chunk counts are [ceil(N/KMeansSortChunk), K].
const KMeansSortChunk = kmSortChunk

// KMeansTCPad is the multiple kmeans_split pads the rows of the operands of
// kmeans_assign_tc to (its dimensions per pipeline stage).
const KMeansTCPad = kmTcBK
