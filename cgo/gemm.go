package cgo

import (
	"fmt"
	"math"

	"github.com/compassml/compass/tensor"
)

// matmulDims validates MatMul's operands as the CPU backend does (a may
// have leading dimensions, flattened into M when not transposed) and
// returns M, K and N.
func matmulDims(c, a, b *tensor.Tensor, transA, transB bool) (M, K, N int, err error) {
	for _, t := range []*tensor.Tensor{c, a, b} {
		if !t.DType().IsFloat() {
			return 0, 0, 0, fmt.Errorf("cuda: matmul: %v is not a floating-point tensor", t)
		}
	}
	if a.Rank() < 2 || b.Rank() != 2 {
		return 0, 0, 0, fmt.Errorf("cuda: matmul: a %v must have rank >= 2 and b %v rank 2", a, b)
	}
	if transA && a.Rank() != 2 {
		return 0, 0, 0, fmt.Errorf("cuda: matmul: a transposed must have rank 2, got %v", a)
	}
	K = a.Dim(-1)
	M = 1
	for i := 0; i < a.Rank()-1; i++ {
		M *= a.Dim(i)
	}
	if transA {
		M, K = a.Dim(1), a.Dim(0)
	}
	bRows, bCols := b.Dim(0), b.Dim(1)
	if transB {
		bRows, bCols = bCols, bRows
	}
	N = bCols
	if K != bRows {
		return 0, 0, 0, fmt.Errorf("cuda: matmul: inner dimensions differ: op(a) is [%d %d], op(b) is [%d %d]", M, K, bRows, bCols)
	}
	if c.NumElements() != M*N || c.Rank() == 0 || c.Dim(-1) != N {
		return 0, 0, 0, fmt.Errorf("cuda: matmul: c %v is not [%d %d]", c, M, N)
	}
	for _, d := range []int{M, K, N} {
		if d > math.MaxInt32 {
			return 0, 0, 0, fmt.Errorf("cuda: matmul: dimension %d is beyond cuBLAS's 32-bit sizes", d)
		}
	}
	return M, K, N, nil
}

// gemmPlan is a row-major product c[M,N] = op(a)[M,K] op(b)[K,N] as the
// column-major call cuBLAS makes. A row-major matrix read column-major is
// its transpose, so cuBLAS computes c^T = op(b)^T op(a)^T: its first
// operand is our b and its second our a, and each keeps its own transpose
// flag. A leading dimension is the row length of the stored matrix.
type gemmPlan struct {
	m, n, k        int // cuBLAS's: N, M, K
	transA, transB int // cublasOperation_t of cuBLAS's operands: 0 N, 1 T
	lda, ldb, ldc  int
}

func planGemm(M, K, N int, aCols, bCols int, transA, transB bool) gemmPlan {
	op := func(t bool) int {
		if t {
			return 1
		}
		return 0
	}
	return gemmPlan{m: N, n: M, k: K, transA: op(transB), transB: op(transA), lda: bCols, ldb: aCols, ldc: N}
}

// gemmSupported reports whether cublasGemmEx with float32 accumulation
// multiplies two in operands into an out: inputs of one dtype, and the
// output that dtype or F32 (F32 inputs give F32 only).
func gemmSupported(in, out tensor.DType) bool {
	return out == in || (out == tensor.F32 && (in == tensor.BF16 || in == tensor.F16))
}

// gemmInputDType is the dtype both operands are multiplied in. cuBLAS
// multiplies operands of one dtype, so with two it rounds the F32 one to
// the other's 16-bit dtype, as a bf16 training framework would (the tensor
// cores run at full rate; weights stay in their dtype); precise widens
// instead, for float32 results at float32 speed. BF16 with F16 is widened.
func gemmInputDType(a, b tensor.DType, precise bool) tensor.DType {
	switch {
	case a == b:
		return a
	case precise:
		return tensor.F32
	case a == tensor.F32:
		return b
	case b == tensor.F32:
		return a
	}
	return tensor.F32
}
