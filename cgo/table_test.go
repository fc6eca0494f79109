package cgo

import (
	"reflect"
	"strings"
	"testing"

	"github.com/compassml/compass/kernels"
	"github.com/compassml/compass/tensor"
)

// noBackendOp are the kernels no Backend operation launches yet, and why.
// The test fails when one of them gains an operation: take it off then.
var noBackendOp = map[string]string{}

// TestTable walks kernels.Table: every kernel's Matches names an operation
// of tensor.Backend (or says in parentheses why there is none), and an
// operation of the backend launches it (run here on the recording queue,
// which also checks each launch's arguments against the PTX). That a GPU
// test runs each kernel is checked where they run: a run of the whole
// `-tags cuda` suite on the emulated device fails unless it launched every
// kernel of the Table (TestMain, backend_cuda_test.go).
func TestTable(t *testing.T) {
	launched := tableLaunches(t)
	backend := reflect.TypeOf((*tensor.Backend)(nil)).Elem()
	for _, k := range kernels.Table {
		op, _, _ := strings.Cut(k.Matches, " ")
		if !strings.HasPrefix(k.Matches, "(") {
			if _, ok := backend.MethodByName(op); !ok {
				t.Errorf("%s: Matches %q: tensor.Backend has no operation %s", k.Name, k.Matches, op)
			}
		}
		why, excused := noBackendOp[k.Name]
		switch {
		case launched[k.Name] && excused:
			t.Errorf("%s: a backend operation launches it now: take it off noBackendOp", k.Name)
		case !launched[k.Name] && !excused:
			t.Errorf("%s: no backend operation launches it", k.Name)
		case excused:
			t.Logf("%s: no backend operation: %s", k.Name, why)
		}
	}
	for name := range noBackendOp {
		if _, err := kernels.Lookup(name); err != nil {
			t.Errorf("noBackendOp: %v", err)
		}
	}
}

// tableLaunches runs one call of every operation that launches kernels on
// the recording queue and returns the kernels launched.
func tableLaunches(t *testing.T) map[string]bool {
	b, q := recBackend(t)
	defer b.Close()
	f32, bf16, i32 := tensor.F32, tensor.BF16, tensor.I32
	const B, T, Hq, Hkv, D, H, V, I, S = 2, 5, 4, 2, 8, 16, 37, 24, 9
	N := B * T
	q4 := func() *tensor.Tensor { return dev(t, b, f32, B, T, Hq, D) }
	kv := func() *tensor.Tensor { return dev(t, b, f32, B, T, Hkv, D) }
	calls := map[string]func() error{
		"add":       func() error { return b.Add(dev(t, b, f32, N, H), dev(t, b, f32, N, H), dev(t, b, bf16, H)) },
		"mul":       func() error { return b.Mul(dev(t, b, f32, N, H), dev(t, b, f32, N, H), dev(t, b, f32, N, H)) },
		"scale":     func() error { return b.Scale(dev(t, b, f32, 3, 4), dev(t, b, bf16, 3, 4), 0.5) },
		"copy":      func() error { return b.Copy(dev(t, b, bf16, 6), dev(t, b, f32, 2, 3)) },
		"dropout":   func() error { return b.Dropout(dev(t, b, f32, N, H), dev(t, b, bf16, N, H), 0.1, 7) },
		"embedding": func() error { return b.Embedding(dev(t, b, f32, N, H), dev(t, b, bf16, V, H), dev(t, b, i32, N)) },
		"rmsnorm": func() error {
			return b.RMSNorm(dev(t, b, f32, N, H), dev(t, b, f32, N), dev(t, b, bf16, N, H), dev(t, b, bf16, H), 1e-5)
		},
		"rmsnorm backward": func() error {
			return b.RMSNormBackward(dev(t, b, f32, N, H), dev(t, b, f32, N, H), dev(t, b, f32, N, H), dev(t, b, bf16, H), dev(t, b, f32, N))
		},
		"rope": func() error {
			x := dev(t, b, f32, N, Hq, D)
			return b.RoPE(x, x, dev(t, b, f32, N, 3), dev(t, b, f32, N, 3), false)
		},
		"attention": func() error {
			return b.Attention(q4(), dev(t, b, f32, B, Hq, T), q4(), kv(), kv(), nil, 0.3)
		},
		"attention tc": func() error {
			// bf16, head dimensions 64, 96 and 128: the tensor-core kernels.
			for _, d := range kernels.AttentionTCHeadDims {
				q, k, v := dev(t, b, bf16, B, T, Hq, d), dev(t, b, bf16, B, T, Hkv, d), dev(t, b, bf16, B, T, Hkv, d)
				if err := b.Attention(dev(t, b, bf16, B, T, Hq, d), dev(t, b, f32, B, Hq, T), q, k, v, nil, 0.3); err != nil {
					return err
				}
				dq, dk, dv := dev(t, b, bf16, B, T, Hq, d), dev(t, b, bf16, B, T, Hkv, d), dev(t, b, bf16, B, T, Hkv, d)
				// dq from the dk/dv kernel's dS, then recomputed.
				for _, recompute := range []bool{false, true} {
					b.attentionRecomputeDQ = recompute
					err := b.AttentionBackward(dq, dk, dv, dev(t, b, bf16, B, T, Hq, d), q, k, v, nil, dev(t, b, bf16, B, T, Hq, d), dev(t, b, f32, B, Hq, T), 0.3)
					b.attentionRecomputeDQ = false
					if err != nil {
						return err
					}
				}
			}
			return nil
		},
		"attention backward": func() error {
			return b.AttentionBackward(q4(), kv(), kv(), q4(), q4(), kv(), kv(), nil, q4(), dev(t, b, f32, B, Hq, T), 0.3)
		},
		"attention kv": func() error {
			pos, _ := tensor.FromI32([]int32{0, 3}, B)
			return b.AttentionKV(q4(), q4(), kv(), kv(), dev(t, b, f32, B, S, Hkv, D), dev(t, b, f32, B, S, Hkv, D), toDevT(t, b, pos), 0.3)
		},
		"layernorm": func() error {
			return b.LayerNorm(dev(t, b, f32, N, H), dev(t, b, f32, N, H), dev(t, b, bf16, H), dev(t, b, bf16, H), 1e-5)
		},
		"gelu": func() error { return b.GELU(dev(t, b, f32, N, I), dev(t, b, bf16, N, I)) },
		"bidirectional attention": func() error {
			keyLen, _ := tensor.FromI32([]int32{T, 2}, B)
			return b.BidirectionalAttention(q4(), q4(), kv(), kv(), toDevT(t, b, keyLen), 0.3)
		},
		"swiglu": func() error { return b.SwiGLU(dev(t, b, f32, N, I), dev(t, b, f32, N, I), dev(t, b, bf16, N, I)) },
		"swiglu backward": func() error {
			return b.SwiGLUBackward(dev(t, b, f32, N, I), dev(t, b, f32, N, I), dev(t, b, f32, N, I), dev(t, b, f32, N, I), dev(t, b, f32, N, I))
		},
		"cross entropy": func() error {
			return b.CrossEntropy(dev(t, b, f32, N), dev(t, b, f32, N, H), dev(t, b, f32, N, H), dev(t, b, bf16, V, H), dev(t, b, i32, N), 16, 0.1)
		},
		"adamw": func() error {
			p, g, m, v := dev(t, b, f32, 4, 16), dev(t, b, f32, 4, 16), dev(t, b, f32, 4, 16), dev(t, b, f32, 4, 16)
			return b.AdamW([]*tensor.Tensor{p}, []*tensor.Tensor{g}, []*tensor.Tensor{m}, []*tensor.Tensor{v}, 1, 1e-3, 0.9, 0.999, 1e-8, 0.01)
		},
		"zero tensors": func() error {
			return b.ZeroTensors([]*tensor.Tensor{dev(t, b, f32, 4, 16), dev(t, b, bf16, 3)})
		},
		"embedding backward": func() error {
			return b.embeddingBackward(dev(t, b, f32, V, H), dev(t, b, bf16, N, H), dev(t, b, i32, N))
		},
		"kmeans assign": func() error {
			return b.KMeansAssign(dev(t, b, i32, N), dev(t, b, f32, N), dev(t, b, bf16, N, H), dev(t, b, f32, 5, H))
		},
		"kmeans assign, float32 points": func() error {
			return b.KMeansAssign(dev(t, b, i32, N), dev(t, b, f32, N), dev(t, b, f32, N, H), dev(t, b, f32, 5, H))
		},
		"kmeans assign, float32 FMA": func() error {
			return b.kmeansAssignF32(dev(t, b, i32, N), dev(t, b, f32, N), dev(t, b, f32, N, H), dev(t, b, f32, 5, H))
		},
		"kmeans update": func() error {
			return b.KMeansUpdate(dev(t, b, f32, 7, H), dev(t, b, i32, 7), dev(t, b, f32, N, H), dev(t, b, i32, N))
		},
		"narrow matmul, the sum in two chunks": func() error {
			return b.narrowMatMul(dev(t, b, f32, 3, N), dev(t, b, f32, 3, 130), dev(t, b, f32, N, 130), false, 1, 0, 2)
		},
		"expand matmul": func() error {
			return b.ExpandMatMul(dev(t, b, f32, N, H), dev(t, b, f32, 3, N), dev(t, b, f32, H, 3), true, 1, 0)
		},
		"grad matmul, the tokens in two chunks": func() error {
			return b.gradMatMul(dev(t, b, f32, 3, H), dev(t, b, f32, 3, 70), dev(t, b, f32, 70, H), false, 1, 1, 2)
		},
		"narrow matmul, bf16 x": func() error {
			return b.NarrowMatMul(dev(t, b, f32, 3, N), dev(t, b, f32, 3, H), dev(t, b, bf16, N, H), false, 1, 0)
		},
		"grad matmul, bf16 x": func() error {
			return b.GradMatMul(dev(t, b, f32, 3, H), dev(t, b, f32, 3, N), dev(t, b, bf16, N, H), false, 1, 1)
		},
	}
	launched := map[string]bool{}
	for name, call := range calls {
		q.log = nil
		if err := call(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		for _, k := range q.log {
			launched[k] = true
		}
	}
	return launched
}

// toDevT copies a host tensor to the recording backend's device.
func toDevT(t *testing.T, b *Backend, h *tensor.Tensor) *tensor.Tensor {
	t.Helper()
	d, err := b.ToDevice(h)
	if err != nil {
		t.Fatal(err)
	}
	return d
}
