//go:build !amd64

package tensor

// useAVX2 is false off amd64: the portable micro-kernel runs.
const useAVX2 = false
