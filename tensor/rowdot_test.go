package tensor

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// TestRowKernels compares every implementation of the two loops with
// float64 over row lengths that end in every tail of the assembly (and
// ones it leaves to the portable loops), strides wider than a row, and row
// counts around its unrolling, the dots over float32 rows and over bf16
// ones; checks that nothing past dst or o is written, and that a row's dot
// has the same bits alone as in a group.
func TestRowKernels(t *testing.T) {
	rng := rand.New(rand.NewPCG(51, 52))
	for _, k := range rowKernels() {
		prev := rowImpl
		rowImpl = k
		for _, d := range []int{1, 7, 8, 16, 24, 40, 64, 96, 128, 136} {
			for _, n := range []int{1, 2, 3, 4, 5, 9, 33} {
				stride := d + rng.IntN(3)*8
				name := fmt.Sprintf("%s d=%d n=%d stride=%d", k.name, d, n, stride)
				rows := make([]float32, (n-1)*stride+d)
				for i := range rows {
					rows[i] = float32(rng.NormFloat64())
				}
				q, p := make([]float32, d), make([]float32, n)
				for i := range q {
					q[i] = float32(rng.NormFloat64())
				}
				for i := range p {
					p[i] = rng.Float32()
				}
				dst := make([]float32, n+1)
				dst[n] = 42
				rowDots(dst[:n], q, rows, stride, 0.25)
				for s := range n {
					want := 0.0
					for i := range d {
						want += float64(q[i]) * float64(rows[s*stride+i])
					}
					want *= 0.25
					if math.Abs(float64(dst[s])-want) > 1e-5*(1+math.Sqrt(float64(d))) {
						t.Fatalf("%s: dots[%d] = %v, want %v", name, s, dst[s], want)
					}
				}
				if dst[n] != 42 {
					t.Fatalf("%s: dots wrote past dst", name)
				}
				for s := range n { // alone, the same bits as in a group of rows
					var one [1]float32
					rowDots(one[:], q, rows[s*stride:], stride, 0.25)
					if one[0] != dst[s] {
						t.Fatalf("%s: row %d alone gives %v, in the group %v", name, s, one[0], dst[s])
					}
				}
				// The same over rows of bf16.
				rowsB := make([]uint16, len(rows))
				ConvertF32ToBF16(rowsB, rows)
				rowDotsBF16(dst[:n], q, rowsB, stride, 0.25)
				for s := range n {
					want := 0.0
					for i := range d {
						want += float64(q[i]) * float64(BF16ToF32(rowsB[s*stride+i]))
					}
					want *= 0.25
					if math.Abs(float64(dst[s])-want) > 1e-5*(1+math.Sqrt(float64(d))) {
						t.Fatalf("%s: bf16 dots[%d] = %v, want %v", name, s, dst[s], want)
					}
				}
				if dst[n] != 42 {
					t.Fatalf("%s: bf16 dots wrote past dst", name)
				}
				for s := range n {
					var one [1]float32
					rowDotsBF16(one[:], q, rowsB[s*stride:], stride, 0.25)
					if one[0] != dst[s] {
						t.Fatalf("%s: bf16 row %d alone gives %v, in the group %v", name, s, one[0], dst[s])
					}
				}
				o := make([]float32, d+1)
				o[d] = 42
				for i := range d {
					o[i] = 1
				}
				rowAxpy(o[:d], p, rows, stride)
				for i := range d {
					want := 1.0
					for s := range n {
						want += float64(p[s]) * float64(rows[s*stride+i])
					}
					if math.Abs(float64(o[i])-want) > 1e-5*(1+math.Sqrt(float64(n))) {
						t.Fatalf("%s: o[%d] = %v, want %v", name, i, o[i], want)
					}
				}
				if o[d] != 42 {
					t.Fatalf("%s: axpy wrote past o", name)
				}
			}
		}
		rowImpl = prev
	}
}
