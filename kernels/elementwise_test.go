package kernels_test

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/compassml/compass/kernels"
	"github.com/compassml/compass/tensor"
)

var floatTypes = []tensor.DType{tensor.F32, tensor.BF16, tensor.F16}

// castInputs returns n values of dtype that cover what a conversion can
// meet: for F32, random magnitudes from 2^-30 to 2^20, every special value
// (NaN with and without payloads, infinities, signed zeros), bf16 and f16
// rounding ties, the f16 overflow and subnormal edges; for 16-bit types,
// random bit patterns (NaNs and subnormals among them).
func castInputs(rng *rand.Rand, dtype tensor.DType, n int) *tensor.Tensor {
	if dtype != tensor.F32 {
		x := tensor.New(dtype, n)
		for i := range x.U16() {
			x.U16()[i] = uint16(rng.Uint32())
		}
		return x
	}
	specials := []uint32{
		0x7fc00000, 0xffc00000, 0x7f800001, 0x7fa12345, 0xff812345, 0x7f800000, 0xff800000, 0, 0x80000000,
		0x3f808000, 0x3f818000, 0x3f807fff, // bf16 ties to even (down, up) and just below a tie
		0x477fe000, 0x477ff000, 0x477fefff, // 65504, 65520 (rounds to Inf), just below
		0x33000000, 0x33000001, 0x387fc000, 0x38800000, 0x33c00000, // f16 subnormal edges
		0x00000001, 0x807fffff, // f32 subnormals
	}
	v := make([]float32, n)
	for i := range v {
		if i < len(specials) {
			v[i] = math.Float32frombits(specials[i])
			continue
		}
		v[i] = float32((2*rng.Float64() - 1) * math.Exp2(float64(rng.IntN(50)-30)))
	}
	return must(tensor.FromF32(v, n))
}

// TestCast checks elementwise_cast against tensor.CPU.Copy for every pair
// of float dtypes, bit for bit, NaN payloads included, with the Table's
// grid and with a grid of 2 blocks (each thread then strides over many
// elements).
func TestCast(t *testing.T) {
	rng := newRand(t)
	const n = 3001
	for _, from := range floatTypes {
		for _, to := range floatTypes {
			x := castInputs(rng, from, n)
			want := tensor.New(to, n)
			if err := cpu.Copy(want, x); err != nil {
				t.Fatal(err)
			}
			for _, grid := range []int{0, 2} {
				e := newEmu(t, "cast").in("x", x).set("out_dtype", to).launch("elementwise_cast", kernels.Sizes{N: n})
				if grid > 0 {
					e.shape("elementwise_cast", kernels.Launch{Grid: [3]int{grid, 1, 1}, Block: [3]int{256, 1, 1}})
				}
				sameBits(t, from.String()+"->"+to.String(), e.run()["out"], want)
			}
		}
	}
}

// TestAddMulScale checks elementwise_add, _mul and _scale against the CPU
// ops, bit for bit: b the shape of a or of its trailing dimensions, mixed
// dtypes.
func TestAddMulScale(t *testing.T) {
	rng := newRand(t)
	shape := []int{3, 5, 7}
	for _, c := range []struct {
		a, b, out tensor.DType
		bShape    []int
	}{
		{tensor.F32, tensor.F32, tensor.F32, []int{3, 5, 7}},
		{tensor.F32, tensor.BF16, tensor.F32, []int{5, 7}},
		{tensor.BF16, tensor.BF16, tensor.BF16, []int{7}},
		{tensor.F16, tensor.F32, tensor.F16, []int{5, 7}},
		{tensor.BF16, tensor.F16, tensor.F32, []int{7}},
	} {
		a := randTensor(rng, c.a, 3, shape...)
		b := randTensor(rng, c.b, 3, c.bShape...)
		name := c.a.String() + "," + c.b.String() + "->" + c.out.String()
		for _, op := range []struct {
			cmd, kernel string
			cpuOp       func(out, a, b *tensor.Tensor) error
		}{
			{"add", "elementwise_add", cpu.Add},
			{"mul", "elementwise_mul", cpu.Mul},
		} {
			want := like(a, c.out)
			if err := op.cpuOp(want, a, b); err != nil {
				t.Fatal(err)
			}
			got := newEmu(t, op.cmd).in("a", a).in("b", b).set("out_dtype", c.out).
				launch(op.kernel, kernels.Sizes{N: a.NumElements()}).run()["out"]
			sameBits(t, op.cmd+" "+name, got, want)
		}
		s := float32(rng.Float64()*4 - 2)
		want := like(a, c.out)
		if err := cpu.Scale(want, a, s); err != nil {
			t.Fatal(err)
		}
		got := newEmu(t, "scale").in("a", a).set("s", s).set("out_dtype", c.out).
			launch("elementwise_scale", kernels.Sizes{N: a.NumElements()}).run()["out"]
		sameBits(t, "scale "+c.a.String()+"->"+c.out.String(), got, want)
	}
}
