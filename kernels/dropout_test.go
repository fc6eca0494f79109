package kernels_test

import (
	"fmt"
	"strconv"
	"testing"

	"github.com/compassml/compass/kernels"
	"github.com/compassml/compass/tensor"
)

// TestDropout checks the dropout kernel against tensor.CPU.Dropout bit for
// bit (the same mask and the same float32 product, rounded once): every
// dtype pair, p from 0 (a copy) to 0.9, seeds whose top bits are set (the
// 64-bit parameters must arrive whole), with the Table's grid and with a
// grid of 3 blocks, so that each thread strides over many elements and the
// mask cannot depend on which thread takes an element.
func TestDropout(t *testing.T) {
	rng := newRand(t)
	seeds := []uint64{rng.Uint64() | 1<<63, 0, 12345}
	for _, c := range []struct {
		n     int
		in    tensor.DType
		out   tensor.DType
		p     float32
		seeds []uint64
	}{
		{3001, tensor.F32, tensor.F32, 0.1, seeds},
		{3001, tensor.F32, tensor.F32, 0.9, seeds[:1]},
		{2049, tensor.BF16, tensor.BF16, 0.5, seeds[:2]},
		{2049, tensor.F16, tensor.F32, 0.3, seeds[:1]},
		{1000, tensor.F32, tensor.BF16, 0.25, seeds[:1]},
		{777, tensor.BF16, tensor.BF16, 0, seeds[:1]},
		{1, tensor.F32, tensor.F32, 0.5, seeds},
	} {
		x := randTensor(rng, c.in, 4, c.n)
		for _, seed := range c.seeds {
			want := tensor.New(c.out, c.n)
			if err := cpu.Dropout(want, x, c.p, seed); err != nil {
				t.Fatal(err)
			}
			for _, grid := range []int{0, 3} {
				name := fmt.Sprintf("[%d] %v->%v p=%v seed=%d grid=%d", c.n, c.in, c.out, c.p, seed, grid)
				e := newEmu(t, "dropout").in("x", x).set("out_dtype", c.out).set("scale", tensor.DropoutScale(c.p)).
					launch("dropout", kernels.Sizes{N: c.n})
				// uint64 parameters, which set does not take.
				e.params["seed"] = strconv.FormatUint(seed, 10)
				e.params["threshold"] = strconv.FormatUint(tensor.DropoutThreshold(c.p), 10)
				if grid > 0 {
					e.shape("dropout", kernels.Launch{Grid: [3]int{grid, 1, 1}, Block: [3]int{256, 1, 1}})
				}
				got := e.run()["out"]
				sameBits(t, name, got, want)
				if c.p > 0 && c.n > 1 && countZeros(got) == 0 {
					t.Errorf("%s: nothing dropped", name)
				}
			}
		}
	}
}

func countZeros(x *tensor.Tensor) int {
	n := 0
	for _, v := range x.ToF32() {
		if v == 0 {
			n++
		}
	}
	return n
}
