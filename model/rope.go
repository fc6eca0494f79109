package model

import (
	"fmt"
	"math"

	"github.com/compassml/compass/tensor"
)

// InvFreq returns the RoPE inverse frequencies, one per rotated pair
// (RotaryDims/2 of them), for a sequence whose largest position is maxPos.
// They are computed in float32 as transformers does (modeling_rope_utils):
//
//	default:  inv_i = 1 / theta^(2i/R)
//	llama3:   wavelengths longer than original/low_freq_factor are divided by
//	          factor, shorter than original/high_freq_factor kept, and the
//	          band between interpolated linearly in original/wavelength
//	longrope: inv_i = 1 / (ext_i * theta^(2i/R)), ext = long_factor when
//	          maxPos+1 exceeds the original context, else short_factor
func InvFreq(c *Config, maxPos int) []float32 {
	r := c.RotaryDims()
	inv := make([]float32, r/2)
	base := float32(c.RopeTheta)
	for i := range inv {
		exponent := float32(2*i) / float32(r)
		inv[i] = 1 / float32(math.Pow(float64(base), float64(exponent)))
	}
	rs := c.RopeScaling
	switch rs.Type {
	case RopeLlama3:
		factor := float32(rs.Factor)
		low, high := float32(rs.LowFreqFactor), float32(rs.HighFreqFactor)
		original := float32(rs.OriginalMaxPositionEmbeddings)
		lowFreqWavelen, highFreqWavelen := original/low, original/high
		for i, f := range inv {
			wavelen := 2 * math.Pi / f
			switch {
			case wavelen > lowFreqWavelen:
				inv[i] = f / factor
			case wavelen >= highFreqWavelen: // the medium band
				smooth := (original/wavelen - low) / (high - low)
				inv[i] = (1-smooth)*f/factor + smooth*f
			}
		}
	case RopeLongRope:
		ext := rs.ShortFactor
		if maxPos+1 > longRopeOriginal(c) {
			ext = rs.LongFactor
		}
		for i := range inv {
			exponent := float32(2*i) / float32(r)
			inv[i] = 1 / (float32(ext[i]) * float32(math.Pow(float64(base), float64(exponent))))
		}
	}
	return inv
}

// longRopeOriginal is the context length beyond which longrope switches to
// its long factors.
func longRopeOriginal(c *Config) int {
	if c.OriginalMaxPositionEmbeddings > 0 {
		return c.OriginalMaxPositionEmbeddings
	}
	return c.MaxPositionEmbeddings
}

// RopeTables returns cos and sin, F32 [len(positions), RotaryDims/2], for
// tokens at the given positions, times the attention factor (longrope). The
// angle is rounded to float32 before cos/sin, as transformers computes it.
// The short or long longrope factors are chosen from the largest position.
func RopeTables(c *Config, positions []int) (cos, sin *tensor.Tensor, err error) {
	maxPos := 0
	for _, p := range positions {
		maxPos = max(maxPos, p)
	}
	return ropeTablesAt(c, positions, maxPos)
}

// ropeTablesAt is RopeTables with longrope's factors chosen from maxPos
// instead: generation computes the tables of a few positions at a time but
// must choose as for the whole sequence.
func ropeTablesAt(c *Config, positions []int, maxPos int) (cos, sin *tensor.Tensor, err error) {
	for _, p := range positions {
		if p < 0 {
			return nil, nil, fmt.Errorf("model: rope: negative position %d", p)
		}
	}
	inv := InvFreq(c, maxPos)
	scale := float32(c.RopeAttentionFactor())
	half := len(inv)
	cos = tensor.New(tensor.F32, len(positions), half)
	sin = tensor.New(tensor.F32, len(positions), half)
	cv, sv := cos.F32(), sin.F32()
	for n, p := range positions {
		for i, f := range inv {
			angle := float64(float32(p) * f)
			cv[n*half+i] = float32(math.Cos(angle)) * scale
			sv[n*half+i] = float32(math.Sin(angle)) * scale
		}
	}
	return cos, sin, nil
}
