package cgo

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/compassml/compass/kernels"
	"github.com/compassml/compass/tensor"
)

// The operations check their operands as the CPU backend does (the same
// conditions, errors prefixed "cuda:"), then launch the kernels of package
// kernels, asynchronously, on the device's stream.

// deviceCheck refuses host tensors (nil ones are skipped).
func deviceCheck(op string, ts ...*tensor.Tensor) error {
	for _, t := range ts {
		if t != nil && t.OnHost() {
			return fmt.Errorf("cuda: %s: %v is in host memory; the CUDA backend works on device tensors (ToDevice)", op, t)
		}
	}
	return nil
}

// floatCheck refuses host tensors and non-float ones.
func floatCheck(op string, ts ...*tensor.Tensor) error {
	if err := deviceCheck(op, ts...); err != nil {
		return err
	}
	for _, t := range ts {
		if t != nil && !t.DType().IsFloat() {
			return fmt.Errorf("cuda: %s: %v is not a floating-point tensor", op, t)
		}
	}
	return nil
}

// int32Check refuses sizes the kernels' int parameters cannot hold.
func int32Check(op string, sizes ...int) error {
	for _, n := range sizes {
		if n > math.MaxInt32 {
			return fmt.Errorf("cuda: %s: size %d is beyond the kernels' 32-bit sizes", op, n)
		}
	}
	return nil
}

// Tensor adds a float device tensor as the kernels take one of any dtype
// (void* and int dtype code). A nil tensor is a null pointer.
func (a *Args) Tensor(t *tensor.Tensor) *Args {
	if t == nil {
		return a.Ptr(0).I32(kernels.F32)
	}
	return a.Raw(t).I32(dtCode(t.DType()))
}

// Raw adds a device tensor's address alone, for a parameter of a fixed
// type (float*, int*). A nil tensor is a null pointer.
func (a *Args) Raw(t *tensor.Tensor) *Args {
	if t == nil {
		return a.Ptr(0)
	}
	mem, _ := t.Device()
	return a.Ptr(mem.Ptr)
}

// rows is the product of all dimensions but the last.
func rows(t *tensor.Tensor) int {
	n := 1
	for i := 0; i < t.Rank()-1; i++ {
		n *= t.Dim(i)
	}
	return n
}

// cast converts src into dst (same element count, any float dtypes).
func (b *Backend) cast(dst, src *tensor.Tensor) error {
	if err := floatCheck("copy", dst, src); err != nil {
		return err
	}
	n := src.NumElements()
	if n == 0 {
		return nil
	}
	args := new(Args).Tensor(dst).Tensor(src).U64(n)
	return b.q.launch("copy", "elementwise_cast", kernels.Sizes{N: n}, args)
}

// castTo returns t converted to dtype in a new device tensor, or t itself
// when it has that dtype already (then free is false).
func (b *Backend) castTo(t *tensor.Tensor, dtype tensor.DType) (c *tensor.Tensor, free bool, err error) {
	if t.DType() == dtype {
		return t, false, nil
	}
	if c, err = b.alloc(dtype, t.Shape()...); err != nil {
		return nil, false, err
	}
	if err := b.cast(c, t); err != nil {
		b.Free(c)
		return nil, false, err
	}
	return c, true, nil
}

// broadcastCheck validates out = a (op) b with b equal to a's shape or to
// its trailing dimensions.
func broadcastCheck(op string, out, a, b *tensor.Tensor) error {
	if err := floatCheck(op, out, a, b); err != nil {
		return err
	}
	if !out.SameShape(a) {
		return fmt.Errorf("cuda: %s: out %v != a %v", op, out, a)
	}
	if b.Rank() > a.Rank() {
		return fmt.Errorf("cuda: %s: b %v does not broadcast to a %v", op, b, a)
	}
	off := a.Rank() - b.Rank()
	for i := 0; i < b.Rank(); i++ {
		if b.Dim(i) != a.Dim(off+i) {
			return fmt.Errorf("cuda: %s: b %v does not broadcast to a %v", op, b, a)
		}
	}
	return nil
}

// Add implements tensor.Backend.
func (b *Backend) Add(out, x, y *tensor.Tensor) error {
	return b.AddCast(out, nil, x, y)
}

// AddCast is Add writing out twice: into out and, cast to its own dtype,
// into cast (out's shape; nil for none), in one pass: cast holds what
// Copy(cast, out) would. The model gives it the residual stream's
// gradient in the backward and the bf16 input of the frozen product that
// reads it next (o_proj's dx, and the layer below's down_proj dx).
func (b *Backend) AddCast(out, cast, x, y *tensor.Tensor) error {
	const op = "add"
	if err := broadcastCheck(op, out, x, y); err != nil {
		return err
	}
	if cast != nil {
		if err := floatCheck(op, cast); err != nil {
			return err
		}
		if !cast.SameShape(out) {
			return fmt.Errorf("cuda: %s: cast %v must have the shape of out %v", op, cast, out)
		}
	}
	n, nb := x.NumElements(), y.NumElements()
	if n == 0 || nb == 0 {
		return nil
	}
	args := new(Args).Tensor(out).Tensor(cast).Tensor(x).Tensor(y).U64(n).U64(nb)
	return b.q.launch(op, "elementwise_add", kernels.Sizes{N: n}, args)
}

// Mul implements tensor.Backend.
func (b *Backend) Mul(out, x, y *tensor.Tensor) error {
	const op = "mul"
	if err := broadcastCheck(op, out, x, y); err != nil {
		return err
	}
	n, nb := x.NumElements(), y.NumElements()
	if n == 0 || nb == 0 {
		return nil
	}
	args := new(Args).Tensor(out).Tensor(x).Tensor(y).U64(n).U64(nb)
	return b.q.launch(op, "elementwise_mul", kernels.Sizes{N: n}, args)
}

// Scale implements tensor.Backend.
func (b *Backend) Scale(out, x *tensor.Tensor, s float32) error {
	if err := floatCheck("scale", out, x); err != nil {
		return err
	}
	if !out.SameShape(x) {
		return fmt.Errorf("cuda: scale: out %v != a %v", out, x)
	}
	n := x.NumElements()
	if n == 0 {
		return nil
	}
	args := new(Args).Tensor(out).Tensor(x).F32(s).U64(n)
	return b.q.launch("scale", "elementwise_scale", kernels.Sizes{N: n}, args)
}

// reduce runs the CPU's Sum or Mean on a host copy of x (compass calls
// them on small tensors: a loss, a norm) and writes the result into out.
// Accumulation is in float64 there, as the contract says.
func (b *Backend) reduce(op string, out, x *tensor.Tensor, f func(cpu *tensor.CPU, out, x *tensor.Tensor) error) error {
	if err := floatCheck(op, out, x); err != nil {
		return err
	}
	if out.NumElements() != 1 {
		return fmt.Errorf("cuda: %s: out %v must have one element", op, out)
	}
	hx, err := b.ToHost(x)
	if err != nil {
		return err
	}
	r := tensor.New(out.DType(), out.Shape()...)
	if err := f(tensor.NewCPU(), r, hx); err != nil {
		return err
	}
	return b.copyBytes(out, r)
}

// Sum implements tensor.Backend (on the host: see reduce).
func (b *Backend) Sum(out, x *tensor.Tensor) error {
	return b.reduce("sum", out, x, func(c *tensor.CPU, o, x *tensor.Tensor) error { return c.Sum(o, x) })
}

// Mean implements tensor.Backend (on the host: see reduce).
func (b *Backend) Mean(out, x *tensor.Tensor) error {
	return b.reduce("mean", out, x, func(c *tensor.CPU, o, x *tensor.Tensor) error { return c.Mean(o, x) })
}

// Embedding implements tensor.Backend. The kernel records the first id
// outside the vocabulary; the host reads that flag back (a small copy that
// waits for the launch) to report the id and its position as the CPU does.
func (b *Backend) Embedding(out, table, ids *tensor.Tensor) error {
	if err := floatCheck("embedding", out, table); err != nil {
		return err
	}
	if err := deviceCheck("embedding", ids); err != nil {
		return err
	}
	if ids.DType() != tensor.I32 {
		return fmt.Errorf("cuda: embedding: ids %v must be I32", ids)
	}
	if table.Rank() != 2 {
		return fmt.Errorf("cuda: embedding: table %v must be [V, H]", table)
	}
	V, H := table.Dim(0), table.Dim(1)
	n := ids.NumElements()
	if out.Rank() == 0 || out.Dim(-1) != H || out.NumElements() != n*H {
		return fmt.Errorf("cuda: embedding: out %v must hold %d rows of %d (ids %v, table %v)", out, n, H, ids, table)
	}
	if err := int32Check("embedding", n, H, V); err != nil {
		return err
	}
	if n == 0 || H == 0 {
		return nil
	}
	bad, err := b.alloc(tensor.I32, 1)
	if err != nil {
		return err
	}
	defer b.Free(bad)
	badMem, _ := bad.Device()
	if err := b.q.memsetD32(badMem.Ptr, math.MaxInt32, 1); err != nil {
		return err
	}
	args := new(Args).Tensor(out).Tensor(table).Raw(ids).I32(n).I32(H).I32(V).Raw(bad)
	if err := b.q.launch("embedding", "embedding_forward", kernels.Sizes{N: n, H: H}, args); err != nil {
		return err
	}
	var word [4]byte
	if err := b.q.download(word[:], badMem.Ptr); err != nil {
		return err
	}
	pos := int(int32(binary.LittleEndian.Uint32(word[:])))
	if pos == math.MaxInt32 {
		return nil
	}
	idsMem, _ := ids.Device()
	if err := b.q.download(word[:], idsMem.Ptr+uintptr(4*pos)); err != nil {
		return err
	}
	id := int32(binary.LittleEndian.Uint32(word[:]))
	return fmt.Errorf("cuda: embedding: id %d at position %d is outside the vocabulary [0, %d)", id, pos, V)
}

// embeddingBackward adds the rows of dout [..., H] into the rows of dtable
// F32 [V, H] that ids select: repeated ids add up (float atomics, so the
// last bits vary from run to run), ids outside [0, V) are skipped (the
// forward reported them). No tensor.Backend operation needs it, since
// compass keeps embeddings frozen; it is the kernel's launch in Go, which
// the GPU tests run like every other operation's.
func (b *Backend) embeddingBackward(dtable, dout, ids *tensor.Tensor) error {
	const op = "embedding backward"
	if err := floatCheck(op, dtable, dout); err != nil {
		return err
	}
	if err := deviceCheck(op, ids); err != nil {
		return err
	}
	if dtable.DType() != tensor.F32 || dtable.Rank() != 2 {
		return fmt.Errorf("cuda: %s: dtable %v must be F32 [V, H]", op, dtable)
	}
	if ids.DType() != tensor.I32 {
		return fmt.Errorf("cuda: %s: ids %v must be I32", op, ids)
	}
	V, H := dtable.Dim(0), dtable.Dim(1)
	n := ids.NumElements()
	if dout.Rank() == 0 || dout.Dim(-1) != H || dout.NumElements() != n*H {
		return fmt.Errorf("cuda: %s: dout %v must hold %d rows of %d (ids %v, dtable %v)", op, dout, n, H, ids, dtable)
	}
	if err := int32Check(op, n, H, V); err != nil {
		return err
	}
	if n == 0 || H == 0 {
		return nil
	}
	args := new(Args).Raw(dtable).Tensor(dout).Raw(ids).I32(n).I32(H).I32(V)
	return b.q.launch(op, "embedding_backward", kernels.Sizes{N: n, H: H}, args)
}

// normShapes checks x [..., H], weight [H], the tensors shaped like x and
// rstd (F32, one per row), and returns the rows and H.
func normShapes(op string, x, weight, rstd *tensor.Tensor, likeX ...*tensor.Tensor) (nrows, H int, err error) {
	if err := floatCheck(op, append([]*tensor.Tensor{x, weight}, likeX...)...); err != nil {
		return 0, 0, err
	}
	if err := deviceCheck(op, rstd); err != nil {
		return 0, 0, err
	}
	if x.Rank() == 0 {
		return 0, 0, fmt.Errorf("cuda: %s: x %v must have a hidden dimension", op, x)
	}
	H = x.Dim(-1)
	if weight.Rank() != 1 || weight.Dim(0) != H {
		return 0, 0, fmt.Errorf("cuda: %s: weight %v must be [%d] for x %v", op, weight, H, x)
	}
	for _, t := range likeX {
		if !t.SameShape(x) {
			return 0, 0, fmt.Errorf("cuda: %s: %v must have the shape of x %v", op, t, x)
		}
	}
	nrows = rows(x)
	if rstd.DType() != tensor.F32 || rstd.NumElements() != nrows {
		return 0, 0, fmt.Errorf("cuda: %s: rstd %v must be F32 with %d elements, one per row of x %v", op, rstd, nrows, x)
	}
	return nrows, H, int32Check(op, nrows, H)
}

// RMSNorm implements tensor.Backend. out may be of another dtype than x:
// the row is computed in float32 and rounded once as it is written (the
// model writes n1 and n2 in bf16, inputDType).
func (b *Backend) RMSNorm(out, rstd, x, weight *tensor.Tensor, eps float32) error {
	n, H, err := normShapes("rmsnorm", x, weight, rstd, out)
	if err != nil || n == 0 {
		return err
	}
	args := new(Args).Tensor(out).Raw(rstd).Tensor(x).Tensor(weight).I32(n).I32(H).F32(eps)
	return b.q.launch("rmsnorm", "rmsnorm_forward", kernels.Sizes{N: n, H: H}, args)
}

// ProductInput is the dtype MatMul multiplies an x of dtype x by a weight
// of dtype w in (cuBLAS takes one dtype: a float32 x is rounded to a 16-bit
// weight's dtype, unless Precise). An x already of that dtype is not cast.
func (b *Backend) ProductInput(x, w tensor.DType) tensor.DType {
	return gemmInputDType(x, w, b.Precise)
}

// RMSNormBackward implements tensor.Backend.
func (b *Backend) RMSNormBackward(dx, dout, x, weight, rstd *tensor.Tensor) error {
	n, H, err := normShapes("rmsnorm backward", x, weight, rstd, dx, dout)
	if err != nil || n == 0 {
		return err
	}
	args := new(Args).Tensor(dx).Tensor(dout).Tensor(x).Tensor(weight).Raw(rstd).I32(n).I32(H)
	return b.q.launch("rmsnorm backward", "rmsnorm_backward", kernels.Sizes{N: n, H: H}, args)
}

// RoPE implements tensor.Backend.
func (b *Backend) RoPE(out, x, cos, sin *tensor.Tensor, inverse bool) error {
	return b.rope(out, nil, x, nil, nil, nil, cos, sin, inverse)
}

// RoPEPair rotates q [N, Hq, D] into qOut and k [N, Hkv, D] into kOut
// with the same tables, in one launch: RoPE(qOut, q, ...) and RoPE(kOut,
// k, ...), bit for bit. An output may be its input (in place) or of
// another dtype (the model's bf16 q and k for attention, AttentionRounds).
func (b *Backend) RoPEPair(qOut, kOut, q, k, cos, sin *tensor.Tensor, inverse bool) error {
	return b.rope(qOut, nil, q, kOut, nil, k, cos, sin, inverse)
}

// RoPEPairCast is RoPEPair writing the rotated values a second time, into
// qCast and kCast (the shapes of q and k, in their own dtype) in the same
// launch, as AddCast: RoPE's inverse in the backward gives dq and dk in
// float32 for the LoRA products and in bf16 for the frozen q and k
// products, which would otherwise each cast them. From float32 outputs the
// casts are the bits Copy would give.
func (b *Backend) RoPEPairCast(qOut, kOut, qCast, kCast, q, k, cos, sin *tensor.Tensor, inverse bool) error {
	if qCast == nil || kCast == nil {
		return fmt.Errorf("cuda: rope: RoPEPairCast needs both casts (q's %v, k's %v)", qCast, kCast)
	}
	return b.rope(qOut, qCast, q, kOut, kCast, k, cos, sin, inverse)
}

// rope launches the rope kernel on x into out (and cast, when not nil)
// and, when x2 is not nil, on x2 into out2 (and cast2): the same N, head
// dimension and tables; any head count.
func (b *Backend) rope(out, cast, x, out2, cast2, x2, cos, sin *tensor.Tensor, inverse bool) error {
	N, heads, D, half, err := ropeShape(out, cast, x, cos, sin)
	if err != nil {
		return err
	}
	heads2 := 0
	if x2 != nil {
		var N2, D2 int
		if N2, heads2, D2, _, err = ropeShape(out2, cast2, x2, cos, sin); err != nil {
			return err
		}
		if N2 != N || D2 != D {
			return fmt.Errorf("cuda: rope: x2 %v does not have the tokens and head dimension of x %v", x2, x)
		}
	}
	if err := int32Check("rope", N*(heads+heads2)*D); err != nil {
		return err
	}
	if N*D == 0 || heads+heads2 == 0 {
		return nil
	}
	inv := 0
	if inverse {
		inv = 1
	}
	args := new(Args).Tensor(out).Tensor(cast).Tensor(x).Tensor(out2).Tensor(cast2).Tensor(x2).Raw(cos).Raw(sin).
		I32(N).I32(heads).I32(heads2).I32(D).I32(half).I32(inv)
	return b.q.launch("rope", "rope", kernels.Sizes{N: N, Heads: heads + heads2, D: D, Half: half}, args)
}

// ropeShape checks one rotated tensor, its outputs (cast may be nil) and
// its tables and returns N, heads, the head dimension and R/2.
func ropeShape(out, cast, x, cos, sin *tensor.Tensor) (N, heads, D, half int, err error) {
	if err := floatCheck("rope", out, x); err != nil {
		return 0, 0, 0, 0, err
	}
	if cast != nil {
		if err := floatCheck("rope", cast); err != nil {
			return 0, 0, 0, 0, err
		}
		if !cast.SameShape(out) {
			return 0, 0, 0, 0, fmt.Errorf("cuda: rope: cast %v must have the shape of out %v", cast, out)
		}
	}
	if err := deviceCheck("rope", cos, sin); err != nil {
		return 0, 0, 0, 0, err
	}
	if x.Rank() < 3 {
		return 0, 0, 0, 0, fmt.Errorf("cuda: rope: x %v must be [N, heads, headDim]", x)
	}
	if !out.SameShape(x) {
		return 0, 0, 0, 0, fmt.Errorf("cuda: rope: out %v != x %v", out, x)
	}
	if cos.DType() != tensor.F32 || sin.DType() != tensor.F32 || cos.Rank() != 2 || !sin.SameShape(cos) {
		return 0, 0, 0, 0, fmt.Errorf("cuda: rope: cos %v and sin %v must both be F32 [N, R/2]", cos, sin)
	}
	heads, D = x.Dim(-2), x.Dim(-1)
	N = 1
	for i := 0; i < x.Rank()-2; i++ {
		N *= x.Dim(i)
	}
	half = cos.Dim(1)
	if cos.Dim(0) != N || 2*half > D {
		return 0, 0, 0, 0, fmt.Errorf("cuda: rope: cos %v does not fit x %v: want [%d, R/2] with R <= %d", cos, x, N, D)
	}
	return N, heads, D, half, int32Check("rope", N, heads, D, N*heads*D)
}

// attnCheck validates q, k, v, lse and the tensors shaped like q or k, as
// the CPU does, and that the head dimension fits the kernels.
func attnCheck(op string, q, k, v, lse *tensor.Tensor, likeQ, likeKV []*tensor.Tensor) (kernels.Sizes, error) {
	var s kernels.Sizes
	all := append(append([]*tensor.Tensor{q, k, v}, likeQ...), likeKV...)
	if err := floatCheck(op, all...); err != nil {
		return s, err
	}
	if err := deviceCheck(op, lse); err != nil {
		return s, err
	}
	if q.Rank() != 4 || k.Rank() != 4 {
		return s, fmt.Errorf("cuda: %s: q %v and k %v must be [B, T, heads, D]", op, q, k)
	}
	s = kernels.Sizes{B: q.Dim(0), T: q.Dim(1), Hq: q.Dim(2), Hkv: k.Dim(2), D: q.Dim(3)}
	if k.Dim(0) != s.B || k.Dim(1) != s.T || k.Dim(3) != s.D {
		return s, fmt.Errorf("cuda: %s: k %v does not match q %v", op, k, q)
	}
	if s.Hkv == 0 || s.Hq%s.Hkv != 0 {
		return s, fmt.Errorf("cuda: %s: %d query heads are not a multiple of %d kv heads", op, s.Hq, s.Hkv)
	}
	for _, t := range append([]*tensor.Tensor{v}, likeKV...) {
		if !t.SameShape(k) {
			return s, fmt.Errorf("cuda: %s: %v must have the shape of k %v", op, t, k)
		}
	}
	for _, t := range likeQ {
		if !t.SameShape(q) {
			return s, fmt.Errorf("cuda: %s: %v must have the shape of q %v", op, t, q)
		}
	}
	if lse.DType() != tensor.F32 || lse.NumElements() != s.B*s.Hq*s.T {
		return s, fmt.Errorf("cuda: %s: lse %v must be F32 [%d %d %d]", op, lse, s.B, s.Hq, s.T)
	}
	if s.D > kernels.AttentionMaxHeadDim {
		return s, fmt.Errorf("cuda: %s: head dimension %d is above the kernels' %d", op, s.D, kernels.AttentionMaxHeadDim)
	}
	if s.T > 65535*16 || s.Hq > 65535 || s.B > 65535 {
		return s, fmt.Errorf("cuda: %s: q %v is beyond the kernels' grid", op, q)
	}
	return s, int32Check(op, q.NumElements())
}

// docStartCheck validates docStart (nil, or I32 [B, T] on the device). Its
// values stay on the device, unchecked: reading them back would stall the
// stream at every layer. The kernels clamp each to [0, t], so a bad one
// gives wrong results, never an access out of bounds; the model builds
// docStart from document lengths it has checked.
func docStartCheck(op string, docStart *tensor.Tensor, s kernels.Sizes) error {
	if docStart == nil {
		return nil
	}
	if err := deviceCheck(op, docStart); err != nil {
		return err
	}
	if docStart.DType() != tensor.I32 || docStart.NumElements() != s.B*s.T {
		return fmt.Errorf("cuda: %s: docStart %v must be I32 [%d %d]", op, docStart, s.B, s.T)
	}
	return nil
}

// Attention implements tensor.Backend.
func (b *Backend) Attention(out, lse, q, k, v, docStart *tensor.Tensor, scale float32) error {
	s, err := attnCheck("attention", q, k, v, lse, []*tensor.Tensor{out}, nil)
	if err == nil {
		err = docStartCheck("attention", docStart, s)
	}
	if err != nil || s.B*s.T*s.Hq*s.D == 0 {
		return err
	}
	if name, ok := attentionTC("attention_tc_forward", s, out, q, k, v); ok {
		args := new(Args).Raw(out).Raw(lse).Raw(q).Raw(k).Raw(v).Raw(docStart).
			I32(s.B).I32(s.T).I32(s.Hq).I32(s.Hkv).F32(scale)
		return b.q.launch("attention", name, s, args)
	}
	if b.roundAttention(s, out, q, k, v) {
		return b.attentionRounded(out, lse, q, k, v, docStart, scale)
	}
	args := new(Args).Tensor(out).Raw(lse).Tensor(q).Tensor(k).Tensor(v).Raw(docStart).
		I32(s.B).I32(s.T).I32(s.Hq).I32(s.Hkv).I32(s.D).F32(scale)
	return b.q.launch("attention", "attention_forward", s, args)
}

// attentionTC returns the tensor-core kernel prefix_dD (attention_tc.cu)
// when it can do the work: every tensor bf16, a head dimension it was
// built for, and addresses 16-byte aligned for its 16-byte copies. Else
// the float32 kernels of attention.cu do it.
func attentionTC(prefix string, s kernels.Sizes, ts ...*tensor.Tensor) (string, bool) {
	if !slices.Contains(kernels.AttentionTCHeadDims, s.D) {
		return "", false
	}
	for _, t := range ts {
		mem, _ := t.Device()
		if t.DType() != tensor.BF16 || mem.Ptr%16 != 0 {
			return "", false
		}
	}
	return fmt.Sprintf("%s_d%d", prefix, s.D), true
}

// roundAttention reports whether attention should run on the tensor cores
// with its float32 tensors rounded to bf16: not in Precise mode, a head
// dimension the tensor-core kernels have, every tensor float32 or bf16,
// and one at least float32 (bf16 ones are taken as they are: the model
// keeps q, k, v and the output in bf16 where this rounding would make them
// so, AttentionRounds). It is MatMul's rule for a float32 activation
// (rounded to bf16 unless Precise) applied to attention, and it is what a
// bf16 model does in PyTorch's flash SDPA; the float32 kernels stay for
// Precise mode and parity checks.
func (b *Backend) roundAttention(s kernels.Sizes, ts ...*tensor.Tensor) bool {
	if b.Precise || !slices.Contains(kernels.AttentionTCHeadDims, s.D) {
		return false
	}
	f32 := false
	for _, t := range ts {
		switch t.DType() {
		case tensor.F32:
			f32 = true
		case tensor.BF16:
		default:
			return false
		}
	}
	return f32
}

// AttentionRounds reports whether Attention and AttentionBackward round
// float32 tensors with head dimension d to bf16 (roundAttention): a model
// (model/forward.go) may then keep them in bf16 to the same effect, for
// half their memory and none of the casts. attentionActsF32 (a test knob)
// makes it say no, so that the model keeps them in float32 while the
// attention still rounds them.
func (b *Backend) AttentionRounds(d int) bool {
	return !b.Precise && !b.attentionActsF32 && slices.Contains(kernels.AttentionTCHeadDims, d)
}

// bf16Temps returns each of ts as a bf16 tensor: t itself where it is bf16,
// else a fresh one of its shape, with t's values cast into it when fill is
// set. free releases the fresh ones. Fresh allocations are aligned for the
// tensor-core kernels' 16-byte copies.
func (b *Backend) bf16Temps(fill bool, ts ...*tensor.Tensor) (bf []*tensor.Tensor, free func(), err error) {
	bf = make([]*tensor.Tensor, 0, len(ts))
	var made []*tensor.Tensor
	free = func() {
		for _, t := range made {
			b.Free(t)
		}
	}
	for _, t := range ts {
		if t.DType() == tensor.BF16 {
			bf = append(bf, t)
			continue
		}
		c, err := b.alloc(tensor.BF16, t.Shape()...)
		if err == nil {
			made = append(made, c)
			bf = append(bf, c)
			if fill {
				err = b.cast(c, t)
			}
		}
		if err != nil {
			free()
			return nil, func() {}, err
		}
	}
	return bf, free, nil
}

// widenFrom casts each of the bf16 tensors bf into its float32 original in
// ts, where they differ (bf16Temps' fresh tensors).
func (b *Backend) widenFrom(ts, bf []*tensor.Tensor) error {
	for i, t := range ts {
		if bf[i] != t {
			if err := b.cast(t, bf[i]); err != nil {
				return err
			}
		}
	}
	return nil
}

// attentionRounded is Attention on the tensor cores for float32 tensors:
// q, k, v rounded to bf16, the bf16 Attention (accumulating in float32),
// its output widened into out; lse stays float32. Tensors already bf16 are
// used as they are.
func (b *Backend) attentionRounded(out, lse, q, k, v, docStart *tensor.Tensor, scale float32) error {
	in, freeIn, err := b.bf16Temps(true, q, k, v)
	if err != nil {
		return err
	}
	defer freeIn()
	o, freeO, err := b.bf16Temps(false, out)
	if err != nil {
		return err
	}
	defer freeO()
	if err := b.Attention(o[0], lse, in[0], in[1], in[2], docStart, scale); err != nil {
		return err
	}
	return b.widenFrom([]*tensor.Tensor{out}, o)
}

// AttentionBackward implements tensor.Backend: D = rowsum(dout * out)
// first, then dq, and dk with dv, in three launches; on the tensor cores
// when attentionTC allows (attentionBackwardTC), dk with dv first, writing
// dS for the dq launch where it fits, and under GQA a fourth launch adding
// up each kv head's query heads.
func (b *Backend) AttentionBackward(dq, dk, dv, dout, q, k, v, docStart, out, lse *tensor.Tensor, scale float32) error {
	const op = "attention backward"
	s, err := attnCheck(op, q, k, v, lse, []*tensor.Tensor{dq, dout, out}, []*tensor.Tensor{dk, dv})
	if err == nil {
		err = docStartCheck(op, docStart, s)
	}
	if err != nil || s.B*s.T*s.Hq*s.D == 0 {
		return err
	}
	if b.roundAttention(s, dq, dk, dv, dout, q, k, v, out) {
		return b.attentionBackwardRounded(s, dq, dk, dv, dout, q, k, v, docStart, out, lse, scale)
	}
	return b.attentionBackward(s, dq, dk, dv, dout, nil, q, k, v, docStart, out, lse, scale)
}

// attentionBackward is AttentionBackward's launches for checked tensors;
// with doutFrom not nil, dout is a bf16 tensor that the delta launch fills
// with doutFrom's values rounded (attentionBackwardRounded).
func (b *Backend) attentionBackward(s kernels.Sizes, dq, dk, dv, dout, doutFrom, q, k, v, docStart, out, lse *tensor.Tensor, scale float32) error {
	const op = "attention backward"
	delta, err := b.alloc(tensor.F32, s.B, s.Hq, s.T)
	if err != nil {
		return err
	}
	defer b.Free(delta)
	args := new(Args).Raw(delta)
	if doutFrom != nil {
		args.Tensor(doutFrom).Tensor(dout)
	} else {
		args.Tensor(dout).Tensor(nil)
	}
	args.Tensor(out).I32(s.B).I32(s.T).I32(s.Hq).I32(s.D)
	if err := b.q.launch(op, "attention_backward_delta", s, args); err != nil {
		return err
	}
	if dqName, ok := attentionTC("attention_tc_backward_dq", s, dq, dk, dv, dout, q, k, v); ok {
		return b.attentionBackwardTC(s, dqName, dq, dk, dv, dout, q, k, v, docStart, lse, delta, args, scale)
	}
	args.Reset().Tensor(dq).Tensor(q).Tensor(k).Tensor(v).Raw(docStart).Tensor(dout).Raw(lse).Raw(delta).
		I32(s.B).I32(s.T).I32(s.Hq).I32(s.Hkv).I32(s.D).F32(scale)
	if err := b.q.launch(op, "attention_backward_dq", s, args); err != nil {
		return err
	}
	args.Reset().Tensor(dk).Tensor(dv).Tensor(q).Tensor(k).Tensor(v).Raw(docStart).Tensor(dout).Raw(lse).Raw(delta).
		I32(s.B).I32(s.T).I32(s.Hq).I32(s.Hkv).I32(s.D).F32(scale)
	return b.q.launch(op, "attention_backward_dkdv", s, args)
}

// attentionDSMaxBytes caps the bf16 scratch of dS that lets
// attention_tc_backward_dq_ds compute dq in one product per tile instead
// of three (attention_tc.cu), one layer's at a time: at Llama-3.1-8B's 32
// heads 132 MiB at T = 2048 and 520 MiB at 4096; past the cap (T = 6144
// there), attention_tc_backward_dq recomputes what it needs.
const attentionDSMaxBytes = 1 << 30

// attentionDS returns the shape of the dS scratch for s, [B, Hq, tiles,
// 64, 64] with tiles the causal half's 64 x 64 tiles (n (n + 1) / 2 of
// them, n = ceil(T/64): attention_tc.cu's tc_ds_tile), and whether it is
// within attentionDSMaxBytes.
func attentionDS(s kernels.Sizes) ([]int, bool) {
	n := (s.T + 63) / 64
	shape := []int{s.B, s.Hq, n * (n + 1) / 2, 64, 64}
	return shape, s.B*s.Hq*shape[2]*64*64*2 <= attentionDSMaxBytes
}

// attentionBackwardTC is AttentionBackward's tensor-core launches after
// the delta: dk and dv, writing dS where it fits (attentionDS, and the
// device has the room: the scratch never makes a step fail) with the
// query heads' shares added under GQA when per head (dkdvPerHead); then dq,
// from dS (attention_tc_backward_dq_ds) or recomputing it
// (attention_tc_backward_dq).
func (b *Backend) attentionBackwardTC(s kernels.Sizes, dqName string, dq, dk, dv, dout, q, k, v, docStart, lse, delta *tensor.Tensor, args *Args, scale float32) error {
	const op = "attention backward"
	var dS *tensor.Tensor
	if shape, ok := attentionDS(s); ok && !b.attentionRecomputeDQ {
		var err error
		dS, err = b.Empty(tensor.BF16, shape...)
		switch {
		case errors.Is(err, tensor.ErrOutOfMemory):
			dS = nil // no room for the scratch: dq is recomputed, as past the cap
		case err != nil:
			return err
		default:
			defer b.Free(dS)
		}
	}
	// A kv head's query heads per block write dk and dv; one query head
	// per block writes its float32 share, and the group's shares are
	// added up in a second launch.
	dkdvName, _ := attentionTC("attention_tc_backward_dkdv", s)
	group := s.Hq / s.Hkv
	ds := s
	ds.Heads = group
	var dkPart, dvPart *tensor.Tensor
	if b.dkdvPerHead(dkdvName, ds) {
		ds.Heads = 1
		var err error
		if dkPart, err = b.Empty(tensor.F32, s.B, s.T, s.Hq, s.D); err != nil {
			return err
		}
		defer b.Free(dkPart)
		if dvPart, err = b.Empty(tensor.F32, s.B, s.T, s.Hq, s.D); err != nil {
			return err
		}
		defer b.Free(dvPart)
	}
	args.Reset().Raw(dk).Raw(dv).Raw(dkPart).Raw(dvPart).Raw(dS).Raw(q).Raw(k).Raw(v).Raw(docStart).Raw(dout).Raw(lse).Raw(delta).
		I32(s.B).I32(s.T).I32(s.Hq).I32(s.Hkv).I32(ds.Heads).F32(scale)
	if err := b.q.launch(op, dkdvName, ds, args); err != nil {
		return err
	}
	if dkPart != nil {
		args.Reset().Raw(dk).Raw(dv).Raw(dkPart).Raw(dvPart).I32(s.B * s.T * s.Hkv).I32(group).I32(s.D).F32(scale)
		if err := b.q.launch(op, "attention_dkdv_sum", s, args); err != nil {
			return err
		}
	}
	if dS != nil {
		name, _ := attentionTC("attention_tc_backward_dq_ds", s)
		args.Reset().Raw(dq).Raw(dS).Raw(k).Raw(docStart).I32(s.B).I32(s.T).I32(s.Hq).I32(s.Hkv).F32(scale)
		return b.q.launch(op, name, s, args)
	}
	args.Reset().Raw(dq).Raw(q).Raw(k).Raw(v).Raw(docStart).Raw(dout).Raw(lse).Raw(delta).
		I32(s.B).I32(s.T).I32(s.Hq).I32(s.Hkv).F32(scale)
	return b.q.launch(op, dqName, s, args)
}

// dkdvPerHead reports whether attention_tc_backward_dkdv should take one
// query head per block rather than a kv head's group (s.Heads, the group,
// sizes that launch): under GQA, when its blocks would number fewer than
// four per SM. A block's work grows
// with the queries after its keys, so the first key tiles' blocks hold the
// most; with few blocks they outlast the rest (at T = 2048 with Llama's
// 32/8 heads, 256 blocks on an H200: twice the balanced time), with many
// the scheduler fills in around them. One head per block costs a float32
// scratch of the group's shares and a launch to add them up.
func (b *Backend) dkdvPerHead(name string, s kernels.Sizes) bool {
	if s.Hq == s.Hkv || b.dkdvGroupBlocks {
		return false
	}
	kern, err := kernels.Lookup(name)
	if err != nil {
		return false // the launch will say so
	}
	sms := 132 // the recording queue's stand-in: an H100's or H200's
	if b.dev != nil {
		sms = b.dev.Multiprocessors()
	}
	g := kern.Grid(s)
	return g[0]*g[1]*g[2] < 4*sms
}

// attentionBackwardRounded is the tensor-core backward for float32
// tensors (see roundAttention): q, k, v, dout and out rounded to bf16
// (dout by the delta launch, which reads it anyway), the bf16 launches, the
// gradients widened into dq, dk, dv. out and
// dout are rounded too so that D = rowsum(dout * out) matches the dP the
// kernels compute from the rounded dout and v: where a query sees one key,
// dS = P (dP - D) must come out zero, as in float32. Tensors already bf16
// are used as they are.
func (b *Backend) attentionBackwardRounded(s kernels.Sizes, dq, dk, dv, dout, q, k, v, docStart, out, lse *tensor.Tensor, scale float32) error {
	in, freeIn, err := b.bf16Temps(true, q, k, v, out)
	if err != nil {
		return err
	}
	defer freeIn()
	// dout's rounding is written by the delta launch, which reads it anyway.
	g, freeG, err := b.bf16Temps(false, dq, dk, dv, dout)
	if err != nil {
		return err
	}
	defer freeG()
	var doutFrom *tensor.Tensor
	if g[3] != dout {
		doutFrom = dout
	}
	if err := b.attentionBackward(s, g[0], g[1], g[2], g[3], doutFrom, in[0], in[1], in[2], docStart, in[3], lse, scale); err != nil {
		return err
	}
	return b.widenFrom([]*tensor.Tensor{dq, dk, dv}, g[:3])
}

// AttentionKV implements tensor.Backend in two launches: the new keys and
// values into the cache, then one block per (query row, head) over the
// cached keys (attention_kv.cu). pos stays on the device, unchecked: the
// kernels skip writes past the cache and clamp the rows they read.
func (b *Backend) AttentionKV(out, q, k, v, kCache, vCache, pos *tensor.Tensor, scale float32) error {
	const op = "attention kv"
	if err := floatCheck(op, out, q, k, v, kCache, vCache); err != nil {
		return err
	}
	if err := deviceCheck(op, pos); err != nil {
		return err
	}
	if q.Rank() != 4 || k.Rank() != 4 || kCache.Rank() != 4 {
		return fmt.Errorf("cuda: %s: q %v, k %v and kCache %v must be [B, T, heads, D]", op, q, k, kCache)
	}
	s := kernels.Sizes{B: q.Dim(0), T: q.Dim(1), Hq: q.Dim(2), Hkv: k.Dim(2), D: q.Dim(3), N: kCache.Dim(1)}
	switch {
	case !out.SameShape(q):
		return fmt.Errorf("cuda: %s: out %v must have the shape of q %v", op, out, q)
	case k.Dim(0) != s.B || k.Dim(1) != s.T || k.Dim(3) != s.D || !v.SameShape(k):
		return fmt.Errorf("cuda: %s: k %v and v %v must be [%d %d heads %d]", op, k, v, s.B, s.T, s.D)
	case s.Hkv == 0 || s.Hq%s.Hkv != 0:
		return fmt.Errorf("cuda: %s: %d query heads are not a multiple of %d kv heads", op, s.Hq, s.Hkv)
	case kCache.Dim(0) != s.B || kCache.Dim(2) != s.Hkv || kCache.Dim(3) != s.D || !vCache.SameShape(kCache):
		return fmt.Errorf("cuda: %s: kCache %v and vCache %v must be [%d S %d %d]", op, kCache, vCache, s.B, s.Hkv, s.D)
	case pos.DType() != tensor.I32 || pos.NumElements() != s.B:
		return fmt.Errorf("cuda: %s: pos %v must be I32 [%d]", op, pos, s.B)
	case s.D > kernels.AttentionMaxHeadDim:
		return fmt.Errorf("cuda: %s: head dimension %d is above the kernels' %d", op, s.D, kernels.AttentionMaxHeadDim)
	case s.B*s.T > 65535*1024 || s.Hq > 65535:
		return fmt.Errorf("cuda: %s: q %v is beyond the kernels' grid", op, q)
	}
	if s.B*s.T*s.Hq*s.D == 0 {
		return nil
	}
	if err := int32Check(op, q.NumElements(), kCache.NumElements()); err != nil {
		return err
	}
	args := new(Args).Tensor(kCache).Tensor(vCache).Tensor(k).Tensor(v).Raw(pos).
		I32(s.B).I32(s.T).I32(s.N).I32(s.Hkv).I32(s.D)
	if err := b.q.launch(op, "kv_cache_write", s, args); err != nil {
		return err
	}
	args.Reset().Tensor(out).Tensor(q).Tensor(kCache).Tensor(vCache).Raw(pos).
		I32(s.B).I32(s.T).I32(s.N).I32(s.Hq).I32(s.Hkv).I32(s.D).F32(scale)
	return b.q.launch(op, "attention_kv", s, args)
}

func sameShapes(op string, ts ...*tensor.Tensor) error {
	for _, t := range ts[1:] {
		if !t.SameShape(ts[0]) {
			return fmt.Errorf("cuda: %s: shapes differ: %v and %v", op, ts[0], t)
		}
	}
	return nil
}

// SwiGLU implements tensor.Backend, in float32, rounded once to out's
// dtype as it is written.
func (b *Backend) SwiGLU(out, gate, up *tensor.Tensor) error {
	ts := []*tensor.Tensor{out, gate, up}
	if err := floatCheck("swiglu", ts...); err != nil {
		return err
	}
	if err := sameShapes("swiglu", ts...); err != nil {
		return err
	}
	n := out.NumElements()
	if n == 0 {
		return nil
	}
	args := new(Args).Tensor(out).Tensor(gate).Tensor(up).U64(n)
	return b.q.launch("swiglu", "swiglu_forward", kernels.Sizes{N: n}, args)
}

// SwiGLUBackward implements tensor.Backend.
func (b *Backend) SwiGLUBackward(dgate, dup, dout, gate, up *tensor.Tensor) error {
	return b.SwiGLUBackwardCast(dgate, dup, nil, nil, dout, gate, up)
}

// SwiGLUBackwardCast is SwiGLUBackward writing dgate and dup twice: into
// them and, cast to their own dtypes, into dgateCast and dupCast (same
// shape; nil for none), in one pass, as AddCast: the inputs of the gate
// and up projections' frozen-weight products in the backward.
func (b *Backend) SwiGLUBackwardCast(dgate, dup, dgateCast, dupCast, dout, gate, up *tensor.Tensor) error {
	ts := []*tensor.Tensor{dgate, dup, dout, gate, up}
	for _, c := range []*tensor.Tensor{dgateCast, dupCast} {
		if c != nil {
			ts = append(ts, c)
		}
	}
	if err := floatCheck("swiglu backward", ts...); err != nil {
		return err
	}
	if err := sameShapes("swiglu backward", ts...); err != nil {
		return err
	}
	n := dout.NumElements()
	if n == 0 {
		return nil
	}
	args := new(Args).Tensor(dgate).Tensor(dup).Tensor(dgateCast).Tensor(dupCast).Tensor(dout).Tensor(gate).Tensor(up).U64(n)
	return b.q.launch("swiglu backward", "swiglu_backward", kernels.Sizes{N: n}, args)
}

// Dropout implements tensor.Backend. The threshold and the scale are the
// CPU's (tensor.DropoutThreshold, tensor.DropoutScale), computed here once,
// so that the kernel's mask and products are the CPU's bit for bit.
func (b *Backend) Dropout(out, x *tensor.Tensor, p float32, seed uint64) error {
	if err := floatCheck("dropout", out, x); err != nil {
		return err
	}
	if err := tensor.DropoutCheck(out, x, p); err != nil {
		return fmt.Errorf("cuda: %w", err)
	}
	n := x.NumElements()
	if n == 0 {
		return nil
	}
	// uint64 values travel as the bits of an int (U64 writes them back).
	args := new(Args).Tensor(out).Tensor(x).U64(n).U64(int(seed)).U64(int(tensor.DropoutThreshold(p))).F32(tensor.DropoutScale(p))
	return b.q.launch("dropout", "dropout", kernels.Sizes{N: n}, args)
}

// tableMaxTensors is the most tensors one launch of a kernel that reads a
// table of tensors (adamw, zero_tensors) takes: they are the grid's y.
const tableMaxTensors = 65535

// deviceTable copies a launch's table of tensors to a device tensor, which
// the caller frees once the launches that read it are queued.
func (b *Backend) deviceTable(table []byte) (*tensor.Tensor, uintptr, error) {
	dev, err := b.alloc(tensor.I32, len(table)/4)
	if err != nil {
		return nil, 0, err
	}
	mem, _ := dev.Device()
	if err := b.q.upload(mem.Ptr, table); err != nil {
		b.Free(dev)
		return nil, 0, err
	}
	return dev, mem.Ptr, nil
}

// AdamW implements tensor.Backend: the table of tensors goes to the device
// and one launch updates them all (one per 65535 tensors).
func (b *Backend) AdamW(params, grads, m, v []*tensor.Tensor, step int, lr, beta1, beta2, eps, weightDecay float32) error {
	const op = "adamw"
	if len(grads) != len(params) || len(m) != len(params) || len(v) != len(params) {
		return fmt.Errorf("cuda: adamw: %d params, %d grads, %d m and %d v: the lists must have the same length",
			len(params), len(grads), len(m), len(v))
	}
	if step < 1 {
		return fmt.Errorf("cuda: adamw: step %d: steps count from 1", step)
	}
	table := make([]byte, 0, kernels.AdamWTensorBytes*len(params))
	for i, p := range params {
		for _, t := range []*tensor.Tensor{p, grads[i], m[i], v[i]} {
			if t == nil {
				return fmt.Errorf("cuda: adamw: tensor %d: nil parameter, gradient or state", i)
			}
			if t.DType() != tensor.F32 {
				return fmt.Errorf("cuda: adamw: tensor %d: %v must be F32", i, t)
			}
			if !t.SameShape(p) {
				return fmt.Errorf("cuda: adamw: tensor %d: %v does not have the parameter's shape %v", i, t, p)
			}
			if err := deviceCheck(op, t); err != nil {
				return err
			}
			mem, _ := t.Device()
			table = binary.LittleEndian.AppendUint64(table, uint64(mem.Ptr))
		}
		table = binary.LittleEndian.AppendUint64(table, uint64(p.NumElements()))
	}
	if len(params) == 0 {
		return nil
	}
	// The scalars as the CPU computes them: float64, then float32.
	decay := float32(1 - float64(lr)*float64(weightDecay))
	bc1 := 1 - math.Pow(float64(beta1), float64(step))
	bc2 := 1 - math.Pow(float64(beta2), float64(step))
	stepSize := float32(float64(lr) / bc1)
	bc2Sqrt := float32(math.Sqrt(bc2))

	dev, ptr, err := b.deviceTable(table)
	if err != nil {
		return err
	}
	defer b.Free(dev)
	for lo := 0; lo < len(params); lo += tableMaxTensors {
		hi := min(lo+tableMaxTensors, len(params))
		largest := 0
		for _, p := range params[lo:hi] {
			largest = max(largest, p.NumElements())
		}
		args := new(Args).Ptr(ptr + uintptr(lo*kernels.AdamWTensorBytes)).I32(hi - lo).
			F32(decay).F32(beta1).F32(beta2).F32(eps).F32(stepSize).F32(bc2Sqrt)
		if err := b.q.launch(op, "adamw", kernels.Sizes{N: largest, Tensors: hi - lo}, args); err != nil {
			return err
		}
	}
	return nil
}

// ZeroTensors sets every element of each device tensor to zero, in one
// launch of zero_tensors (kernels/elementwise.cu) reading a table of the
// tensors' addresses and sizes: the LoRA gradients of a step, one memset
// each, were hundreds of launches. Like Zero, it clears NaNs too.
func (b *Backend) ZeroTensors(ts []*tensor.Tensor) error {
	table := make([]byte, 0, kernels.ZeroTensorBytes*len(ts))
	largest := 0
	for i, t := range ts {
		mem, ok := t.Device()
		if !ok {
			return fmt.Errorf("cuda: zero tensors: tensor %d, %v, is not on the device", i, t)
		}
		if mem.Bytes == 0 {
			continue
		}
		table = binary.LittleEndian.AppendUint64(table, uint64(mem.Ptr))
		table = binary.LittleEndian.AppendUint64(table, uint64(mem.Bytes))
		largest = max(largest, mem.Bytes)
	}
	rows := len(table) / kernels.ZeroTensorBytes
	if rows == 0 {
		return nil
	}
	dev, ptr, err := b.deviceTable(table)
	if err != nil {
		return err
	}
	defer b.Free(dev)
	for lo := 0; lo < rows; lo += tableMaxTensors {
		hi := min(lo+tableMaxTensors, rows)
		args := new(Args).Ptr(ptr + uintptr(lo*kernels.ZeroTensorBytes)).I32(hi - lo)
		if err := b.q.launch("zero tensors", "zero_tensors", kernels.Sizes{N: largest, Tensors: hi - lo}, args); err != nil {
			return err
		}
	}
	return nil
}
