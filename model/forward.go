package model

import (
	"fmt"
	"math"
	"slices"

	"github.com/compassml/compass/tensor"
)

// IgnoreIndex is the label of positions that do not count in the loss.
const IgnoreIndex = -100

// Batch is a batch of equal-length token sequences. IDs and Labels are I32
// [B, T]; Labels[b, t] is the token the model should predict at position t
// (the next token, for causal LM), or IgnoreIndex.
type Batch struct {
	IDs, Labels *tensor.Tensor
	// GradDivisor, when positive, is what ForwardBackward divides the
	// summed loss's gradient by instead of this batch's counted positions:
	// the counted positions of a whole accumulated step, so that the step's
	// gradient is that of the mean over all its tokens.
	GradDivisor int
	// DocLens, when not nil, gives for each row the lengths of the
	// documents packed into it, in order, summing to T (padding at the end
	// of a row is its own document). Each document attends only to itself
	// and its positions start at 0, as FlashAttention-2's varlen attention
	// with cumulative sequence lengths. nil: each row is one document.
	DocLens [][]int
}

// Output is the result of a forward pass over a Batch.
type Output struct {
	Loss     float64        // mean of -log p(label) over counted positions
	Tokens   int            // number of counted positions
	LogProbs *tensor.Tensor // F32 [B, T]: log p(label), 0 where ignored
}

// pass holds what every layer of one forward pass shares.
type pass struct {
	B, T, N  int            // batch, sequence length, tokens = B*T
	cos, sin *tensor.Tensor // RoPE tables, F32 [N, RotaryDims/2], on the backend
	docStart *tensor.Tensor // I32 [B, T] on the backend: where each token's document starts; nil: one per row
	drop     dropout        // LoRA dropout: on in ForwardBackward only
}

// arena allocates tensors on the backend and frees them together. After a
// failed allocation it returns nil and keeps the first error; callers check
// err once after each group of allocations, before using them.
type arena struct {
	be  tensor.Backend
	ts  []*tensor.Tensor
	err error
}

// f32 allocates a zeroed F32 tensor: for what is accumulated into.
func (a *arena) f32(shape ...int) *tensor.Tensor { return a.alloc(a.be.Alloc, tensor.F32, shape) }

// empty allocates an F32 tensor with undefined contents: for the output of
// an operation that overwrites it all (most of a step's tensors).
func (a *arena) empty(shape ...int) *tensor.Tensor { return a.emptyOf(tensor.F32, shape...) }

// emptyOf is empty in dtype dt.
func (a *arena) emptyOf(dt tensor.DType, shape ...int) *tensor.Tensor {
	return a.alloc(a.be.Empty, dt, shape)
}

func (a *arena) alloc(allocate func(tensor.DType, ...int) (*tensor.Tensor, error), dt tensor.DType, shape []int) *tensor.Tensor {
	if a.err != nil {
		return nil
	}
	t, err := allocate(dt, shape...)
	if err != nil {
		a.err = fmt.Errorf("allocate %s%v: %w", dt, shape, err)
		return nil
	}
	a.ts = append(a.ts, t)
	return t
}

// adopt records dev, a backend copy of a host tensor, when it is a copy
// (on the CPU the backend's tensor is the host tensor itself).
func (a *arena) adopt(dev, host *tensor.Tensor) *tensor.Tensor {
	if dev != host {
		a.ts = append(a.ts, dev)
	}
	return dev
}

// toDevice copies a host tensor to the backend, recording the copy.
func (a *arena) toDevice(host *tensor.Tensor) (*tensor.Tensor, error) {
	dev, err := a.be.ToDevice(host)
	if err != nil {
		return nil, err
	}
	return a.adopt(dev, host), nil
}

func (a *arena) free() {
	for _, t := range a.ts {
		a.be.Free(t)
	}
	a.ts = nil
}

// layerActs is what one layer's backward needs from its forward.
type layerActs struct {
	x             *tensor.Tensor // the layer input [N, H]
	n1, rstd1     *tensor.Tensor // input RMSNorm output and its rstd
	q, k, v       *tensor.Tensor // projections, q and k after RoPE
	attn, lse     *tensor.Tensor // attention output [N, Hq*D], log-sum-exp [B, Hq, T]
	h             *tensor.Tensor // the residual stream after attention
	n2, rstd2     *tensor.Tensor // post-attention RMSNorm output and rstd
	gate, up, act *tensor.Tensor // MLP gate and up projections, silu(gate)*up
	t             *loraActs
}

// newPass checks the ids and the documents packed in each row (docLens, as
// Batch.DocLens) and builds, on the backend, the RoPE tables for each
// token's position in its document and, when a row packs several
// documents, the attention's docStart (their copies are freed with run).
// Longrope's short or long factors follow the largest position + 1 over
// the batch, as HF's position_ids do.
func (m *Model) newPass(run *arena, ids *tensor.Tensor, docLens [][]int) (*pass, error) {
	if ids == nil || ids.DType() != tensor.I32 || ids.Rank() != 2 || ids.Dim(0) == 0 || ids.Dim(1) == 0 {
		return nil, fmt.Errorf("model: ids must be a non-empty I32 [batch, seq] tensor, got %v", ids)
	}
	p := &pass{B: ids.Dim(0), T: ids.Dim(1)}
	p.N = p.B * p.T
	starts, err := docStarts(docLens, p.B, p.T)
	if err != nil {
		return nil, err
	}
	positions := make([]int, p.N)
	for i := range positions {
		positions[i] = i % p.T
		if starts != nil {
			positions[i] -= int(starts[i])
		}
	}
	if starts != nil {
		ds, err := tensor.FromI32(starts, p.B, p.T)
		if err != nil {
			return nil, err
		}
		if p.docStart, err = run.toDevice(ds); err != nil {
			return nil, err
		}
	}
	cos, sin, err := RopeTables(m.Config, positions)
	if err != nil {
		return nil, err
	}
	if p.cos, err = run.toDevice(cos); err != nil {
		return nil, err
	}
	if p.sin, err = run.toDevice(sin); err != nil {
		return nil, err
	}
	return p, nil
}

// linearForward sets y = x W^T + b, plus the LoRA term
// scaling * (dropout(x) A^T) B^T when the module is adapted (dropout only
// when t.drop is on). The adapter's input product is kept in t, transposed,
// xa = A dropout(x)^T [r, N], and computed once per adapter (the fused q/k/v
// of Phi-3 share it, and so one mask), or once per loraGroup (inputProducts).
// The LoRA term is written first and the base product added to it: the
// base product is the large one, and it adds y in its epilogue for the
// price of one read of y, where adding the LoRA term after it would read
// and write y again. Both read x as it is (inputDType).
func (m *Model) linearForward(ar *arena, y, x *tensor.Tensor, p *linear, t *loraActs) error {
	beta := float32(0)
	if s := p.slot; s != nil {
		if _, ok := t.xa[s]; !ok {
			if err := m.inputProducts(ar, x, s, t); err != nil {
				return fmt.Errorf("lora %s: %w", s.module, err)
			}
		}
		b, err := s.b.Slice(p.rows, p.rows+y.Dim(1))
		if err != nil {
			return err
		}
		if err := m.expandMatMul(y, t.xa[s], b, true, s.scaling, 0); err != nil {
			return fmt.Errorf("lora %s: %w", s.module, err)
		}
		beta = 1
	}
	if err := m.be.MatMul(y, x, p.w, false, true, 1, beta); err != nil {
		return err
	}
	if p.b != nil {
		return m.be.Add(y, y, p.b)
	}
	return nil
}

// inputProducts sets t.xa[s] = A dropout(x)^T for adapter s, in ar; for
// every adapter of s's group in one product when there is no dropout
// (the stacked A times x^T, of which each slot's xa is a row view).
func (m *Model) inputProducts(ar *arena, x *tensor.Tensor, s *loraSlot, t *loraActs) error {
	if g := s.group; g != nil && t.drop.p == 0 {
		xa := ar.empty(g.a.Dim(0), x.Dim(0))
		if ar.err != nil {
			return ar.err
		}
		if err := m.narrowMatMul(xa, g.a, x, false, 1, 0); err != nil {
			return err
		}
		return g.rowViews(xa, t.xa)
	}
	xa := ar.empty(s.a.Dim(0), x.Dim(0))
	if ar.err != nil {
		return ar.err
	}
	tmp := &arena{be: m.be} // dropout(x) is needed only here
	defer tmp.free()
	in, err := m.adapterInput(tmp, x, s, t.drop)
	if err != nil {
		return err
	}
	if err := m.narrowMatMul(xa, s.a, in, false, 1, 0); err != nil {
		return err
	}
	t.xa[s] = xa
	return nil
}

// loraKernels is what a GPU backend adds (cgo.Backend): kernels for the
// LoRA products, whose rank side a general GEMM handles poorly: t = A x^T
// and dt = s B^T dy^T (NarrowMatMul: c = alpha op(p) q^T + beta c), dA +=
// dt x and dB += s (t dy)^T (GradMatMul: c = alpha p q + beta c, or its
// transpose with transC), y = s t^T B^T and dx += dt^T A (ExpandMatMul:
// c = alpha p^T op(w) + beta c).
type loraKernels interface {
	NarrowMatMul(c, p, q *tensor.Tensor, transP bool, alpha, beta float32) error
	GradMatMul(c, p, q *tensor.Tensor, transC bool, alpha, beta float32) error
	ExpandMatMul(c, p, w *tensor.Tensor, transW bool, alpha, beta float32) error
}

// expandMatMul sets c = alpha p^T op(w) + beta c (op(w) = w^T with
// transW) through the backend's ExpandMatMul where it has one, else
// through MatMul.
func (m *Model) expandMatMul(c, p, w *tensor.Tensor, transW bool, alpha, beta float32) error {
	if k, ok := m.be.(loraKernels); ok {
		return k.ExpandMatMul(c, p, w, transW, alpha, beta)
	}
	return m.be.MatMul(c, p, w, true, transW, alpha, beta)
}

// narrowMatMul sets c = alpha op(p) q^T + beta c (op(p) = p^T with
// transP) through the backend's NarrowMatMul where it has one, else
// through MatMul.
func (m *Model) narrowMatMul(c, p, q *tensor.Tensor, transP bool, alpha, beta float32) error {
	if k, ok := m.be.(loraKernels); ok {
		return k.NarrowMatMul(c, p, q, transP, alpha, beta)
	}
	return m.be.MatMul(c, p, q, transP, true, alpha, beta)
}

// gradMatMul sets c = alpha p q + beta c, or with transC c = alpha (p q)^T
// + beta c, through the backend's GradMatMul where it has one, else
// through MatMul.
func (m *Model) gradMatMul(c, p, q *tensor.Tensor, transC bool, alpha, beta float32) error {
	if k, ok := m.be.(loraKernels); ok {
		return k.GradMatMul(c, p, q, transC, alpha, beta)
	}
	if transC {
		return m.be.MatMul(c, q, p, true, true, alpha, beta)
	}
	return m.be.MatMul(c, p, q, false, false, alpha, beta)
}

// rowViews sets views[s] to slot s's rows of stacked, a tensor whose rows
// follow the group's stacked A.
func (g *loraGroup) rowViews(stacked *tensor.Tensor, views map[*loraSlot]*tensor.Tensor) error {
	r := 0
	for _, s := range g.slots {
		v, err := stacked.Slice(r, r+s.a.Dim(0))
		if err != nil {
			return err
		}
		views[s] = v
		r += s.a.Dim(0)
	}
	return nil
}

// productInputter is what a GPU backend adds (cgo.Backend): the dtype its
// MatMul multiplies an x of dtype x by a weight of dtype w in (bf16 for a
// float32 x and bf16 weights outside Precise mode: cuBLAS takes one dtype).
type productInputter interface {
	ProductInput(x, w tensor.DType) tensor.DType
}

// castFuser is what a GPU backend adds (cgo.Backend): the backward's
// operations writing their output a second time, in the dtype the frozen
// weights' products take it in (ProductInput), in the same pass, so that
// the products reading it do not each cast it again: SwiGLU's backward
// dgate and dup, for the gate and up products, the residual stream's
// additions (AddCast) their sums, for o_proj's product and the down_proj
// of the layer below, and RoPE's inverse (RoPEPairCast) dq and dk, for the
// q and k products. The values are the casts' own, so nothing else
// changes. (The forward needs none: inputDType.)
type castFuser interface {
	productInputter
	AddCast(out, cast, x, y *tensor.Tensor) error
	SwiGLUBackwardCast(dgate, dup, dgateCast, dupCast, dout, gate, up *tensor.Tensor) error
	RoPEPairCast(qOut, kOut, qCast, kCast, q, k, cos, sin *tensor.Tensor, inverse bool) error
}

// productCast returns the backend's castFuser and a tensor of out's shape
// in the dtype the products of the weights ws take out in, from tmp; nil
// for both on a backend without castFuser, when out is already that dtype,
// or when the weights' dtypes differ (their products would take out in
// different dtypes).
func (m *Model) productCast(tmp *arena, out *tensor.Tensor, ws ...*tensor.Tensor) (castFuser, *tensor.Tensor) {
	f, ok := m.be.(castFuser)
	if !ok {
		return nil, nil
	}
	for _, w := range ws[1:] {
		if w.DType() != ws[0].DType() {
			return nil, nil
		}
	}
	dt := f.ProductInput(out.DType(), ws[0].DType())
	if dt == out.DType() {
		return nil, nil
	}
	return f, tmp.emptyOf(dt, out.Shape()...)
}

// inputDType is the dtype a layer writes an input of the frozen products
// of the weights ws in (n1 for q, k and v, n2 for gate and up, the SwiGLU
// output for down): the dtype those products take it in where the backend
// would round a float32 input to it anyway (ProductInput: bf16 for bf16
// weights outside Precise mode) and its LoRA products read that dtype as
// it is (loraKernels), float32 elsewhere. RMSNorm and SwiGLU compute in
// float32 and round once as they write. The adapters then read the
// products' own input, as PEFT's do in a bf16 model (the x its lora_A
// widens is the bf16 hidden state), and the layer neither casts the input
// for each product nor keeps a float32 copy of it for the backward (dA =
// dt x reads it): half that memory, and a pass less over it each way.
func (m *Model) inputDType(ws ...*tensor.Tensor) tensor.DType {
	p, ok := m.be.(productInputter)
	if _, lora := m.be.(loraKernels); !ok || !lora {
		return tensor.F32
	}
	dt := p.ProductInput(tensor.F32, ws[0].DType())
	for _, w := range ws[1:] {
		if p.ProductInput(tensor.F32, w.DType()) != dt {
			return tensor.F32
		}
	}
	return dt
}

// swigluBackwardForProducts sets dgate and dup, SwiGLU's backward, and
// returns the inputs of the gate and up projections' frozen products in
// the backward (dgate Wg, dup Wu): their casts written by the same kernel
// (productCast), or nil (the products read dgate and dup).
func (m *Model) swigluBackwardForProducts(tmp *arena, dgate, dup, dout, gate, up *tensor.Tensor, l *layer) (dgw, duw *tensor.Tensor, err error) {
	f, gc := m.productCast(tmp, dgate, l.gate.w, l.up.w)
	_, uc := m.productCast(tmp, dup, l.gate.w, l.up.w)
	if tmp.err != nil {
		return nil, nil, tmp.err
	}
	if gc == nil || uc == nil {
		return nil, nil, m.be.SwiGLUBackward(dgate, dup, dout, gate, up)
	}
	return gc, uc, f.SwiGLUBackwardCast(dgate, dup, gc, uc, dout, gate, up)
}

// layerForward runs one decoder layer on x [N, H] and returns its output and
// what its backward needs:
//
//	n1 = rmsnorm(x); q, k, v = n1 Wq^T, n1 Wk^T, n1 Wv^T (+ biases, + LoRA)
//	q, k = rope(q), rope(k); attn = causal_gqa(q, k, v)
//	h = x + attn Wo^T; n2 = rmsnorm(h)
//	out = h + (silu(n2 Wg^T) * (n2 Wu^T)) Wd^T
func (m *Model) layerForward(ar, outAr *arena, l *layer, x *tensor.Tensor, ps *pass) (*tensor.Tensor, *layerActs, error) {
	c := m.Config
	N, H, I := ps.N, c.HiddenSize, c.IntermediateSize
	Q, KV := c.NumAttentionHeads*c.HeadDim, c.NumKeyValueHeads*c.HeadDim
	eps := float32(c.RMSNormEps)
	a := &layerActs{x: x, t: &loraActs{xa: map[*loraSlot]*tensor.Tensor{}, drop: ps.drop}}

	// Every tensor here is an operation's whole output.
	attnDT := m.attentionDType(l)
	a.n1, a.rstd1 = ar.emptyOf(m.inputDType(l.q.w, l.k.w, l.v.w), N, H), ar.empty(N)
	a.q, a.k, a.v = ar.emptyOf(attnDT, N, Q), ar.emptyOf(attnDT, N, KV), ar.emptyOf(attnDT, N, KV)
	a.attn, a.lse = ar.emptyOf(attnDT, N, Q), ar.empty(ps.B, c.NumAttentionHeads, ps.T)
	o, h := ar.empty(N, H), ar.empty(N, H)
	a.h = h
	a.n2, a.rstd2 = ar.emptyOf(m.inputDType(l.gate.w, l.up.w), N, H), ar.empty(N)
	a.gate, a.up, a.act = ar.empty(N, I), ar.empty(N, I), ar.emptyOf(m.inputDType(l.down.w), N, I)
	down, out := ar.empty(N, H), outAr.empty(N, H)
	if ar.err != nil {
		return nil, nil, ar.err
	}
	if outAr.err != nil {
		return nil, nil, outAr.err
	}
	if err := m.be.RMSNorm(a.n1, a.rstd1, x, l.inputNorm, eps); err != nil {
		return nil, nil, err
	}
	// The projections write float32; in bf16 (attentionDType) q and k are
	// rotated and v cast into the kept tensors, and the float32 ones freed.
	proj := &arena{be: m.be}
	defer proj.free()
	qp, kp, vp := a.q, a.k, a.v
	if attnDT != tensor.F32 {
		qp, kp, vp = proj.empty(N, Q), proj.empty(N, KV), proj.empty(N, KV)
		if proj.err != nil {
			return nil, nil, proj.err
		}
	}
	for _, p := range []struct {
		y *tensor.Tensor
		w *linear
	}{{qp, &l.q}, {kp, &l.k}, {vp, &l.v}} {
		if err := m.linearForward(ar, p.y, a.n1, p.w, a.t); err != nil {
			return nil, nil, err
		}
	}
	if err := m.rope(a.q, a.k, qp, kp, ps, false); err != nil {
		return nil, nil, err
	}
	if vp != a.v {
		if err := m.be.Copy(a.v, vp); err != nil {
			return nil, nil, err
		}
	}
	proj.free()
	q4, k4, v4 := m.heads(a.q, ps, c.NumAttentionHeads), m.heads(a.k, ps, c.NumKeyValueHeads), m.heads(a.v, ps, c.NumKeyValueHeads)
	if err := m.be.Attention(m.heads(a.attn, ps, c.NumAttentionHeads), a.lse, q4, k4, v4, ps.docStart, m.attnScale()); err != nil {
		return nil, nil, err
	}
	if err := m.linearForward(ar, o, a.attn, &l.o, a.t); err != nil {
		return nil, nil, err
	}
	if err := m.be.Add(a.h, x, o); err != nil {
		return nil, nil, err
	}

	if err := m.be.RMSNorm(a.n2, a.rstd2, a.h, l.postNorm, eps); err != nil {
		return nil, nil, err
	}
	if err := m.linearForward(ar, a.gate, a.n2, &l.gate, a.t); err != nil {
		return nil, nil, err
	}
	if err := m.linearForward(ar, a.up, a.n2, &l.up, a.t); err != nil {
		return nil, nil, err
	}
	if err := m.be.SwiGLU(a.act, a.gate, a.up); err != nil {
		return nil, nil, err
	}
	if err := m.linearForward(ar, down, a.act, &l.down, a.t); err != nil {
		return nil, nil, err
	}
	if err := m.be.Add(out, a.h, down); err != nil {
		return nil, nil, err
	}
	return out, a, nil
}

// heads views x [N, heads*D] as [B, T, heads, D].
func (m *Model) heads(x *tensor.Tensor, ps *pass, heads int) *tensor.Tensor {
	v, err := x.Reshape(ps.B, ps.T, heads, m.Config.HeadDim)
	if err != nil {
		panic(err) // shapes are the model's own: a mismatch is a bug
	}
	return v
}

// ropePairer is what a GPU backend adds (cgo.Backend): q and k rotated in
// one launch, the same bits as two RoPE calls.
type ropePairer interface {
	RoPEPair(qOut, kOut, q, k, cos, sin *tensor.Tensor, inverse bool) error
}

// rope rotates q into qOut and k into kOut (in place where they are the
// same tensor, in qOut's dtype where it differs) or, with inverse, their
// gradients.
func (m *Model) rope(qOut, kOut, q, k *tensor.Tensor, ps *pass, inverse bool) error {
	ts, err := m.headViews(ps, qOut, kOut, q, k)
	if err != nil {
		return err
	}
	if rp, ok := m.be.(ropePairer); ok {
		return rp.RoPEPair(ts[0], ts[1], ts[2], ts[3], ps.cos, ps.sin, inverse)
	}
	if err := m.be.RoPE(ts[0], ts[2], ps.cos, ps.sin, inverse); err != nil {
		return err
	}
	return m.be.RoPE(ts[1], ts[3], ps.cos, ps.sin, inverse)
}

// ropeBackwardForProducts rotates the attention's gradients dqa and dka
// back into dq and dk (RoPE's inverse) and returns them cast for the q and
// k projections' frozen products, written by the same launch
// (RoPEPairCast), as swigluBackwardForProducts; nil where not (the
// products read dq and dk).
func (m *Model) ropeBackwardForProducts(tmp *arena, dq, dk, dqa, dka *tensor.Tensor, ps *pass, l *layer) (dqw, dkw *tensor.Tensor, err error) {
	f, qc := m.productCast(tmp, dq, l.q.w)
	_, kc := m.productCast(tmp, dk, l.k.w)
	if tmp.err != nil {
		return nil, nil, tmp.err
	}
	if qc == nil || kc == nil {
		return nil, nil, m.rope(dq, dk, dqa, dka, ps, true)
	}
	ts, err := m.headViews(ps, dq, dk, qc, kc, dqa, dka)
	if err != nil {
		return nil, nil, err
	}
	return qc, kc, f.RoPEPairCast(ts[0], ts[1], ts[2], ts[3], ts[4], ts[5], ps.cos, ps.sin, true)
}

// headViews views each of ts [N, heads*D] as [N, heads, D], ts being q-
// and k-shaped in turn (q, k, q, k, ...), as RoPE takes them.
func (m *Model) headViews(ps *pass, ts ...*tensor.Tensor) ([]*tensor.Tensor, error) {
	c := m.Config
	views := make([]*tensor.Tensor, len(ts))
	for i, t := range ts {
		heads := c.NumAttentionHeads
		if i%2 == 1 {
			heads = c.NumKeyValueHeads
		}
		v, err := t.Reshape(ps.N, heads, c.HeadDim)
		if err != nil {
			return nil, err
		}
		views[i] = v
	}
	return views, nil
}

// attentionRounder is what a GPU backend adds (cgo.Backend): whether its
// attention rounds float32 q, k, v (and in the backward the output and its
// gradient) to bf16 for head dimension d, as it does outside Precise mode
// for the tensor-core kernels.
type attentionRounder interface {
	AttentionRounds(d int) bool
}

// attentionDType is the dtype layer l keeps q, k, v (after RoPE) and the
// attention output in: bf16 where the backend's attention would round
// them to bf16 anyway and o_proj's base product takes its input in bf16
// (ProductInput), float32 elsewhere. The values are then the same as in
// float32 (every one a bf16 value, whose products widen it exactly: the
// LoRA kernels read it as it is), but the casts around attention go
// (q and k come out of RoPE in bf16, v is cast once; nothing is cast
// again in the backward, nor for o_proj) and so does half of their
// memory, which the backward keeps.
func (m *Model) attentionDType(l *layer) tensor.DType {
	r, ok := m.be.(attentionRounder)
	f, fuses := m.be.(castFuser)
	if !ok || !fuses || !r.AttentionRounds(m.Config.HeadDim) || f.ProductInput(tensor.F32, l.o.w.DType()) != tensor.BF16 {
		return tensor.F32
	}
	return tensor.BF16
}

func (m *Model) attnScale() float32 { return float32(1 / math.Sqrt(float64(m.Config.HeadDim))) }

// groupBackward is the backward of projections that share their input x:
// dx = sum_p dy_p W_p, plus each adapter's part, accumulating the adapters'
// gradients: with x' = dropout(x) (x' = x without dropout) and
// dt = dy B the gradient of t = x' A^T, both kept transposed ([r, N], as
// t.xa), dB += scaling dy^T (x' A^T), dt^T = scaling B^T dy^T,
// dA += dt^T x', dx += dropout'(dt A) (adapterInputBackward). The adapters
// of a loraGroup, without dropout, take dA and dx in one product each: their
// dt^T are row views of one stacked tensor. The base weights get no
// gradient. As in linearForward, the adapters write dx first and the base
// products add to it; dyws, when not nil, holds for each projection dy
// already in the dtype its base product takes it in (nil where not).
func (m *Model) groupBackward(ar *arena, dx, x *tensor.Tensor, projs []*linear, dys, dyws []*tensor.Tensor, t *loraActs) error {
	dts := map[*loraSlot]*tensor.Tensor{}
	var slots []*loraSlot // in the order first met
	var stacks []*loraGroup
	stacked := map[*loraGroup]*tensor.Tensor{}
	for j, q := range projs {
		s := q.slot
		if s == nil {
			continue
		}
		seen := slices.Contains(slots, s) // a group's views exist before their slot is seen
		if !seen {
			slots = append(slots, s)
			if g := s.group; g != nil && t.drop.p == 0 && stacked[g] == nil {
				stacked[g] = ar.empty(g.a.Dim(0), x.Dim(0))
				if ar.err != nil {
					return ar.err
				}
				if err := g.rowViews(stacked[g], dts); err != nil {
					return err
				}
				stacks = append(stacks, g)
			}
			if dts[s] == nil {
				dts[s] = ar.empty(s.a.Dim(0), x.Dim(0))
				if ar.err != nil {
					return ar.err
				}
			}
		}
		dt := dts[s]
		out := dys[j].Dim(1)
		b, err := s.b.Slice(q.rows, q.rows+out)
		if err != nil {
			return err
		}
		db, err := s.db.Slice(q.rows, q.rows+out)
		if err != nil {
			return err
		}
		if err := m.gradMatMul(db, t.xa[s], dys[j], true, s.scaling, 1); err != nil {
			return fmt.Errorf("lora %s: dB: %w", s.module, err)
		}
		// The projections of a fused slot add to its dt.
		if err := m.narrowMatMul(dt, b, dys[j], true, s.scaling, boolBeta(seen)); err != nil {
			return fmt.Errorf("lora %s: dt: %w", s.module, err)
		}
	}
	written := false // whether dx holds a first term
	for _, g := range stacks {
		dt := stacked[g]
		if err := m.gradMatMul(g.da, dt, x, false, 1, 1); err != nil {
			return fmt.Errorf("lora %s: dA: %w", g.slots[0].module, err)
		}
		if err := m.expandMatMul(dx, dt, g.a, false, 1, boolBeta(written)); err != nil {
			return fmt.Errorf("lora %s: dx: %w", g.slots[0].module, err)
		}
		written = true
	}
	for _, s := range slots {
		if s.group != nil && stacked[s.group] != nil {
			continue
		}
		if err := m.adapterInputBackward(dx, dts[s], x, s, t.drop, written); err != nil {
			return err
		}
		written = true
	}
	for i, p := range projs {
		dy := dys[i]
		if dyws != nil && dyws[i] != nil {
			dy = dyws[i]
		}
		if err := m.be.MatMul(dx, dy, p.w, false, false, 1, boolBeta(i > 0 || written)); err != nil {
			return err
		}
	}
	return nil
}

// boolBeta is a product's beta: 1 to add to what the output holds, 0 to
// overwrite it.
func boolBeta(add bool) float32 {
	if add {
		return 1
	}
	return 0
}

// addForProducts sets out = x + y and returns out cast for the frozen
// products of the weights ws, written by the same kernel (AddCast), in
// ar; nil where the backend has no castFuser or none is needed (the
// products read out), as swigluBackwardForProducts.
func (m *Model) addForProducts(ar *arena, out, x, y *tensor.Tensor, ws ...*tensor.Tensor) (*tensor.Tensor, error) {
	f, cast := m.productCast(ar, out, ws...)
	if ar.err != nil {
		return nil, ar.err
	}
	if cast == nil {
		return nil, m.be.Add(out, x, y)
	}
	return cast, f.AddCast(out, cast, x, y)
}

// layerBackward takes the gradient of the layer's output (dout, and
// doutW, dout in its down_proj's product dtype, or nil) and returns the
// gradient of its input, accumulating LoRA gradients on the way, with
// that gradient cast for the down_proj of the layer below (nil where below
// is nil or there is no castFuser). What it returns is allocated in out;
// its temporaries in a scratch arena freed on return.
func (m *Model) layerBackward(out *arena, l, below *layer, a *layerActs, dout, doutW *tensor.Tensor, ps *pass) (dx, dxW *tensor.Tensor, err error) {
	c := m.Config
	N, H, I := ps.N, c.HiddenSize, c.IntermediateSize
	Q, KV := c.NumAttentionHeads*c.HeadDim, c.NumKeyValueHeads*c.HeadDim
	ar := &arena{be: m.be}
	defer ar.free()
	// The MLP's gradients (3 N x I floats, 352 MB at Llama-3.1-8B's 2048
	// tokens) are freed before the attention's backward, whose scratch
	// takes their place.
	mlp := &arena{be: m.be}
	defer mlp.free()
	// Each is written whole (groupBackward's first product has beta 0)
	// before it is read.
	dAct, dGate, dUp := mlp.empty(N, I), mlp.empty(N, I), mlp.empty(N, I)
	dn2, dh, dAttn := ar.empty(N, H), ar.empty(N, H), ar.empty(N, Q)
	dq, dk := ar.empty(N, Q), ar.empty(N, KV)
	// With bf16 attention tensors (attentionDType) the attention writes its
	// gradients in bf16 too, as it would before widening them: RoPE's
	// inverse then reads dq and dk from them into float32, and v's products
	// read dv as it is (its adapter's through the LoRA kernels' bf16
	// entries, the same values as widened).
	attnDT := a.q.DType()
	dqa, dka, dva := dq, dk, ar.emptyOf(attnDT, N, KV)
	if attnDT != tensor.F32 {
		dqa, dka = ar.emptyOf(attnDT, N, Q), ar.emptyOf(attnDT, N, KV)
	}
	dn1, dx := ar.empty(N, H), out.empty(N, H)
	if mlp.err != nil {
		return nil, nil, mlp.err
	}
	if ar.err != nil {
		return nil, nil, ar.err
	}
	if out.err != nil {
		return nil, nil, out.err
	}

	// MLP: out = h + down(act); act = silu(gate) * up.
	var doutWs []*tensor.Tensor
	if doutW != nil {
		doutWs = []*tensor.Tensor{doutW}
	}
	if err := m.groupBackward(mlp, dAct, a.act, []*linear{&l.down}, []*tensor.Tensor{dout}, doutWs, a.t); err != nil {
		return nil, nil, err
	}
	dGateW, dUpW, err := m.swigluBackwardForProducts(mlp, dGate, dUp, dAct, a.gate, a.up, l)
	if err != nil {
		return nil, nil, err
	}
	if err := m.groupBackward(mlp, dn2, a.n2, []*linear{&l.gate, &l.up}, []*tensor.Tensor{dGate, dUp}, []*tensor.Tensor{dGateW, dUpW}, a.t); err != nil {
		return nil, nil, err
	}
	mlp.free()
	if err := m.be.RMSNormBackward(dh, dn2, a.h, l.postNorm, a.rstd2); err != nil {
		return nil, nil, err
	}
	dhW, err := m.addForProducts(ar, dh, dh, dout, l.o.w) // the residual
	if err != nil {
		return nil, nil, err
	}

	// Attention: h = x + o(attn(q, k, v)).
	var dhWs []*tensor.Tensor
	if dhW != nil {
		dhWs = []*tensor.Tensor{dhW}
	}
	if err := m.groupBackward(ar, dAttn, a.attn, []*linear{&l.o}, []*tensor.Tensor{dh}, dhWs, a.t); err != nil {
		return nil, nil, err
	}
	hq, hkv := c.NumAttentionHeads, c.NumKeyValueHeads
	if err := m.be.AttentionBackward(m.heads(dqa, ps, hq), m.heads(dka, ps, hkv), m.heads(dva, ps, hkv),
		m.heads(dAttn, ps, hq), m.heads(a.q, ps, hq), m.heads(a.k, ps, hkv), m.heads(a.v, ps, hkv), ps.docStart,
		m.heads(a.attn, ps, hq), a.lse, m.attnScale()); err != nil {
		return nil, nil, err
	}
	dqW, dkW, err := m.ropeBackwardForProducts(ar, dq, dk, dqa, dka, ps, l)
	if err != nil {
		return nil, nil, err
	}
	var dqkvWs []*tensor.Tensor
	if dqW != nil {
		dqkvWs = []*tensor.Tensor{dqW, dkW, nil} // v's product casts dva if it must
	}
	if err := m.groupBackward(ar, dn1, a.n1, []*linear{&l.q, &l.k, &l.v}, []*tensor.Tensor{dq, dk, dva}, dqkvWs, a.t); err != nil {
		return nil, nil, err
	}
	if err := m.be.RMSNormBackward(dx, dn1, a.x, l.inputNorm, a.rstd1); err != nil {
		return nil, nil, err
	}
	if below == nil {
		return dx, nil, m.be.Add(dx, dx, dh)
	}
	dxW, err = m.addForProducts(out, dx, dx, dh, below.down.w)
	return dx, dxW, err
}

// hidden runs the embedding and every layer. The embedding and the layer
// outputs are allocated in run, which the caller frees. With keepActs it
// also returns what each layer's backward needs and the arena holding it
// (freed by the caller after that layer's backward); with Recompute only
// each layer's input is kept and the rest is rebuilt in the backward.
func (m *Model) hidden(run *arena, ids *tensor.Tensor, ps *pass, keepActs bool) (*tensor.Tensor, []*layerActs, []*arena, error) {
	x := run.empty(ps.N, m.Config.HiddenSize)
	if run.err != nil {
		return nil, nil, nil, run.err
	}
	if err := m.be.Embedding(x, m.embed, ids); err != nil {
		return nil, nil, nil, fmt.Errorf("model: %w", err)
	}
	var acts []*layerActs
	var arenas []*arena
	for i := range m.layers {
		la, outAr := &arena{be: m.be}, run
		if keepActs && !m.Recompute {
			outAr = la // the output is the next layer's saved input: it lives as long as the acts
		}
		out, a, err := m.layerForward(la, outAr, &m.layers[i], x, ps)
		if err != nil {
			la.free()
			return nil, nil, nil, fmt.Errorf("model: layer %d: %w", i, err)
		}
		if keepActs && m.Recompute {
			a = &layerActs{x: x}
			la.free()
		} else if !keepActs {
			la.free()
		}
		if keepActs {
			acts, arenas = append(acts, a), append(arenas, la)
		}
		x = out
	}
	return x, acts, arenas, nil
}

// finalNorm applies the model's last RMSNorm.
func (m *Model) finalNorm(ar *arena, x *tensor.Tensor) (y, rstd *tensor.Tensor, err error) {
	y, rstd = ar.empty(x.Dim(0), x.Dim(1)), ar.empty(x.Dim(0))
	if ar.err != nil {
		return nil, nil, ar.err
	}
	err = m.be.RMSNorm(y, rstd, x, m.norm, float32(m.Config.RMSNormEps))
	return y, rstd, err
}

// Logits returns the logits F32 [B, T, V] for ids [B, T], in host memory.
// It holds all of them, so it is for small inputs and tests; Forward
// computes the loss without materialising them.
func (m *Model) Logits(ids *tensor.Tensor) (*tensor.Tensor, error) {
	run := &arena{be: m.be}
	defer run.free()
	y, ps, err := m.finalHidden(run, ids)
	if err != nil {
		return nil, err
	}
	logits := run.f32(ps.B, ps.T, m.Config.VocabSize)
	if run.err != nil {
		return nil, run.err
	}
	if err := m.be.MatMul(logits, y, m.lmHead, false, true, 1, 0); err != nil {
		return nil, fmt.Errorf("model: lm_head: %w", err)
	}
	return m.hostCopy(logits)
}

// finalHidden runs the whole decoder without keeping activations and
// returns the final RMSNorm's output [N, H], allocated in run.
func (m *Model) finalHidden(run *arena, ids *tensor.Tensor) (*tensor.Tensor, *pass, error) {
	ps, err := m.newPass(run, ids, nil)
	if err != nil {
		return nil, nil, err
	}
	devIDs, err := run.toDevice(ids)
	if err != nil {
		return nil, nil, err
	}
	x, _, _, err := m.hidden(run, devIDs, ps, false)
	if err != nil {
		return nil, nil, err
	}
	y, _, err := m.finalNorm(run, x)
	return y, ps, err
}

// LastHidden returns the last hidden states F32 [B, T, H] for ids [B, T]
// (the output of the final RMSNorm, as HF's last_hidden_state), in host
// memory. Sequences of different lengths can share a batch padded on the
// right: the causal mask keeps padding from changing earlier positions.
func (m *Model) LastHidden(ids *tensor.Tensor) (*tensor.Tensor, error) {
	run := &arena{be: m.be}
	defer run.free()
	y, ps, err := m.finalHidden(run, ids)
	if err != nil {
		return nil, err
	}
	h, err := m.hostCopy(y)
	if err != nil {
		return nil, err
	}
	return h.Reshape(ps.B, ps.T, m.Config.HiddenSize)
}

// hostCopy returns t's values in host memory that outlives the arenas.
func (m *Model) hostCopy(t *tensor.Tensor) (*tensor.Tensor, error) {
	h, err := m.be.ToHost(t)
	if err != nil {
		return nil, err
	}
	if h != t {
		return h, nil // already a fresh host copy
	}
	c := tensor.New(t.DType(), t.Shape()...)
	copy(c.Bytes(), t.Bytes())
	return c, nil
}

// Forward computes the loss and per-token log-probabilities of a batch.
func (m *Model) Forward(b Batch) (*Output, error) {
	return m.run(b, false)
}

// ForwardBackward computes the loss like Forward and adds the gradient of
// the loss (the mean over counted positions) with respect to every LoRA
// parameter into the model's gradient buffers (see LoRAGrads).
func (m *Model) ForwardBackward(b Batch) (*Output, error) {
	return m.run(b, true)
}

func (m *Model) run(b Batch, backward bool) (*Output, error) {
	run := &arena{be: m.be}
	defer run.free()
	ps, err := m.newPass(run, b.IDs, b.DocLens)
	if err != nil {
		return nil, err
	}
	if b.Labels == nil || b.Labels.DType() != tensor.I32 || !b.Labels.SameShape(b.IDs) {
		return nil, fmt.Errorf("model: labels must be I32 with the shape of ids %v, got %v", b.IDs, b.Labels)
	}
	counted := 0
	for _, l := range b.Labels.I32() {
		if l != IgnoreIndex {
			counted++
		}
	}
	if counted == 0 {
		return nil, fmt.Errorf("model: every label is %d: nothing to score", IgnoreIndex)
	}
	if backward && len(m.slots) == 0 {
		return nil, fmt.Errorf("model: no LoRA adapter attached: nothing to train")
	}
	if backward {
		if ps.drop, err = m.trainingDropout(); err != nil {
			return nil, err
		}
	}

	ids, err := run.toDevice(b.IDs)
	if err != nil {
		return nil, err
	}
	labels, err := b.Labels.Reshape(ps.N)
	if err != nil {
		return nil, err
	}
	if labels, err = run.toDevice(labels); err != nil {
		return nil, err
	}
	x, acts, arenas, err := m.hidden(run, ids, ps, backward)
	defer func() {
		for _, la := range arenas {
			la.free()
		}
	}()
	if err != nil {
		return nil, err
	}
	y, rstd, err := m.finalNorm(run, x)
	if err != nil {
		return nil, err
	}
	logprob, dy := run.f32(ps.N), (*tensor.Tensor)(nil)
	if backward {
		dy = run.f32(ps.N, m.Config.HiddenSize)
	}
	if run.err != nil {
		return nil, run.err
	}
	divisor := counted
	if b.GradDivisor > 0 {
		divisor = b.GradDivisor
	}
	if err := m.be.CrossEntropy(logprob, dy, y, m.lmHead, labels, m.LossChunk, float32(1/float64(divisor))); err != nil {
		return nil, fmt.Errorf("model: loss: %w", err)
	}
	lp, err := m.hostCopy(logprob)
	if err != nil {
		return nil, err
	}
	sum := 0.0
	for _, v := range lp.F32() {
		sum += float64(v)
	}
	lp, _ = lp.Reshape(ps.B, ps.T)
	out := &Output{Loss: -sum / float64(counted), Tokens: counted, LogProbs: lp}
	if !backward {
		return out, nil
	}

	grads := &arena{be: m.be} // holds the gradient flowing into the current layer
	dx := grads.empty(ps.N, m.Config.HiddenSize)
	var dxW *tensor.Tensor // dx in its down_proj's product dtype, where written with it (AddCast)
	if grads.err != nil {
		return nil, grads.err
	}
	if err := m.be.RMSNormBackward(dx, dy, x, m.norm, rstd); err != nil {
		grads.free()
		return nil, err
	}
	for i := len(m.layers) - 1; i >= 0; i-- {
		a := acts[i]
		if m.Recompute {
			la := &arena{be: m.be}
			if _, a, err = m.layerForward(la, la, &m.layers[i], a.x, ps); err != nil {
				la.free()
				grads.free()
				return nil, fmt.Errorf("model: layer %d: recompute: %w", i, err)
			}
			arenas[i] = la
		}
		next := &arena{be: m.be}
		var below *layer // the layer whose down_proj reads dx next
		if i > 0 {
			below = &m.layers[i-1]
		}
		dx, dxW, err = m.layerBackward(next, &m.layers[i], below, a, dx, dxW, ps)
		grads.free() // the gradient of this layer's output is consumed
		grads = next
		arenas[i].free() // and so are this layer's activations
		acts[i] = nil
		if err != nil {
			grads.free()
			return nil, fmt.Errorf("model: layer %d: backward: %w", i, err)
		}
	}
	grads.free()
	return out, nil
}
