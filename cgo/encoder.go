package cgo

import (
	"fmt"

	"github.com/compassml/compass/kernels"
	"github.com/compassml/compass/tensor"
)

// The operations of the encoders (model/encoder): LayerNorm, GELU and
// bidirectional attention. Forward only.

// LayerNorm implements tensor.Backend.
func (b *Backend) LayerNorm(out, x, weight, bias *tensor.Tensor, eps float32) error {
	const op = "layernorm"
	if out == nil || x == nil || weight == nil {
		return fmt.Errorf("cuda: %s: out, x and weight are required", op)
	}
	if err := floatCheck(op, out, x, weight, bias); err != nil {
		return err
	}
	if x.Rank() == 0 {
		return fmt.Errorf("cuda: %s: x %v must have a hidden dimension", op, x)
	}
	H := x.Dim(-1)
	if weight.Rank() != 1 || weight.Dim(0) != H {
		return fmt.Errorf("cuda: %s: weight %v must be [%d] for x %v", op, weight, H, x)
	}
	if bias != nil && (bias.Rank() != 1 || bias.Dim(0) != H) {
		return fmt.Errorf("cuda: %s: bias %v must be [%d] for x %v", op, bias, H, x)
	}
	if !out.SameShape(x) {
		return fmt.Errorf("cuda: %s: out %v must have the shape of x %v", op, out, x)
	}
	n := rows(x)
	if err := int32Check(op, n, H); err != nil || n == 0 || H == 0 {
		return err
	}
	args := new(Args).Tensor(out).Tensor(x).Tensor(weight).Tensor(bias).I32(n).I32(H).F32(eps)
	return b.q.launch(op, "layernorm_forward", kernels.Sizes{N: n, H: H}, args)
}

// GELU implements tensor.Backend.
func (b *Backend) GELU(out, x *tensor.Tensor) error {
	if out == nil || x == nil {
		return fmt.Errorf("cuda: gelu: out and x are required")
	}
	if err := floatCheck("gelu", out, x); err != nil {
		return err
	}
	if err := sameShapes("gelu", out, x); err != nil {
		return err
	}
	n := out.NumElements()
	if n == 0 {
		return nil
	}
	args := new(Args).Tensor(out).Tensor(x).U64(n)
	return b.q.launch("gelu", "gelu_forward", kernels.Sizes{N: n}, args)
}

// BidirectionalAttention implements tensor.Backend. keyLen's values stay on
// the device, unchecked (the kernel clamps each to [1, T]): reading them
// back would stall the stream at every layer.
func (b *Backend) BidirectionalAttention(out, q, k, v, keyLen *tensor.Tensor, scale float32) error {
	const op = "bidirectional attention"
	if out == nil || q == nil || k == nil || v == nil || keyLen == nil {
		return fmt.Errorf("cuda: %s: out, q, k, v and keyLen are required", op)
	}
	if err := floatCheck(op, out, q, k, v); err != nil {
		return err
	}
	if err := deviceCheck(op, keyLen); err != nil {
		return err
	}
	if q.Rank() != 4 || k.Rank() != 4 {
		return fmt.Errorf("cuda: %s: q %v and k %v must be [B, T, heads, D]", op, q, k)
	}
	s := kernels.Sizes{B: q.Dim(0), T: q.Dim(1), Hq: q.Dim(2), Hkv: k.Dim(2), D: q.Dim(3)}
	if k.Dim(0) != s.B || k.Dim(1) != s.T || k.Dim(3) != s.D || !v.SameShape(k) {
		return fmt.Errorf("cuda: %s: k %v and v %v do not match q %v", op, k, v, q)
	}
	if s.Hkv == 0 || s.Hq%s.Hkv != 0 {
		return fmt.Errorf("cuda: %s: %d query heads are not a multiple of %d kv heads", op, s.Hq, s.Hkv)
	}
	if !out.SameShape(q) {
		return fmt.Errorf("cuda: %s: out %v must have the shape of q %v", op, out, q)
	}
	if keyLen.DType() != tensor.I32 || keyLen.NumElements() != s.B {
		return fmt.Errorf("cuda: %s: keyLen %v must be I32 [%d]", op, keyLen, s.B)
	}
	if s.D > kernels.AttentionMaxHeadDim {
		return fmt.Errorf("cuda: %s: head dimension %d is above the kernel's %d", op, s.D, kernels.AttentionMaxHeadDim)
	}
	if s.T > 65535*16 || s.Hq > 65535 || s.B > 65535 {
		return fmt.Errorf("cuda: %s: q %v is beyond the kernel's grid", op, q)
	}
	if err := int32Check(op, q.NumElements()); err != nil || s.B*s.T*s.Hq*s.D == 0 {
		return err
	}
	args := new(Args).Tensor(out).Tensor(q).Tensor(k).Tensor(v).Raw(keyLen).
		I32(s.B).I32(s.T).I32(s.Hq).I32(s.Hkv).I32(s.D).F32(scale)
	return b.q.launch(op, "attention_bidir_forward", s, args)
}
