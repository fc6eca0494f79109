//go:build !amd64

package tensor

// useAsmConvert: off amd64 the conversions are Go only.
var useAsmConvert = false

func convertBF16ToF32AVX2(dst *float32, src *uint16, n int) {
	panic("tensor: no assembly conversion on this architecture")
}

func convertF32ToBF16AVX2(dst *uint16, src *float32, n int) {
	panic("tensor: no assembly conversion on this architecture")
}
