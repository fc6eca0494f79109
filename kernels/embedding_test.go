package kernels_test

import (
	"fmt"
	"math"
	"testing"

	"github.com/compassml/compass/kernels"
	"github.com/compassml/compass/tensor"
)

// TestEmbedding checks embedding_forward against tensor.CPU.Embedding (bit
// for bit: a gather and one rounding), with repeated ids and dtype changes,
// and that an id outside the vocabulary zeroes its row and reports the
// lowest bad position, the one the CPU op's error names.
func TestEmbedding(t *testing.T) {
	rng := newRand(t)
	const V, H, N = 11, 37, 19
	for _, c := range []struct{ table, out tensor.DType }{
		{tensor.F32, tensor.F32}, {tensor.BF16, tensor.F32}, {tensor.F16, tensor.BF16}, {tensor.BF16, tensor.BF16},
	} {
		table := randTensor(rng, c.table, 1, V, H)
		ids := make([]int32, N)
		for i := range ids {
			ids[i] = int32(rng.IntN(V))
		}
		want := tensor.New(c.out, N, H)
		if err := cpu.Embedding(want, table, i32s(ids, N)); err != nil {
			t.Fatal(err)
		}
		got := newEmu(t, "embedding_forward").in("table", table).in("ids", i32s(ids, N)).set("out_dtype", c.out).
			launch("embedding_forward", kernels.Sizes{N: N, H: H}).run()
		sameBits(t, fmt.Sprintf("%v->%v", c.table, c.out), got["out"], want)
		if bad := got["bad"].I32()[0]; bad != math.MaxInt32 {
			t.Errorf("%v->%v: bad = %d for valid ids", c.table, c.out, bad)
		}
	}

	table := randTensor(rng, tensor.F32, 1, V, H)
	ids := []int32{3, 0, 10, 2, -1, 5, 5, 11, 1}
	got := newEmu(t, "embedding_forward").in("table", table).in("ids", i32s(ids, len(ids))).set("out_dtype", tensor.F32).
		launch("embedding_forward", kernels.Sizes{N: len(ids), H: H}).run()
	if bad := got["bad"].I32()[0]; bad != 4 {
		t.Errorf("ids %v: bad = %d, want 4", ids, bad)
	}
	out, tv := got["out"].F32(), table.F32()
	for i, id := range ids {
		for j := 0; j < H; j++ {
			want := float32(0)
			if id >= 0 && id < V {
				want = tv[int(id)*H+j]
			}
			if out[i*H+j] != want {
				t.Fatalf("ids %v: out[%d, %d] = %g, want %g", ids, i, j, out[i*H+j], want)
			}
		}
	}
}

// TestEmbeddingBackward checks embedding_backward, which adds dout into the
// rows of dtable its ids select (with atomics: ids repeat), against a
// float64 scatter-add.
func TestEmbeddingBackward(t *testing.T) {
	rng := newRand(t)
	const V, H, N = 7, 29, 40 // ids repeat about 6 times each
	for _, dt := range []tensor.DType{tensor.F32, tensor.BF16} {
		dtable := randTensor(rng, tensor.F32, 1, V, H)
		dout := randTensor(rng, dt, 1, N, H)
		ids := make([]int32, N)
		for i := range ids {
			ids[i] = int32(rng.IntN(V))
		}
		sum := make([]float64, V*H)
		for i, x := range dtable.F32() {
			sum[i] = float64(x)
		}
		dv := dout.ToF32()
		for i, id := range ids {
			for j := 0; j < H; j++ {
				sum[int(id)*H+j] += float64(dv[i*H+j])
			}
		}
		want := make([]float32, V*H)
		for i, x := range sum {
			want[i] = float32(x)
		}
		got := newEmu(t, "embedding_backward").in("dtable", dtable).in("dout", dout).in("ids", i32s(ids, N)).
			launch("embedding_backward", kernels.Sizes{N: N, H: H}).run()
		closeTo(t, "dtable dout="+dt.String(), got["dtable"], must(tensor.FromF32(want, V, H)), 1e-6)
	}
}
