package model

import (
	"fmt"

	"github.com/compassml/compass/tensor"
)

// KVCache holds what generation keeps between steps for a batch of
// requests: every layer's keys (after RoPE) and values, [B, MaxLen+1, Hkv,
// D] on the model's backend, and each request's tokens so far. It is
// allocated once per batch, so memory grows linearly with MaxLen. Row
// MaxLen of each request is scratch: a request that sits out a decode step
// writes there.
type KVCache struct {
	B, MaxLen int
	DType     tensor.DType // of the cached keys and values

	m    *Model
	k, v []*tensor.Tensor // per layer
	lens []int            // tokens cached per request
	ids  [][]int          // the tokens cached, per request: a longrope switch recomputes the cache from them
	long bool             // the cached keys were rotated with longrope's long factors
}

// DefaultKVDType is the dtype NewKVCache uses for dtype 0: F32 on the CPU
// (its ops compute in float32 anyway, and the cached decode then matches a
// full recomputation closely), BF16 elsewhere (half the memory of a long
// context; keys and values are rounded to bf16 once, as a bf16 checkpoint's
// projections would be in HF).
func (m *Model) DefaultKVDType() tensor.DType {
	if m.be.Name() == "cpu" {
		return tensor.F32
	}
	return tensor.BF16
}

// NewKVCache allocates a cache for batch requests of up to maxLen tokens
// each (prompt and generated), of dtype (0: DefaultKVDType).
func (m *Model) NewKVCache(batch, maxLen int, dtype tensor.DType) (*KVCache, error) {
	if batch <= 0 || maxLen <= 0 {
		return nil, fmt.Errorf("model: kv cache: batch %d and length %d must be positive", batch, maxLen)
	}
	if dtype == 0 {
		dtype = m.DefaultKVDType()
	}
	if !dtype.IsFloat() {
		return nil, fmt.Errorf("model: kv cache: dtype %s is not a float dtype", dtype)
	}
	cfg := m.Config
	c := &KVCache{B: batch, MaxLen: maxLen, DType: dtype, m: m, lens: make([]int, batch), ids: make([][]int, batch)}
	for i := range m.layers {
		for _, dst := range []*[]*tensor.Tensor{&c.k, &c.v} {
			t, err := m.be.Alloc(dtype, batch, maxLen+1, cfg.NumKeyValueHeads, cfg.HeadDim)
			if err != nil {
				c.Close()
				return nil, fmt.Errorf("model: kv cache: layer %d: %w", i, err)
			}
			*dst = append(*dst, t)
		}
	}
	return c, nil
}

// Bytes is the memory the cached keys and values take.
func (c *KVCache) Bytes() int64 {
	var n int64
	for _, t := range append(append([]*tensor.Tensor(nil), c.k...), c.v...) {
		n += int64(t.NumElements() * t.DType().Size())
	}
	return n
}

// Len is how many tokens of request b the cache holds.
func (c *KVCache) Len(b int) int { return c.lens[b] }

// Close frees the cache's memory on the backend.
func (c *KVCache) Close() {
	for _, t := range c.k {
		c.m.be.Free(t)
	}
	for _, t := range c.v {
		c.m.be.Free(t)
	}
	c.k, c.v = nil, nil
}
