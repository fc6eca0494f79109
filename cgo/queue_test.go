package cgo

import (
	"encoding/binary"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/compassml/compass/kernels"
	"github.com/compassml/compass/tensor"
)

// recQueue is a queue without a GPU: device memory is Go memory at made-up
// addresses, copies and memsets work on it, and launches and products are
// recorded and checked (arguments against the PTX signature, pointers
// inside live allocations, launch shapes within the device's limits)
// instead of run.
type recQueue struct {
	t      *testing.T
	next   uintptr
	blocks map[uintptr][]byte
	log    []string // "kernel" or "gemm" per call, in order
	// onLaunch, when set, runs after a launch is checked (tests use it to
	// play a kernel's side effect, such as embedding's bad-id flag).
	onLaunch func(kernel string, args *Args)
	// refuse, when set, makes malloc fail as a full device does for the
	// sizes it says so of.
	refuse func(bytes int) bool
}

func newRecQueue(t *testing.T) *recQueue {
	return &recQueue{t: t, next: 1 << 32, blocks: map[uintptr][]byte{}}
}

func (q *recQueue) malloc(n int) (uintptr, error) {
	if q.refuse != nil && q.refuse(n) {
		return 0, errorOf(cudaErrOutOfMemory, fmt.Sprintf("cuMemAlloc of %d bytes", n))
	}
	p := q.next
	q.next += uintptr(n+4095) &^ 4095 // 4 KiB apart, like a real allocator's alignment
	q.blocks[p] = make([]byte, n)
	return p, nil
}

func (q *recQueue) free(p uintptr) error {
	if _, ok := q.blocks[p]; !ok {
		return fmt.Errorf("free of %#x, not an allocation", p)
	}
	delete(q.blocks, p)
	return nil
}

// mem returns the n bytes at device address p, failing the test when they
// are not inside one live allocation.
func (q *recQueue) mem(what string, p uintptr, n int) []byte {
	q.t.Helper()
	if n == 0 { // the real queue does nothing for no bytes
		return nil
	}
	for base, b := range q.blocks {
		if p >= base && p+uintptr(n) <= base+uintptr(len(b)) {
			return b[p-base : p-base+uintptr(n)]
		}
	}
	q.t.Fatalf("%s: [%#x, +%d) is not inside a live allocation", what, p, n)
	return nil
}

// inside reports whether p points into a live allocation.
func (q *recQueue) inside(p uintptr) bool {
	for base, b := range q.blocks {
		if p >= base && p < base+uintptr(len(b)) {
			return true
		}
	}
	return false
}

func (q *recQueue) memsetD8(p uintptr, v byte, n int) error {
	b := q.mem("memsetD8", p, n)
	for i := range b {
		b[i] = v
	}
	return nil
}

func (q *recQueue) memsetD32(p uintptr, v uint32, n int) error {
	b := q.mem("memsetD32", p, 4*n)
	for i := 0; i < n; i++ {
		b[4*i], b[4*i+1], b[4*i+2], b[4*i+3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
	}
	return nil
}

func (q *recQueue) copyDtoD(dst, src uintptr, n int) error {
	copy(q.mem("copyDtoD dst", dst, n), q.mem("copyDtoD src", src, n))
	return nil
}

func (q *recQueue) upload(dst uintptr, src []byte) error {
	copy(q.mem("upload", dst, len(src)), src)
	return nil
}

func (q *recQueue) download(dst []byte, src uintptr) error {
	copy(dst, q.mem("download", src, len(dst)))
	return nil
}

func (q *recQueue) synchronize() error { return nil }
func (q *recQueue) close() error       { return nil }

// ptxSignatures maps each kernel of the PTX to its parameter types, as
// "u64 u32 f32 ...".
var ptxSignatures = sync.OnceValues(func() (map[string]string, error) {
	entry := regexp.MustCompile(`\.entry (\w+)\(([^)]*)\)`)
	param := regexp.MustCompile(`\.param \.(\w+) `)
	sigs := map[string]string{}
	for _, src := range kernels.Sources {
		for _, arch := range kernels.Architectures {
			ptx, err := kernels.PTX(src, arch)
			if err != nil {
				return nil, err
			}
			for _, m := range entry.FindAllStringSubmatch(string(ptx), -1) {
				var types []string
				for _, p := range param.FindAllStringSubmatch(m[2], -1) {
					types = append(types, p[1])
				}
				sig := strings.Join(types, " ")
				if old, ok := sigs[m[1]]; ok && old != sig {
					return nil, fmt.Errorf("%s: signatures differ between architectures: %s and %s", m[1], old, sig)
				}
				sigs[m[1]] = sig
			}
		}
	}
	return sigs, nil
})

// argTypes is the PTX parameter types an argument list packs.
func argTypes(a *Args) string {
	types := make([]string, len(a.kinds))
	for i, k := range a.kinds {
		types[i] = map[byte]string{'p': "u64", 'u': "u64", 'i': "u32", 'f': "f32"}[k]
	}
	return strings.Join(types, " ")
}

func (q *recQueue) launch(op, kernel string, s kernels.Sizes, args *Args) error {
	q.t.Helper()
	spec, err := kernels.Lookup(kernel)
	if err != nil {
		q.t.Fatalf("%s: %v", op, err)
	}
	sigs, err := ptxSignatures()
	if err != nil {
		q.t.Fatal(err)
	}
	if got, want := argTypes(args), sigs[kernel]; got != want {
		q.t.Errorf("%s: %s packs (%s), its PTX takes (%s)", op, kernel, got, want)
	}
	for i, k := range args.kinds {
		if k != 'p' {
			continue
		}
		if p := args.ptrAt(i); p != 0 && !q.inside(p) {
			q.t.Errorf("%s: %s argument %d is %#x, not inside a live allocation", op, kernel, i, p)
		}
	}
	l := spec.Launch(s)
	if l.Grid[0] < 1 || l.Grid[0] > 1<<31-1 || l.Grid[1] < 1 || l.Grid[1] > 65535 || l.Grid[2] < 1 || l.Grid[2] > 65535 {
		q.t.Errorf("%s: %s grid %v is outside the device's limits (sizes %+v)", op, kernel, l.Grid, s)
	}
	if l.Block[0]*l.Block[1]*l.Block[2] > 1024 || l.Shared > 227<<10 {
		q.t.Errorf("%s: %s block %v, shared %d bytes: too large", op, kernel, l.Block, l.Shared)
	}
	q.log = append(q.log, kernel)
	if q.onLaunch != nil {
		q.onLaunch(kernel, args)
	}
	return nil
}

// gemm checks that each operand's column-major extent lies inside a live
// allocation: the leading dimensions and sizes of the plan are consistent.
func (q *recQueue) gemm(p gemmPlan, c, a, b uintptr, in, out tensor.DType, alpha, beta float32) error {
	q.t.Helper()
	extent := func(rows, cols, ld int) int { return ld*(cols-1) + rows }
	// cuBLAS's A is our b: m x k (or k x m when transposed), and so on.
	ar, ac := p.m, p.k
	if p.transA == 1 {
		ar, ac = p.k, p.m
	}
	br, bc := p.k, p.n
	if p.transB == 1 {
		br, bc = p.n, p.k
	}
	if ar > p.lda || br > p.ldb || p.m > p.ldc {
		q.t.Errorf("gemm %+v: a leading dimension is below its rows", p)
	}
	q.mem("gemm A (our b)", b, extent(ar, ac, p.lda)*in.Size())
	q.mem("gemm B (our a)", a, extent(br, bc, p.ldb)*in.Size())
	q.mem("gemm C", c, extent(p.m, p.n, p.ldc)*out.Size())
	if !gemmSupported(in, out) {
		q.t.Errorf("gemm %s x %s -> %s: cuBLAS does not run it", in, in, out)
	}
	q.log = append(q.log, "gemm")
	return nil
}

// ptrAt is argument i, a pointer.
func (a *Args) ptrAt(i int) uintptr {
	return uintptr(binary.LittleEndian.Uint64(a.buf[a.offsets[i]:]))
}

// recBackend is a Backend over a recording queue.
func recBackend(t *testing.T) (*Backend, *recQueue) {
	q := newRecQueue(t)
	b, err := newBackend(q)
	if err != nil {
		t.Fatal(err)
	}
	return b, q
}

// dev returns a device tensor of the backend with values 1, 2, 3, ...
func dev(t *testing.T, b *Backend, dt tensor.DType, shape ...int) *tensor.Tensor {
	t.Helper()
	h := tensor.New(dt, shape...)
	if dt == tensor.I32 {
		for i := range h.I32() {
			h.I32()[i] = int32(i % 7)
		}
	} else {
		v := make([]float32, h.NumElements())
		for i := range v {
			v[i] = float32(i%13) - 6
		}
		f, _ := tensor.FromF32(v, shape...)
		if err := tensor.NewCPU().Copy(h, f); err != nil {
			t.Fatal(err)
		}
	}
	d, err := b.ToDevice(h)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestRecordedOps runs every operation of the backend against the
// recording queue: every kernel's arguments match its PTX signature, every
// pointer is live, launch shapes are within limits, and every scratch
// tensor is freed.
func TestRecordedOps(t *testing.T) {
	b, q := recBackend(t)
	defer b.Close()
	f32, bf16, f16, i32 := tensor.F32, tensor.BF16, tensor.F16, tensor.I32
	const B, T, Hq, Hkv, D, H, V, I = 2, 5, 4, 2, 8, 16, 37, 24
	N := B * T

	cases := []struct {
		name string
		want []string // the kernels and products, in order
		run  func() error
	}{
		{"add broadcast", []string{"elementwise_add"}, func() error {
			return b.Add(dev(t, b, bf16, N, H), dev(t, b, f32, N, H), dev(t, b, bf16, H))
		}},
		{"add with a cast", []string{"elementwise_add"}, func() error {
			return b.AddCast(dev(t, b, f32, N, H), dev(t, b, bf16, N, H), dev(t, b, f32, N, H), dev(t, b, f32, N, H))
		}},
		{"mul", []string{"elementwise_mul"}, func() error {
			return b.Mul(dev(t, b, f32, N, H), dev(t, b, f16, N, H), dev(t, b, f32, N, H))
		}},
		{"scale", []string{"elementwise_scale"}, func() error { return b.Scale(dev(t, b, f32, 3, 4), dev(t, b, bf16, 3, 4), 0.5) }},
		{"copy cast on device", []string{"elementwise_cast"}, func() error { return b.Copy(dev(t, b, bf16, 6), dev(t, b, f32, 2, 3)) }},
		{"copy same dtype", nil, func() error { return b.Copy(dev(t, b, f32, 6), dev(t, b, f32, 2, 3)) }},
		{"copy cast from host", []string{"elementwise_cast"}, func() error { return b.Copy(dev(t, b, f16, 6), tensor.New(f32, 6)) }},
		{"copy cast to host", []string{"elementwise_cast"}, func() error { return b.Copy(tensor.New(f32, 6), dev(t, b, bf16, 6)) }},
		{"sum", nil, func() error { return b.Sum(dev(t, b, f32, 1), dev(t, b, bf16, 7, 3)) }},
		{"mean", nil, func() error { return b.Mean(dev(t, b, f32, 1), dev(t, b, f32, 7, 3)) }},
		{"embedding", []string{"embedding_forward"}, func() error {
			return b.Embedding(dev(t, b, f32, B, T, H), dev(t, b, bf16, V, H), dev(t, b, i32, B, T))
		}},
		{"rmsnorm", []string{"rmsnorm_forward"}, func() error {
			return b.RMSNorm(dev(t, b, f32, N, H), dev(t, b, f32, N), dev(t, b, bf16, N, H), dev(t, b, bf16, H), 1e-5)
		}},
		{"rmsnorm backward", []string{"rmsnorm_backward"}, func() error {
			return b.RMSNormBackward(dev(t, b, f32, N, H), dev(t, b, f32, N, H), dev(t, b, f32, N, H), dev(t, b, bf16, H), dev(t, b, f32, N))
		}},
		{"rope", []string{"rope"}, func() error {
			x := dev(t, b, f32, N, Hq, D)
			return b.RoPE(x, x, dev(t, b, f32, N, 3), dev(t, b, f32, N, 3), true)
		}},
		{"rope pair cast", []string{"rope"}, func() error {
			q, k := dev(t, b, f32, N, Hq, D), dev(t, b, f32, N, Hkv, D)
			return b.RoPEPairCast(q, k, dev(t, b, bf16, N, Hq, D), dev(t, b, bf16, N, Hkv, D), q, k,
				dev(t, b, f32, N, 3), dev(t, b, f32, N, 3), true)
		}},
		{"attention", []string{"attention_forward"}, func() error {
			return b.Attention(dev(t, b, f32, B, T, Hq, D), dev(t, b, f32, B, Hq, T), dev(t, b, f32, B, T, Hq, D),
				dev(t, b, bf16, B, T, Hkv, D), dev(t, b, f32, B, T, Hkv, D), nil, 0.3)
		}},
		{"attention documents", []string{"attention_forward"}, func() error {
			return b.Attention(dev(t, b, f32, B, T, Hq, D), dev(t, b, f32, B, Hq, T), dev(t, b, f32, B, T, Hq, D),
				dev(t, b, bf16, B, T, Hkv, D), dev(t, b, f32, B, T, Hkv, D), dev(t, b, i32, B, T), 0.3)
		}},
		{"attention backward", []string{"attention_backward_delta", "attention_backward_dq", "attention_backward_dkdv"}, func() error {
			q4, kv := func() *tensor.Tensor { return dev(t, b, f32, B, T, Hq, D) }, func() *tensor.Tensor { return dev(t, b, f32, B, T, Hkv, D) }
			return b.AttentionBackward(q4(), kv(), kv(), q4(), q4(), kv(), kv(), nil, q4(), dev(t, b, f32, B, Hq, T), 0.3)
		}},
		{"attention backward documents", []string{"attention_backward_delta", "attention_backward_dq", "attention_backward_dkdv"}, func() error {
			q4, kv := func() *tensor.Tensor { return dev(t, b, f32, B, T, Hq, D) }, func() *tensor.Tensor { return dev(t, b, f32, B, T, Hkv, D) }
			return b.AttentionBackward(q4(), kv(), kv(), q4(), q4(), kv(), kv(), dev(t, b, i32, B, T), q4(), dev(t, b, f32, B, Hq, T), 0.3)
		}},
		{"attention, tensor cores", []string{"attention_tc_forward_d64"}, func() error {
			return b.Attention(dev(t, b, bf16, B, T, Hq, 64), dev(t, b, f32, B, Hq, T), dev(t, b, bf16, B, T, Hq, 64),
				dev(t, b, bf16, B, T, Hkv, 64), dev(t, b, bf16, B, T, Hkv, 64), dev(t, b, i32, B, T), 0.3)
		}},
		{"attention backward, tensor cores, GQA", []string{"attention_backward_delta", "attention_tc_backward_dkdv_d64",
			"attention_dkdv_sum", "attention_tc_backward_dq_ds_d64"}, func() error {
			q4, kv := func() *tensor.Tensor { return dev(t, b, bf16, B, T, Hq, 64) }, func() *tensor.Tensor { return dev(t, b, bf16, B, T, Hkv, 64) }
			return b.AttentionBackward(q4(), kv(), kv(), q4(), q4(), kv(), kv(), nil, q4(), dev(t, b, f32, B, Hq, T), 0.3)
		}},
		{"attention backward, tensor cores, GQA, a kv head's query heads per block", []string{"attention_backward_delta",
			"attention_tc_backward_dkdv_d64", "attention_tc_backward_dq_ds_d64"}, func() error {
			q4, kv := func() *tensor.Tensor { return dev(t, b, bf16, B, T, Hq, 64) }, func() *tensor.Tensor { return dev(t, b, bf16, B, T, Hkv, 64) }
			b.dkdvGroupBlocks = true
			defer func() { b.dkdvGroupBlocks = false }()
			return b.AttentionBackward(q4(), kv(), kv(), q4(), q4(), kv(), kv(), nil, q4(), dev(t, b, f32, B, Hq, T), 0.3)
		}},
		{"attention backward, tensor cores, a kv head per query head", []string{"attention_backward_delta",
			"attention_tc_backward_dkdv_d64", "attention_tc_backward_dq_ds_d64"}, func() error {
			q4 := func() *tensor.Tensor { return dev(t, b, bf16, B, T, Hq, 64) }
			return b.AttentionBackward(q4(), q4(), q4(), q4(), q4(), q4(), q4(), dev(t, b, i32, B, T), q4(), dev(t, b, f32, B, Hq, T), 0.3)
		}},
		{"attention backward, tensor cores, dq recomputed", []string{"attention_backward_delta",
			"attention_tc_backward_dkdv_d64", "attention_tc_backward_dq_d64"}, func() error {
			q4 := func() *tensor.Tensor { return dev(t, b, bf16, B, T, Hq, 64) }
			b.attentionRecomputeDQ = true
			defer func() { b.attentionRecomputeDQ = false }()
			return b.AttentionBackward(q4(), q4(), q4(), q4(), q4(), q4(), q4(), dev(t, b, i32, B, T), q4(), dev(t, b, f32, B, Hq, T), 0.3)
		}},
		{"zero tensors", []string{"zero_tensors"}, func() error {
			return b.ZeroTensors([]*tensor.Tensor{dev(t, b, f32, N, H), dev(t, b, bf16, 3), dev(t, b, f32, 0, 2)})
		}},
		{"swiglu", []string{"swiglu_forward"}, func() error {
			return b.SwiGLU(dev(t, b, f32, N, I), dev(t, b, f32, N, I), dev(t, b, bf16, N, I))
		}},
		{"swiglu backward", []string{"swiglu_backward"}, func() error {
			return b.SwiGLUBackward(dev(t, b, f32, N, I), dev(t, b, f32, N, I), dev(t, b, f32, N, I), dev(t, b, f32, N, I), dev(t, b, f32, N, I))
		}},
		{"adamw", []string{"adamw"}, func() error {
			var p, g, m, v []*tensor.Tensor
			for _, shape := range [][]int{{4, 16}, {24, 4}, {3}} {
				p, g = append(p, dev(t, b, f32, shape...)), append(g, dev(t, b, f32, shape...))
				m, v = append(m, dev(t, b, f32, shape...)), append(v, dev(t, b, f32, shape...))
			}
			return b.AdamW(p, g, m, v, 3, 1e-3, 0.9, 0.999, 1e-8, 0.01)
		}},
		{"narrow matmul", []string{"lora_narrow"}, func() error {
			// t = A x^T: A [3, H], x [N, H], t [3, N], one chunk.
			return b.NarrowMatMul(dev(t, b, f32, 3, N), dev(t, b, f32, 3, H), dev(t, b, f32, N, H), false, 1, 0)
		}},
		{"narrow matmul, split", []string{"lora_narrow"}, func() error {
			// dt = B^T dy^T: B [130, 3], dy [N, 130], dt [3, N], two chunks.
			return b.narrowMatMul(dev(t, b, f32, 3, N), dev(t, b, f32, 130, 3), dev(t, b, f32, N, 130), true, 2, 0, 2)
		}},
		{"grad matmul", []string{"lora_grad"}, func() error {
			// dA += dt x: dt [3, N], x [N, H], dA [3, H], one chunk.
			return b.GradMatMul(dev(t, b, f32, 3, H), dev(t, b, f32, 3, N), dev(t, b, f32, N, H), false, 1, 1)
		}},
		{"grad matmul, split", []string{"lora_grad"}, func() error {
			// dB += s (t dy)^T: t [3, 70], dy [70, H], dB [H, 3], two chunks.
			return b.gradMatMul(dev(t, b, f32, H, 3), dev(t, b, f32, 3, 70), dev(t, b, f32, 70, H), true, 2, 1, 2)
		}},
		{"narrow matmul, bf16 x", []string{"lora_narrow_bf16"}, func() error {
			// t = A x^T with x bf16 (the o_proj input), one chunk.
			return b.NarrowMatMul(dev(t, b, f32, 3, N), dev(t, b, f32, 3, H), dev(t, b, bf16, N, H), false, 1, 0)
		}},
		{"grad matmul, bf16 x, split", []string{"lora_grad_bf16"}, func() error {
			// dA += dt x with x bf16: dt [3, 70], x [70, H], two chunks.
			return b.gradMatMul(dev(t, b, f32, 3, H), dev(t, b, f32, 3, 70), dev(t, b, bf16, 70, H), false, 1, 1, 2)
		}},
		{"expand matmul", []string{"lora_expand"}, func() error {
			// dx += dt^T A: dt [3, N], A [3, H], dx [N, H].
			return b.ExpandMatMul(dev(t, b, f32, N, H), dev(t, b, f32, 3, N), dev(t, b, f32, 3, H), false, 1, 1)
		}},
		{"embedding backward", []string{"embedding_backward"}, func() error {
			return b.embeddingBackward(dev(t, b, f32, V, H), dev(t, b, bf16, B, T, H), dev(t, b, i32, B, T))
		}},
		{"kmeans assign", []string{"kmeans_sqnorm", "kmeans_split", "kmeans_sqnorm", "kmeans_split", "kmeans_assign_tc_split"}, func() error {
			return b.KMeansAssign(dev(t, b, i32, N), dev(t, b, f32, N), dev(t, b, f16, N, H), dev(t, b, f32, 5, H))
		}},
		{"kmeans update", []string{"kmeans_chunk_counts", "kmeans_chunk_offsets", "kmeans_cluster_starts", "kmeans_scatter", "kmeans_segment_mean"}, func() error {
			return b.KMeansUpdate(dev(t, b, f32, 7, H), dev(t, b, i32, 7), dev(t, b, bf16, N, H), dev(t, b, i32, N))
		}},
		{"matmul f32", []string{"gemm"}, func() error {
			return b.MatMul(dev(t, b, f32, B, T, I), dev(t, b, f32, B, T, H), dev(t, b, f32, I, H), false, true, 1, 0)
		}},
		{"matmul transposed a, bf16", []string{"gemm"}, func() error {
			return b.MatMul(dev(t, b, f32, H, I), dev(t, b, bf16, N, H), dev(t, b, bf16, N, I), true, false, 2, 1)
		}},
		{"matmul mixed dtypes", []string{"elementwise_cast", "gemm"}, func() error {
			return b.MatMul(dev(t, b, f32, N, I), dev(t, b, f32, N, H), dev(t, b, bf16, I, H), false, true, 1, 0)
		}},
		{"matmul f32 into bf16, beta", []string{"elementwise_cast", "gemm", "elementwise_cast"}, func() error {
			return b.MatMul(dev(t, b, bf16, N, I), dev(t, b, f32, N, H), dev(t, b, f32, H, I), false, false, 1, 0.5)
		}},
		{"matmul k = 0", nil, func() error {
			return b.MatMul(dev(t, b, f32, 3, 4), dev(t, b, f32, 3, 0), dev(t, b, f32, 0, 4), false, false, 1, 0)
		}},
		{"cross entropy with dh", append(append([]string{"elementwise_cast", "ce_init"},
			repeat([]string{"gemm", "ce_chunk_update", "ce_rescale", "gemm"}, 3)...), "ce_finalize"), func() error {
			// V = 37 in chunks of 16: three chunks, the last one short.
			// ce_chunk_update writes P in bf16 for the bf16 lm_head's
			// product: no cast between them.
			return b.CrossEntropy(dev(t, b, f32, N), dev(t, b, bf16, N, H), dev(t, b, f32, N, H), dev(t, b, bf16, V, H),
				dev(t, b, i32, N), 16, 0.1)
		}},
		{"cross entropy, no dh", append(append([]string{"ce_init"}, repeat([]string{"gemm", "ce_chunk_update"}, 1)...), "ce_finalize"), func() error {
			return b.CrossEntropy(dev(t, b, f32, N), nil, dev(t, b, f32, B, T, H), dev(t, b, f32, V, H), dev(t, b, i32, N), 0, 1)
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			q.t = t
			q.log = nil
			if err := c.run(); err != nil {
				t.Fatal(err)
			}
			if strings.Join(q.log, " ") != strings.Join(c.want, " ") {
				t.Errorf("launched\n\t%v\nwant\n\t%v", q.log, c.want)
			}
		})
	}
}

func repeat(s []string, n int) []string {
	var out []string
	for i := 0; i < n; i++ {
		out = append(out, s...)
	}
	return out
}

// TestRecordedScratchFreed checks that operations with scratch tensors give
// every one back.
func TestRecordedScratchFreed(t *testing.T) {
	b, _ := recBackend(t)
	defer b.Close()
	f32, bf16, i32 := tensor.F32, tensor.BF16, tensor.I32
	lp, dh, h, w, labels := dev(t, b, f32, 6), dev(t, b, bf16, 6, 8), dev(t, b, f32, 6, 8), dev(t, b, bf16, 21, 8), dev(t, b, i32, 6)
	c, x, wt := dev(t, b, bf16, 6, 5), dev(t, b, f32, 6, 8), dev(t, b, bf16, 5, 8)
	q4, kv, lse := dev(t, b, f32, 1, 6, 2, 4), dev(t, b, f32, 1, 6, 1, 4), dev(t, b, f32, 1, 2, 6)
	cent, counts := dev(t, b, f32, 7, 8), dev(t, b, i32, 7)
	q4tc, kvtc := dev(t, b, bf16, 1, 6, 2, 64), dev(t, b, bf16, 1, 6, 1, 64) // the tensor cores' GQA path
	before := b.InUseBytes()
	for _, run := range []func() error{
		func() error { return b.CrossEntropy(lp, dh, h, w, labels, 8, 1) },
		func() error { return b.MatMul(c, x, wt, false, true, 1, 1) },
		func() error { return b.AttentionBackward(q4, kv, kv, q4, q4, kv, kv, nil, q4, lse, 0.5) },
		func() error {
			return b.AttentionBackward(q4tc, kvtc, kvtc, q4tc, q4tc, kvtc, kvtc, nil, q4tc, lse, 0.5)
		},
		func() error { return b.Embedding(h, w, labels) },
		func() error { return b.Copy(tensor.New(f32, 6, 5), c) },
		func() error { return b.KMeansAssign(labels, lp, h, cent) },
		func() error { return b.KMeansUpdate(cent, counts, h, labels) },
	} {
		if err := run(); err != nil {
			t.Fatal(err)
		}
		if got := b.InUseBytes(); got != before {
			t.Fatalf("%d bytes in use after the operation, %d before: scratch not freed", got, before)
		}
	}
}

// The dS scratch of the tensor-core attention backward is an option, not
// a need: where the device has no room for it, dq is recomputed
// (attention_tc_backward_dq) instead of the backward failing.
func TestRecordedAttentionDSNoRoom(t *testing.T) {
	b, q := recBackend(t)
	defer b.Close()
	const B, T, Hq, Hkv, D = 1, 300, 4, 1, 64
	bf16 := tensor.BF16
	shape, ok := attentionDS(kernels.Sizes{B: B, T: T, Hq: Hq, Hkv: Hkv, D: D})
	if !ok {
		t.Fatalf("dS %v is over the cap", shape)
	}
	scratch := 2
	for _, d := range shape {
		scratch *= d
	}
	qt, k, v := dev(t, b, bf16, B, T, Hq, D), dev(t, b, bf16, B, T, Hkv, D), dev(t, b, bf16, B, T, Hkv, D)
	out, lse := dev(t, b, bf16, B, T, Hq, D), dev(t, b, tensor.F32, B, Hq, T)
	dq, dk, dv, dout := dev(t, b, bf16, B, T, Hq, D), dev(t, b, bf16, B, T, Hkv, D), dev(t, b, bf16, B, T, Hkv, D), dev(t, b, bf16, B, T, Hq, D)
	// No room first: a scratch freed by the second run would stay cached.
	for _, c := range []struct {
		room bool
		dq   string
	}{{false, "attention_tc_backward_dq_d64"}, {true, "attention_tc_backward_dq_ds_d64"}} {
		q.refuse = func(n int) bool { return !c.room && n >= scratch }
		q.log = q.log[:0]
		before := b.InUseBytes()
		checkErr(t, b.AttentionBackward(dq, dk, dv, dout, qt, k, v, nil, out, lse, 0.125))
		want := []string{"attention_backward_delta", "attention_tc_backward_dkdv_d64", "attention_dkdv_sum", c.dq}
		if !slices.Equal(q.log, want) {
			t.Errorf("room for dS %v: launches %v, want %v", c.room, q.log, want)
		}
		if got := b.InUseBytes(); got != before {
			t.Errorf("room for dS %v: %d bytes in use after, %d before", c.room, got, before)
		}
	}
}

// The tensor-core attention at a 128k-token context, Llama-3.1-8B's
// longest (max_position_embeddings 131072), forward and backward with its
// GQA ratio of 4 (4 query heads on 1 kv head: the grid's tile count, not
// its heads, is what grows) and packed documents: the tensor-core kernels
// are chosen, and every launch's grid, block, shared memory and arguments
// pass the recording queue's checks. No value is computed.
func TestRecordedAttention128k(t *testing.T) {
	b, q := recBackend(t)
	defer b.Close()
	const T, Hq, Hkv, D = 131072, 4, 1, 128
	empty := func(dt tensor.DType, shape ...int) *tensor.Tensor {
		x, err := b.Empty(dt, shape...)
		checkErr(t, err)
		return x
	}
	bf16 := tensor.BF16
	qt, k, v := empty(bf16, 1, T, Hq, D), empty(bf16, 1, T, Hkv, D), empty(bf16, 1, T, Hkv, D)
	out, lse, docs := empty(bf16, 1, T, Hq, D), empty(tensor.F32, 1, Hq, T), empty(tensor.I32, 1, T)
	checkErr(t, b.Attention(out, lse, qt, k, v, docs, 0.088))
	dq, dk, dv, dout := empty(bf16, 1, T, Hq, D), empty(bf16, 1, T, Hkv, D), empty(bf16, 1, T, Hkv, D), empty(bf16, 1, T, Hq, D)
	checkErr(t, b.AttentionBackward(dq, dk, dv, dout, qt, k, v, docs, out, lse, 0.088))
	// The causal half of dS would take 64 GiB: dq is recomputed
	// (attentionDS).
	want := []string{"attention_tc_forward_d128", "attention_backward_delta", "attention_tc_backward_dkdv_d128", "attention_tc_backward_dq_d128"}
	if !slices.Equal(q.log, want) {
		t.Errorf("launches %v, want %v", q.log, want)
	}
}

// A split LoRA product passes its partial sums' scratch and the tile
// counters (lora_finish); one whose output has more tiles than there are
// counters is not split.
func TestLoRASplitsCapped(t *testing.T) {
	b, q := recBackend(t)
	defer b.Close()
	var ws, tiles []uintptr
	q.onLaunch = func(kernel string, args *Args) {
		ws, tiles = append(ws, args.ptrAt(2)), append(tiles, args.ptrAt(3))
	}
	const K = 2 * kernels.LoRANarrowDepth // two chunks of one stage
	for _, tilesWanted := range []int{loraTileCounters, loraTileCounters + 1} {
		N := tilesWanted * 64 // lora_narrow's tokens per block; R = 1: one row of blocks
		c, err := b.Empty(tensor.F32, 1, N)
		checkErr(t, err)
		p, err := b.Empty(tensor.F32, 1, K)
		checkErr(t, err)
		x, err := b.Empty(tensor.F32, N, K)
		checkErr(t, err)
		checkErr(t, b.narrowMatMul(c, p, x, false, 1, 0, 2))
		b.Free(c)
		b.Free(p)
		b.Free(x)
	}
	if len(ws) != 2 || ws[0] == 0 || ws[1] != 0 || tiles[0] != b.tiles || tiles[1] != b.tiles || b.tiles == 0 {
		t.Errorf("partial sums %#x, counters %#x (the backend's %#x): want a scratch for %d tiles and none past, the counters for both",
			ws, tiles, b.tiles, loraTileCounters)
	}
}

// TestRecordedRoundTrip moves tensors of every dtype to the fake device and
// back.
func TestRecordedRoundTrip(t *testing.T) {
	b, _ := recBackend(t)
	defer b.Close()
	for _, dt := range []tensor.DType{tensor.F32, tensor.BF16, tensor.F16, tensor.I32} {
		h := tensor.New(dt, 3, 5)
		for i := range h.Bytes() {
			h.Bytes()[i] = byte(i*7 + 1)
		}
		d, err := b.ToDevice(h)
		if err != nil {
			t.Fatal(err)
		}
		if d.OnHost() || !d.SameShape(h) || d.DType() != dt {
			t.Fatalf("ToDevice(%v) = %v on host %v", h, d, d.OnHost())
		}
		if again, _ := b.ToDevice(d); again != d {
			t.Errorf("ToDevice of a device tensor copied it")
		}
		back, err := b.ToHost(d)
		if err != nil {
			t.Fatal(err)
		}
		if string(back.Bytes()) != string(h.Bytes()) {
			t.Errorf("%s: round trip changed the bytes", dt)
		}
		z, err := b.Alloc(dt, 4)
		if err != nil {
			t.Fatal(err)
		}
		zh, _ := b.ToHost(z)
		for _, v := range zh.Bytes() {
			if v != 0 {
				t.Fatalf("%s: Alloc is not zeroed", dt)
			}
		}
	}
	e, err := b.Alloc(tensor.F32, 0, 3)
	if err != nil || e.NumElements() != 0 {
		t.Fatalf("Alloc of no elements: %v, %v", e, err)
	}
	b.Free(e)
}

// TestRecordedErrors checks operand validation and the embedding's bad-id
// report.
func TestRecordedErrors(t *testing.T) {
	b, q := recBackend(t)
	defer b.Close()
	f32, i32 := tensor.F32, tensor.I32
	host := tensor.New(f32, 4)
	for name, err := range map[string]error{
		"host operand":     b.Add(dev(t, b, f32, 4), host, dev(t, b, f32, 4)),
		"broadcast":        b.Add(dev(t, b, f32, 4, 3), dev(t, b, f32, 4, 3), dev(t, b, f32, 4)),
		"add cast shape":   b.AddCast(dev(t, b, f32, 4, 3), dev(t, b, f32, 3, 4), dev(t, b, f32, 4, 3), dev(t, b, f32, 3)),
		"add cast ids":     b.AddCast(dev(t, b, f32, 4), dev(t, b, i32, 4), dev(t, b, f32, 4), dev(t, b, f32, 4)),
		"rope cast ids":    b.RoPEPairCast(dev(t, b, f32, 2, 1, 4), dev(t, b, f32, 2, 1, 4), dev(t, b, i32, 2, 1, 4), dev(t, b, f32, 2, 1, 4), dev(t, b, f32, 2, 1, 4), dev(t, b, f32, 2, 1, 4), dev(t, b, f32, 2, 2), dev(t, b, f32, 2, 2), false),
		"matmul inner":     b.MatMul(dev(t, b, f32, 2, 2), dev(t, b, f32, 2, 3), dev(t, b, f32, 2, 2), false, false, 1, 0),
		"matmul ids":       b.MatMul(dev(t, b, f32, 2, 2), dev(t, b, i32, 2, 2), dev(t, b, f32, 2, 2), false, false, 1, 0),
		"attention head":   b.Attention(dev(t, b, f32, 1, 2, 1, 256), dev(t, b, f32, 1, 1, 2), dev(t, b, f32, 1, 2, 1, 256), dev(t, b, f32, 1, 2, 1, 256), dev(t, b, f32, 1, 2, 1, 256), nil, 1),
		"attention docs":   b.Attention(dev(t, b, f32, 1, 2, 1, 8), dev(t, b, f32, 1, 1, 2), dev(t, b, f32, 1, 2, 1, 8), dev(t, b, f32, 1, 2, 1, 8), dev(t, b, f32, 1, 2, 1, 8), dev(t, b, f32, 1, 2), 1),
		"adamw step":       b.AdamW(nil, nil, nil, nil, 0, 1, 0.9, 0.99, 1e-8, 0),
		"cross entropy id": b.CrossEntropy(dev(t, b, f32, 2), nil, dev(t, b, f32, 2, 4), dev(t, b, f32, 3, 4), idsTensor(t, b, 1, 3), 0, 1),
		"copy counts":      b.Copy(dev(t, b, f32, 3), dev(t, b, f32, 4)),
		"copy ids to f32":  b.Copy(dev(t, b, f32, 3), dev(t, b, i32, 3)),
	} {
		if err == nil {
			t.Errorf("%s: no error", name)
		} else if !strings.HasPrefix(err.Error(), "cuda: ") {
			t.Errorf("%s: %v: errors start with \"cuda: \"", name, err)
		}
	}

	// The kernel reports position 2 as bad; the error names its id.
	q.onLaunch = func(kernel string, args *Args) {
		if kernel != "embedding_forward" {
			return
		}
		copy(q.mem("bad", args.ptrAt(args.Len()-1), 4), []byte{2, 0, 0, 0})
	}
	err := b.Embedding(dev(t, b, f32, 3, 4), dev(t, b, f32, 5, 4), idsTensor(t, b, 0, 1, 9))
	if err == nil || !strings.Contains(err.Error(), "id 9 at position 2 is outside the vocabulary [0, 5)") {
		t.Errorf("embedding with a bad id: %v", err)
	}
}

func idsTensor(t *testing.T, b *Backend, ids ...int32) *tensor.Tensor {
	h, _ := tensor.FromI32(ids, len(ids))
	d, err := b.ToDevice(h)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestKernelsUsedExist lists the kernels the backend launches and checks
// that the kernels package has each, with PTX for every architecture.
func TestKernelsUsedExist(t *testing.T) {
	sigs, err := ptxSignatures()
	if err != nil {
		t.Fatal(err)
	}
	used := []string{"elementwise_cast", "elementwise_add", "elementwise_mul", "elementwise_scale", "embedding_forward",
		"rmsnorm_forward", "rmsnorm_backward", "rope", "attention_forward", "attention_backward_delta",
		"attention_backward_dq", "attention_backward_dkdv", "attention_tc_forward_d64", "attention_tc_backward_dq_d64",
		"attention_tc_backward_dkdv_d64", "attention_tc_backward_dq_ds_d64", "attention_dkdv_sum", "swiglu_forward", "swiglu_backward", "ce_init",
		"ce_chunk_update", "ce_rescale", "ce_finalize", "adamw", "zero_tensors", "lora_narrow", "lora_grad", "lora_expand", "embedding_backward", "kmeans_sqnorm",
		"kmeans_assign", "kmeans_split", "kmeans_assign_tc", "kmeans_assign_tc_split", "kmeans_chunk_counts",
		"kmeans_chunk_offsets", "kmeans_cluster_starts", "kmeans_scatter", "kmeans_segment_mean"}
	for _, name := range used {
		if _, err := kernels.Lookup(name); err != nil {
			t.Errorf("%v", err)
		}
		if _, ok := sigs[name]; !ok {
			t.Errorf("%s: not in the PTX", name)
		}
	}
	var names []string
	for name := range sigs {
		names = append(names, name)
	}
	sort.Strings(names)
	t.Logf("PTX entry points: %s", strings.Join(names, ", "))
}

// The LoRA kernels' operations refuse shapes that do not fit, naming them,
// and launch nothing: inner dimensions that differ, an output of the wrong
// shape, a host tensor.
func TestLoRAKernelShapeErrors(t *testing.T) {
	b, q := recBackend(t)
	defer b.Close()
	f32 := tensor.F32
	host := tensor.New(f32, 3, 10)
	for _, c := range []struct {
		name, want string
		call       func() error
	}{
		{"narrow, inner dimensions", "inner dimensions differ", func() error {
			return b.NarrowMatMul(dev(t, b, f32, 3, 10), dev(t, b, f32, 3, 16), dev(t, b, f32, 10, 17), false, 1, 0)
		}},
		{"narrow, output", "is not [3 10]", func() error {
			return b.NarrowMatMul(dev(t, b, f32, 10, 3), dev(t, b, f32, 3, 16), dev(t, b, f32, 10, 16), false, 1, 0)
		}},
		{"grad, inner dimensions", "inner dimensions differ", func() error {
			return b.GradMatMul(dev(t, b, f32, 3, 16), dev(t, b, f32, 3, 10), dev(t, b, f32, 11, 16), false, 1, 1)
		}},
		{"grad, transposed output", "is not [16 3]", func() error {
			return b.GradMatMul(dev(t, b, f32, 3, 16), dev(t, b, f32, 3, 10), dev(t, b, f32, 10, 16), true, 1, 1)
		}},
		{"expand, inner dimensions", "inner dimensions differ", func() error {
			return b.ExpandMatMul(dev(t, b, f32, 10, 16), dev(t, b, f32, 3, 10), dev(t, b, f32, 4, 16), false, 1, 0)
		}},
		{"expand, host tensor", "host memory", func() error {
			return b.ExpandMatMul(dev(t, b, f32, 10, 16), host, dev(t, b, f32, 3, 16), false, 1, 0)
		}},
	} {
		q.log = nil
		err := c.call()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one saying %q", c.name, err, c.want)
		}
		if len(q.log) != 0 {
			t.Errorf("%s: %d launches after the error", c.name, len(q.log))
		}
	}
}

// TestDkdvPerHead checks the rule that picks one query head per block for
// the tensor-core dk/dv kernel: only under GQA, and only while a kv head's
// blocks would number fewer than four per SM (132 SMs here).
func TestDkdvPerHead(t *testing.T) {
	b, _ := recBackend(t)
	defer b.Close()
	for _, c := range []struct {
		B, T, Hq, Hkv int
		want          bool
	}{
		{1, 2048, 32, 8, true},  // Llama-3.1-8B at 2048: 256 blocks
		{1, 4160, 32, 8, true},  // 65 key tiles x 8: 520 blocks
		{1, 4224, 32, 8, false}, // 66 x 8: 528, four per SM
		{1, 8192, 28, 4, true},  // Qwen2.5-7B: 128 x 4 = 512
		{4, 8192, 28, 4, false}, // four rows: 2048
		{1, 100, 32, 32, false}, // no GQA: nothing to add up
	} {
		s := kernels.Sizes{B: c.B, T: c.T, Hq: c.Hq, Hkv: c.Hkv, D: 128, Heads: c.Hq / c.Hkv}
		if got := b.dkdvPerHead("attention_tc_backward_dkdv_d128", s); got != c.want {
			t.Errorf("B %d T %d heads %d/%d: one head per block %v, want %v", c.B, c.T, c.Hq, c.Hkv, got, c.want)
		}
	}
}
