package lora

import (
	"fmt"

	"github.com/compassml/compass/tensor"
)

// cpu computes merges. Merging is done once per adapter, not per step, so
// the CPU backend is fast enough.
var cpu = tensor.NewCPU()

// Merge adds the adapter's update to a base weight: W += scaling * B A,
// with W [out, in] in its own dtype (F32, BF16 or F16), A [r, in] and
// B [out, r]. The sum is computed in float32 and rounded to W's dtype once.
// W must be writable (not a view of a memory-mapped checkpoint).
//
// PEFT rounds the update to W's dtype before adding it when it merges
// safely or unmerges (layer.py, Linear.merge and unmerge), so a bf16 merge
// may differ from PEFT's in the last bit.
func Merge(w, A, B *tensor.Tensor, scaling float32) error {
	if err := checkMerge(w, A, B); err != nil {
		return fmt.Errorf("lora: merge: %w", err)
	}
	if err := cpu.MatMul(w, B, A, false, false, scaling, 1); err != nil {
		return fmt.Errorf("lora: merge: %w", err)
	}
	return nil
}

// Unmerge takes the adapter's update out of a merged weight:
// W -= scaling * B A, computed as Merge computes. In float32 it restores W
// up to rounding; in bf16 or f16 up to the rounding of both steps.
func Unmerge(w, A, B *tensor.Tensor, scaling float32) error {
	if err := checkMerge(w, A, B); err != nil {
		return fmt.Errorf("lora: unmerge: %w", err)
	}
	if err := cpu.MatMul(w, B, A, false, false, -scaling, 1); err != nil {
		return fmt.Errorf("lora: unmerge: %w", err)
	}
	return nil
}

// checkMerge checks the shapes and dtypes of W [out, in], A [r, in] and
// B [out, r].
func checkMerge(w, A, B *tensor.Tensor) error {
	for _, t := range []struct {
		name string
		t    *tensor.Tensor
	}{{"W", w}, {"A", A}, {"B", B}} {
		if t.t == nil {
			return fmt.Errorf("%s is nil", t.name)
		}
		if t.t.Rank() != 2 || !t.t.DType().IsFloat() {
			return fmt.Errorf("%s is %s, want a 2-D F32, BF16 or F16 matrix", t.name, t.t)
		}
	}
	if A.Dim(1) != w.Dim(1) || B.Dim(0) != w.Dim(0) || B.Dim(1) != A.Dim(0) {
		return fmt.Errorf("the shapes do not fit: W %v, A %v, B %v; want W [out, in], A [r, in], B [out, r]", w.Shape(), A.Shape(), B.Shape())
	}
	return nil
}
