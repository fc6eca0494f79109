package safetensors

import (
	"fmt"
	"math/bits"

	"github.com/compassml/compass/tensor"
)

// DType is the element type of a tensor in a safetensors file. It covers
// every type of the format, including the ones compass does not compute in.
//
// The constants are declared in the order of the reference implementation's
// Dtype enum, which is increasing alignment; Write relies on that order to
// lay out the data section as the reference writer does.
type DType uint8

const (
	Bool       DType = iota + 1 // BOOL: one byte, 0 or 1
	F4                          // F4: OCP MX FP4 (E2M1), two elements per byte
	F6E2M3                      // F6_E2M3: OCP MX FP6, 6 bits
	F6E3M2                      // F6_E3M2: OCP MX FP6, 6 bits
	U8                          // U8
	I8                          // I8
	F8E5M2                      // F8_E5M2: FP8 (OCP)
	F8E4M3                      // F8_E4M3: FP8 (OCP, "fn")
	F8E8M0                      // F8_E8M0: OCP MX scale, exponent only
	F8E4M3FNUZ                  // F8_E4M3FNUZ: FP8 (AMD/Graphcore variant)
	F8E5M2FNUZ                  // F8_E5M2FNUZ: FP8 (AMD/Graphcore variant)
	I16                         // I16
	U16                         // U16
	F16                         // F16: IEEE 754 binary16
	BF16                        // BF16: bfloat16
	I32                         // I32
	U32                         // U32
	F32                         // F32: IEEE 754 binary32
	C64                         // C64: complex, two float32 parts
	F64                         // F64: IEEE 754 binary64
	I64                         // I64
	U64                         // U64

	numDTypes = iota + 1 // one past the last valid DType
)

// dtypeNames are the names the format uses, indexed by DType.
var dtypeNames = [numDTypes]string{
	Bool: "BOOL", F4: "F4", F6E2M3: "F6_E2M3", F6E3M2: "F6_E3M2",
	U8: "U8", I8: "I8", F8E5M2: "F8_E5M2", F8E4M3: "F8_E4M3", F8E8M0: "F8_E8M0",
	F8E4M3FNUZ: "F8_E4M3FNUZ", F8E5M2FNUZ: "F8_E5M2FNUZ",
	I16: "I16", U16: "U16", F16: "F16", BF16: "BF16",
	I32: "I32", U32: "U32", F32: "F32", C64: "C64",
	F64: "F64", I64: "I64", U64: "U64",
}

// dtypeBits are the element sizes in bits, indexed by DType.
var dtypeBits = [numDTypes]int{
	Bool: 8, F4: 4, F6E2M3: 6, F6E3M2: 6,
	U8: 8, I8: 8, F8E5M2: 8, F8E4M3: 8, F8E8M0: 8, F8E4M3FNUZ: 8, F8E5M2FNUZ: 8,
	I16: 16, U16: 16, F16: 16, BF16: 16,
	I32: 32, U32: 32, F32: 32, C64: 64,
	F64: 64, I64: 64, U64: 64,
}

// ParseDType returns the DType with the given format name, such as "BF16"
// or "F8_E4M3". Names are case-sensitive, as in the format.
func ParseDType(name string) (DType, error) {
	for d := Bool; d < numDTypes; d++ {
		if dtypeNames[d] == name {
			return d, nil
		}
	}
	return 0, fmt.Errorf("safetensors: unknown dtype %q", name)
}

// Valid reports whether d is one of the declared types.
func (d DType) Valid() bool { return d >= Bool && d < numDTypes }

// String returns the format's name of the type.
func (d DType) String() string {
	if !d.Valid() {
		return fmt.Sprintf("DType(%d)", uint8(d))
	}
	return dtypeNames[d]
}

// Bits is the size of one element in bits: 4 for F4, 6 for the F6 types,
// a multiple of 8 for the others. It is 0 for an invalid DType.
func (d DType) Bits() int {
	if !d.Valid() {
		return 0
	}
	return dtypeBits[d]
}

// ByteLen returns the number of bytes a tensor of this type and shape
// occupies. As in the reference implementation, the element count times
// Bits must be a whole number of bytes (an F4 tensor of 3 elements is
// invalid), and a running product that overflows 64 bits is an error even
// when a later dimension is zero.
func (d DType) ByteLen(shape []int) (int64, error) {
	if !d.Valid() {
		return 0, fmt.Errorf("invalid dtype %s", d)
	}
	n := uint64(1)
	for _, dim := range shape {
		if dim < 0 {
			return 0, fmt.Errorf("negative dimension in shape %v", shape)
		}
		hi, lo := bits.Mul64(n, uint64(dim))
		if hi != 0 {
			return 0, fmt.Errorf("shape %v overflows the element count", shape)
		}
		n = lo
	}
	hi, nbits := bits.Mul64(n, uint64(dtypeBits[d]))
	if hi != 0 {
		return 0, fmt.Errorf("shape %v of %s overflows the byte count", shape, d)
	}
	if nbits%8 != 0 {
		return 0, fmt.Errorf("shape %v of %s is %d bits, not a whole number of bytes", shape, d, nbits)
	}
	return int64(nbits / 8), nil // < 2^61: fits
}

// TensorDType returns the tensor package's type for F32, BF16 and F16, the
// types compass computes in, and I32 (token ids); ok is false for every
// other type.
func (d DType) TensorDType() (dt tensor.DType, ok bool) {
	switch d {
	case F32:
		return tensor.F32, true
	case BF16:
		return tensor.BF16, true
	case F16:
		return tensor.F16, true
	case I32:
		return tensor.I32, true
	}
	return 0, false
}

// FromTensorDType returns the DType of a tensor package type; ok is false
// for a type this package does not know.
func FromTensorDType(dt tensor.DType) (d DType, ok bool) {
	switch dt {
	case tensor.F32:
		return F32, true
	case tensor.BF16:
		return BF16, true
	case tensor.F16:
		return F16, true
	case tensor.I32:
		return I32, true
	}
	return 0, false
}
