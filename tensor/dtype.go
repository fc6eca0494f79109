// Package tensor holds the Tensor type (shape, dtype, host storage), the
// float32/bfloat16/float16 conversions, the Backend interface and the CPU
// backend that every other backend is checked against.
package tensor

import "fmt"

// DType is the element type of a Tensor. Only the types compass computes in
// are here; the safetensors package knows every type of the file format.
type DType uint8

const (
	F32  DType = iota + 1 // IEEE 754 binary32
	BF16                  // bfloat16: the top 16 bits of a binary32
	F16                   // IEEE 754 binary16
	I32                   // int32: token ids and labels, never computed on as numbers
)

// Size is the number of bytes of one element.
func (d DType) Size() int {
	switch d {
	case F32, I32:
		return 4
	case BF16, F16:
		return 2
	}
	panic(fmt.Sprintf("tensor: invalid dtype %d", d))
}

// String returns the name the safetensors format uses for the type.
func (d DType) String() string {
	switch d {
	case F32:
		return "F32"
	case BF16:
		return "BF16"
	case F16:
		return "F16"
	case I32:
		return "I32"
	}
	return fmt.Sprintf("DType(%d)", uint8(d))
}

// ParseDType accepts the safetensors names (F32, BF16, F16) and the names of
// config.json's torch_dtype (float32, bfloat16, float16).
func ParseDType(s string) (DType, error) {
	switch s {
	case "F32", "float32":
		return F32, nil
	case "BF16", "bfloat16":
		return BF16, nil
	case "F16", "float16":
		return F16, nil
	case "I32", "int32":
		return I32, nil
	}
	return 0, fmt.Errorf("tensor: unsupported dtype %q (want F32, BF16, F16 or I32)", s)
}

// IsFloat reports whether d is one of the floating-point types that
// arithmetic operations accept.
func (d DType) IsFloat() bool { return d == F32 || d == BF16 || d == F16 }
