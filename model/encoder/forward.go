package encoder

import (
	"fmt"
	"math"

	"github.com/compassml/compass/tensor"
)

// Forward runs the encoder on a batch of token sequences, each non-empty
// and at most MaxTokens long, right-padded with pad_token_id to the
// longest, T, and returns the last hidden states, F32 [B, T, H] on the
// host. Positions past a sequence's end hold the states HF computes for
// padding (pad queries attend to the sequence's tokens), which Pool leaves
// out. As HF's XLMRobertaModel and BertModel with an attention mask of
// ones over each sequence and token type ids of 0:
//
//	x = LayerNorm(word[id] + position[pos] + type[0])
//	per layer: a = LayerNorm(x + attn(x) Wo^T + bo)
//	           x = LayerNorm(a + gelu(a Wi^T + bi) Wout^T + bout)
//
// where attn is bidirectional multi-head attention over the sequence's
// tokens, and pos is t for BERT, and for XLM-R the count of non-padding
// tokens up to t plus pad_token_id (pad_token_id itself at padding).
func (m *Model) Forward(seqs [][]int) (*tensor.Tensor, error) {
	c := m.Config
	B := len(seqs)
	if B == 0 {
		return nil, fmt.Errorf("encoder: forward: no sequences")
	}
	T := 0
	for i, s := range seqs {
		if len(s) == 0 {
			return nil, fmt.Errorf("encoder: forward: sequence %d is empty", i)
		}
		if len(s) > c.MaxTokens() {
			return nil, fmt.Errorf("encoder: forward: sequence %d has %d tokens, more than the %d the position embeddings cover", i, len(s), c.MaxTokens())
		}
		for t, id := range s {
			if id < 0 || id >= c.VocabSize {
				return nil, fmt.Errorf("encoder: forward: sequence %d, token %d: id %d is outside the vocabulary of %d", i, t, id, c.VocabSize)
			}
		}
		T = max(T, len(s))
	}
	N, H := B*T, c.HiddenSize
	ids, pos, lens := make([]int32, N), make([]int32, N), make([]int32, B)
	for b, s := range seqs {
		lens[b] = int32(len(s))
		count := 0 // XLM-R: the non-padding tokens so far
		for t := 0; t < T; t++ {
			id := c.PadTokenID
			if t < len(s) {
				id = s[t]
			}
			ids[b*T+t] = int32(id)
			switch {
			case c.Family == FamilyBert:
				pos[b*T+t] = int32(t)
			case id == c.PadTokenID: // create_position_ids_from_input_ids masks by id
				pos[b*T+t] = int32(c.PadTokenID)
			default:
				count++
				pos[b*T+t] = int32(count + c.PadTokenID)
			}
		}
	}

	be := m.be
	run := &arena{be: be}
	defer run.free()
	idsT, posT, lensT := run.i32(ids, B, T), run.i32(pos, B, T), run.i32(lens, B)
	x, tmp := run.f32(N, H), run.f32(N, H)
	if run.err != nil {
		return nil, fmt.Errorf("encoder: forward: %w", run.err)
	}
	err := be.Embedding(x, m.wordEmb, idsT)
	if err == nil {
		err = be.Embedding(tmp, m.posEmb, posT)
	}
	if err == nil {
		err = be.Add(x, x, tmp)
	}
	if err == nil {
		err = be.Add(x, x, m.typeEmb)
	}
	if err == nil {
		err = be.LayerNorm(tmp, x, m.embNorm.w, m.embNorm.b, float32(c.LayerNormEps))
	}
	if err != nil {
		return nil, fmt.Errorf("encoder: embeddings: %w", err)
	}
	x, tmp = tmp, x
	acts := newLayerActs(run, B, T, c)
	if run.err != nil {
		return nil, fmt.Errorf("encoder: forward: %w", run.err)
	}
	for i := range m.layers {
		if err := m.layerForward(&m.layers[i], acts, x, lensT); err != nil {
			return nil, fmt.Errorf("encoder: layer %d: %w", i, err)
		}
	}
	// On the CPU this is x itself, which the arena's free leaves alone.
	out, err := be.ToHost(x)
	if err != nil {
		return nil, fmt.Errorf("encoder: forward: %w", err)
	}
	return out.Reshape(B, T, H)
}

// layerActs are one layer's scratch tensors, reused by every layer.
type layerActs struct {
	q, k, v, attn  *tensor.Tensor // [N, H]
	a              *tensor.Tensor // [N, H]: after attention, then after its LayerNorm
	h              *tensor.Tensor // [N, H]
	inter          *tensor.Tensor // [N, I]
	q4, k4, v4, o4 *tensor.Tensor // [B, T, heads, D] views of q, k, v, attn
}

func newLayerActs(run *arena, B, T int, c *Config) *layerActs {
	N, H := B*T, c.HiddenSize
	a := &layerActs{q: run.f32(N, H), k: run.f32(N, H), v: run.f32(N, H), attn: run.f32(N, H),
		a: run.f32(N, H), h: run.f32(N, H), inter: run.f32(N, c.IntermediateSize)}
	if run.err != nil {
		return a
	}
	heads, D := c.NumAttentionHeads, c.HeadDim()
	for _, p := range []struct{ dst, src **tensor.Tensor }{{&a.q4, &a.q}, {&a.k4, &a.k}, {&a.v4, &a.v}, {&a.o4, &a.attn}} {
		v, err := (*p.src).Reshape(B, T, heads, D)
		if err != nil {
			run.err = err
			return a
		}
		*p.dst = v
	}
	return a
}

// layerForward runs one layer on x [N, H], in place.
func (m *Model) layerForward(l *layer, s *layerActs, x, keyLen *tensor.Tensor) error {
	be, eps := m.be, float32(m.Config.LayerNormEps)
	for _, p := range []struct {
		y   *tensor.Tensor
		lin *linear
	}{{s.q, &l.q}, {s.k, &l.k}, {s.v, &l.v}} {
		if err := m.linear(p.y, x, p.lin); err != nil {
			return err
		}
	}
	scale := float32(1 / math.Sqrt(float64(m.Config.HeadDim())))
	if err := be.BidirectionalAttention(s.o4, s.q4, s.k4, s.v4, keyLen, scale); err != nil {
		return err
	}
	if err := m.linear(s.a, s.attn, &l.attnOut); err != nil {
		return err
	}
	if err := be.Add(s.a, s.a, x); err != nil {
		return err
	}
	if err := be.LayerNorm(s.h, s.a, l.attnNorm.w, l.attnNorm.b, eps); err != nil {
		return err
	}
	if err := m.linear(s.inter, s.h, &l.inter); err != nil {
		return err
	}
	if err := be.GELU(s.inter, s.inter); err != nil {
		return err
	}
	if err := m.linear(s.a, s.inter, &l.out); err != nil {
		return err
	}
	if err := be.Add(s.a, s.a, s.h); err != nil {
		return err
	}
	return be.LayerNorm(x, s.a, l.outNorm.w, l.outNorm.b, eps)
}

// linear sets y = x W^T + b.
func (m *Model) linear(y, x *tensor.Tensor, l *linear) error {
	if err := m.be.MatMul(y, x, l.w, false, true, 1, 0); err != nil {
		return err
	}
	return m.be.Add(y, y, l.b)
}

// arena allocates tensors on the backend and frees them together; after a
// failure it returns nil and keeps the first error.
type arena struct {
	be  tensor.Backend
	ts  []*tensor.Tensor
	err error
}

func (a *arena) f32(shape ...int) *tensor.Tensor {
	if a.err != nil {
		return nil
	}
	t, err := a.be.Alloc(tensor.F32, shape...)
	if err != nil {
		a.err = fmt.Errorf("allocate F32%v: %w", shape, err)
		return nil
	}
	a.ts = append(a.ts, t)
	return t
}

// i32 puts values on the backend as an I32 tensor.
func (a *arena) i32(values []int32, shape ...int) *tensor.Tensor {
	if a.err != nil {
		return nil
	}
	host, err := tensor.FromI32(values, shape...)
	if err == nil {
		var dev *tensor.Tensor
		if dev, err = a.be.ToDevice(host); err == nil {
			if dev != host {
				a.ts = append(a.ts, dev)
			}
			return dev
		}
	}
	a.err = err
	return nil
}

func (a *arena) free() {
	for _, t := range a.ts {
		a.be.Free(t)
	}
	a.ts = nil
}
