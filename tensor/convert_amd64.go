package tensor

import "golang.org/x/sys/cpu"

// useAsmConvert says whether ConvertBF16ToF32 and ConvertF32ToBF16 run
// their bulk in assembly (convert_amd64.s); tests turn it off to compare.
var useAsmConvert = cpu.X86.HasAVX2

//go:noescape
func convertBF16ToF32AVX2(dst *float32, src *uint16, n int)

//go:noescape
func convertF32ToBF16AVX2(dst *uint16, src *float32, n int)
