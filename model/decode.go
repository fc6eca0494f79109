package model

import (
	"fmt"

	"github.com/compassml/compass/tensor"
)

// prefillTokens bounds the tokens (batch x chunk) one prefill chunk runs at
// once, so that a 128k-token prompt needs activations for a chunk, not for
// the whole prompt; the cache alone grows with the length. A variable so
// that tests can make chunks small.
var prefillTokens = 4096

// Prefill runs the prompts (token ids, one per request, of any lengths up
// to the cache's MaxLen) through the model, filling c from position 0, and
// returns the logits F32 [B, V] of each prompt's last token, in host
// memory. The batch is right-padded to the longest prompt and run in chunks
// of positions; padding is written to the cache past each request's length,
// where no later query looks (and a decode step overwrites it).
func (m *Model) Prefill(c *KVCache, prompts [][]int) (*tensor.Tensor, error) {
	if len(prompts) != c.B {
		return nil, fmt.Errorf("model: prefill: %d prompts for a cache of %d requests", len(prompts), c.B)
	}
	T := 0
	for b, p := range prompts {
		if len(p) == 0 {
			return nil, fmt.Errorf("model: prefill: prompt %d is empty", b)
		}
		if len(p) > c.MaxLen {
			return nil, fmt.Errorf("model: prefill: prompt %d has %d tokens; the cache holds %d", b, len(p), c.MaxLen)
		}
		for i, id := range p {
			if id < 0 || id >= m.Config.VocabSize {
				return nil, fmt.Errorf("model: prefill: prompt %d: token %d at position %d is outside the vocabulary (%d)", b, id, i, m.Config.VocabSize)
			}
		}
		T = max(T, len(p))
	}
	for b, p := range prompts {
		c.ids[b] = append(c.ids[b][:0], p...)
		c.lens[b] = 0
	}
	c.long = m.longRope(T)
	return m.prefill(c, T)
}

// longRope reports whether a sequence of n tokens uses longrope's long
// factors (InvFreq).
func (m *Model) longRope(n int) bool {
	return m.Config.RopeScaling.Type == RopeLongRope && n > longRopeOriginal(m.Config)
}

// prefill runs c.ids (the longest has T tokens) in chunks and sets c.lens.
func (m *Model) prefill(c *KVCache, T int) (*tensor.Tensor, error) {
	H := m.Config.HiddenSize
	run := &arena{be: m.be}
	defer run.free()
	last := run.f32(c.B, H) // each request's last hidden state
	if run.err != nil {
		return nil, run.err
	}
	chunk := max(16, prefillTokens/c.B)
	for c0 := 0; c0 < T; c0 += chunk {
		n := min(chunk, T-c0)
		ids := make([]int32, c.B*n)
		pos := make([]int, c.B)
		for b, p := range c.ids {
			pos[b] = c0
			for t := 0; t < n && c0+t < len(p); t++ {
				ids[b*n+t] = int32(p[c0+t])
			}
		}
		x, xAr, err := m.step(c, ids, n, pos, T-1)
		if err != nil {
			return nil, err
		}
		for b, p := range c.ids {
			if t := len(p) - 1 - c0; t >= 0 && t < n && err == nil {
				err = m.copyRow(last, b, x, b*n+t)
			}
		}
		xAr.free()
		if err != nil {
			return nil, fmt.Errorf("model: prefill: %w", err)
		}
	}
	for b, p := range c.ids {
		c.lens[b] = len(p)
	}
	return m.headLogits(run, last)
}

// Decode appends one token per request (ids[b], or a negative id for a
// request that sits this step out: its length does not change and its
// logits are meaningless) and returns the logits F32 [B, V] of the next
// token, in host memory. A longrope model whose longest sequence grows past
// the original context recomputes the whole cache with the long factors,
// as HF's Phi-3 does, so that every key is rotated as a full recomputation
// would rotate it.
func (m *Model) Decode(c *KVCache, ids []int) (*tensor.Tensor, error) {
	if len(ids) != c.B {
		return nil, fmt.Errorf("model: decode: %d tokens for a cache of %d requests", len(ids), c.B)
	}
	longest := 0
	for b, id := range ids {
		if id >= m.Config.VocabSize {
			return nil, fmt.Errorf("model: decode: token %d of request %d is outside the vocabulary (%d)", id, b, m.Config.VocabSize)
		}
		n := c.lens[b]
		if id >= 0 {
			if n == 0 {
				return nil, fmt.Errorf("model: decode: request %d has no prompt (Prefill first)", b)
			}
			if n >= c.MaxLen {
				return nil, fmt.Errorf("model: decode: request %d already holds %d tokens, the cache's length", b, n)
			}
			n++
		}
		longest = max(longest, n)
	}
	if c.k == nil {
		return nil, fmt.Errorf("model: decode: the cache is closed")
	}
	for b, id := range ids {
		if id >= 0 {
			c.ids[b] = append(c.ids[b], id)
		}
	}
	if m.longRope(longest) && !c.long {
		c.long = true
		return m.prefill(c, longest)
	}

	tok := make([]int32, c.B)
	pos := make([]int, c.B)
	for b, id := range ids {
		pos[b] = c.lens[b] // a request sitting out writes there, past its tokens (at most the scratch row)
		if id >= 0 {
			tok[b] = int32(id)
		}
	}
	x, xAr, err := m.step(c, tok, 1, pos, longest-1)
	if err != nil {
		return nil, err
	}
	defer xAr.free()
	for b, id := range ids {
		if id >= 0 {
			c.lens[b]++
		}
	}
	return m.headLogits(xAr, x)
}

// headLogits applies the final norm and the lm_head to x [B, H] and returns
// the logits in host memory.
func (m *Model) headLogits(ar *arena, x *tensor.Tensor) (*tensor.Tensor, error) {
	y, _, err := m.finalNorm(ar, x)
	if err != nil {
		return nil, fmt.Errorf("model: final norm: %w", err)
	}
	logits := ar.f32(x.Dim(0), m.Config.VocabSize)
	if ar.err != nil {
		return nil, ar.err
	}
	if err := m.be.MatMul(logits, y, m.lmHead, false, true, 1, 0); err != nil {
		return nil, fmt.Errorf("model: lm_head: %w", err)
	}
	return m.hostCopy(logits)
}

// copyRow copies row j of src [N, H] into row i of dst [B, H].
func (m *Model) copyRow(dst *tensor.Tensor, i int, src *tensor.Tensor, j int) error {
	d, err := dst.Slice(i, i+1)
	if err != nil {
		return err
	}
	s, err := src.Slice(j, j+1)
	if err != nil {
		return err
	}
	return m.be.Copy(d, s)
}

// step runs n new tokens per request (ids I32 values [B*n], row-major), at
// positions pos[b] .. pos[b]+n-1, through every layer, writing their keys
// and values into c and attending to it. maxPos chooses longrope's factors.
// It returns the last layer's output [B*n, H] and the arena holding it.
func (m *Model) step(c *KVCache, ids []int32, n int, pos []int, maxPos int) (*tensor.Tensor, *arena, error) {
	ps := &pass{B: c.B, T: n, N: c.B * n}
	positions := make([]int, ps.N)
	pos32 := make([]int32, c.B)
	for b, p := range pos {
		pos32[b] = int32(p)
		for t := 0; t < n; t++ {
			positions[b*n+t] = p + t
		}
	}
	run := &arena{be: m.be} // the step's inputs, freed on return
	defer run.free()
	cos, sin, err := ropeTablesAt(m.Config, positions, maxPos)
	if err != nil {
		return nil, nil, err
	}
	if ps.cos, err = run.toDevice(cos); err != nil {
		return nil, nil, err
	}
	if ps.sin, err = run.toDevice(sin); err != nil {
		return nil, nil, err
	}
	posT, err := tensor.FromI32(pos32, c.B)
	if err != nil {
		return nil, nil, err
	}
	if posT, err = run.toDevice(posT); err != nil {
		return nil, nil, err
	}
	idT, err := tensor.FromI32(ids, ps.N)
	if err != nil {
		return nil, nil, err
	}
	if idT, err = run.toDevice(idT); err != nil {
		return nil, nil, err
	}

	xAr := &arena{be: m.be}
	x := xAr.f32(ps.N, m.Config.HiddenSize)
	if xAr.err != nil {
		return nil, nil, xAr.err
	}
	if err := m.be.Embedding(x, m.embed, idT); err != nil {
		xAr.free()
		return nil, nil, fmt.Errorf("model: %w", err)
	}
	for i := range m.layers {
		la, outAr := &arena{be: m.be}, &arena{be: m.be}
		out, err := m.layerStep(la, outAr, i, x, ps, c, posT)
		la.free()
		xAr.free()
		if err != nil {
			outAr.free()
			return nil, nil, fmt.Errorf("model: layer %d: %w", i, err)
		}
		x, xAr = out, outAr
	}
	return x, xAr, nil
}

// layerStep is layerForward for generation: the attention writes this
// step's keys and values into layer i's cache and attends to it; nothing
// is kept for a backward, and adapters run without dropout.
func (m *Model) layerStep(ar, outAr *arena, i int, x *tensor.Tensor, ps *pass, c *KVCache, pos *tensor.Tensor) (*tensor.Tensor, error) {
	cfg := m.Config
	l := &m.layers[i]
	N, H, I := ps.N, cfg.HiddenSize, cfg.IntermediateSize
	Q, KV := cfg.NumAttentionHeads*cfg.HeadDim, cfg.NumKeyValueHeads*cfg.HeadDim
	eps := float32(cfg.RMSNormEps)
	t := &loraActs{xa: map[*loraSlot]*tensor.Tensor{}}

	// Every tensor here is an operation's whole output.
	n1, rstd := ar.emptyOf(m.inputDType(l.q.w, l.k.w, l.v.w), N, H), ar.empty(N)
	q, k, v, attn := ar.empty(N, Q), ar.empty(N, KV), ar.empty(N, KV), ar.empty(N, Q)
	o, h, n2 := ar.empty(N, H), ar.empty(N, H), ar.emptyOf(m.inputDType(l.gate.w, l.up.w), N, H)
	gate, up, act := ar.empty(N, I), ar.empty(N, I), ar.emptyOf(m.inputDType(l.down.w), N, I)
	down, out := ar.empty(N, H), outAr.empty(N, H)
	if ar.err != nil {
		return nil, ar.err
	}
	if outAr.err != nil {
		return nil, outAr.err
	}
	if err := m.be.RMSNorm(n1, rstd, x, l.inputNorm, eps); err != nil {
		return nil, err
	}
	for _, p := range []struct {
		y *tensor.Tensor
		w *linear
	}{{q, &l.q}, {k, &l.k}, {v, &l.v}} {
		if err := m.linearForward(ar, p.y, n1, p.w, t); err != nil {
			return nil, err
		}
	}
	if err := m.rope(q, k, q, k, ps, false); err != nil {
		return nil, err
	}
	hq, hkv := cfg.NumAttentionHeads, cfg.NumKeyValueHeads
	if err := m.be.AttentionKV(m.heads(attn, ps, hq), m.heads(q, ps, hq), m.heads(k, ps, hkv), m.heads(v, ps, hkv),
		c.k[i], c.v[i], pos, m.attnScale()); err != nil {
		return nil, err
	}
	if err := m.linearForward(ar, o, attn, &l.o, t); err != nil {
		return nil, err
	}
	if err := m.be.Add(h, x, o); err != nil {
		return nil, err
	}
	if err := m.be.RMSNorm(n2, rstd, h, l.postNorm, eps); err != nil {
		return nil, err
	}
	if err := m.linearForward(ar, gate, n2, &l.gate, t); err != nil {
		return nil, err
	}
	if err := m.linearForward(ar, up, n2, &l.up, t); err != nil {
		return nil, err
	}
	if err := m.be.SwiGLU(act, gate, up); err != nil {
		return nil, err
	}
	if err := m.linearForward(ar, down, act, &l.down, t); err != nil {
		return nil, err
	}
	return out, m.be.Add(out, h, down)
}
