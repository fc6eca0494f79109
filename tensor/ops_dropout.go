package tensor

import "fmt"

// Dropout's mask is stateless: element i of a tensor is kept when
// DropoutHash(seed, i) >= DropoutThreshold(p). DropoutHash is output i of
// the SplitMix64 generator seeded with seed (Steele, Lea and Flood, "Fast
// splittable pseudorandom number generators", OOPSLA 2014; the generator
// java.util.SplittableRandom and xoshiro's seeding use): a Weyl sequence
// seed + (i+1)*golden through a 64-bit finalizer that is a bijection with
// full avalanche. It passes BigCrush, which is far more than a dropout mask
// needs (independent, unbiased bits per element), and it is two 64-bit
// multiplies per element, so the CUDA kernel (kernels/dropout.cu) computes
// the same mask from the index alone, with no generator state to carry or
// advance: any backend, any launch shape, and a recomputed layer get the
// same mask. Philox-4x32-10 (cuRAND's, PyTorch's) would be stronger across
// many parallel streams, but masks of different seeds here only collide
// when two seeds differ by a small multiple of golden, which seeds that are
// themselves hashes make a 2^-64-per-element event.

// dropoutGolden is SplitMix64's increment, 2^64 divided by the golden ratio.
const dropoutGolden = 0x9e3779b97f4a7c15

// DropoutHash is output i (counting from 0) of SplitMix64 seeded with seed.
func DropoutHash(seed, i uint64) uint64 {
	z := seed + (i+1)*dropoutGolden
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// DropoutThreshold is the hash value below which an element is dropped:
// p * 2^64 rounded down, so that a uniform 64-bit hash is kept with
// probability 1-p to within 2^-64. p must be in [0, 1).
func DropoutThreshold(p float32) uint64 {
	return uint64(float64(p) * (1 << 64))
}

// DropoutScale is the factor kept elements are multiplied by, 1/(1-p)
// rounded to float32 (computed in float64), as every backend uses it.
func DropoutScale(p float32) float32 {
	return float32(1 / (1 - float64(p)))
}

// DropoutCheck validates Dropout's operands' shapes and p; the CUDA backend
// uses it too, so that both refuse the same calls.
func DropoutCheck(out, x *Tensor, p float32) error {
	if !(p >= 0 && p < 1) { // NaN fails too
		return fmt.Errorf("dropout: p is %v, want a probability in [0, 1)", p)
	}
	if !out.SameShape(x) {
		return fmt.Errorf("dropout: out %v != x %v", out, x)
	}
	return nil
}

// Dropout implements Backend. Dropped elements are x*0 (so a NaN or an
// infinity still shows, as in PyTorch). When the threshold is 0 (p = 0)
// every element is kept and it is a copy, bit for bit, NaN payloads
// included.
func (*CPU) Dropout(out, x *Tensor, p float32, seed uint64) error {
	if err := floatCheck("dropout", out, x); err != nil {
		return err
	}
	if err := DropoutCheck(out, x, p); err != nil {
		return fmt.Errorf("tensor: %w", err)
	}
	threshold, scale := DropoutThreshold(p), DropoutScale(p)
	parallelFor(x.NumElements(), 1<<15, func(lo, hi int) {
		var xs [chunk]float32
		for i := lo; i < hi; i += chunk {
			v := xs[:min(chunk, hi-i)]
			readF32(v, x, i)
			if threshold != 0 {
				for j := range v {
					m := float32(0)
					if DropoutHash(seed, uint64(i+j)) >= threshold {
						m = scale
					}
					v[j] *= m
				}
			}
			writeF32(out, i, v)
		}
	})
	return nil
}
