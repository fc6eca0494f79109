package tensor

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// splitMix64 is the generator as its authors publish it (a state advanced
// by golden, then mixed), written independently of DropoutHash: output i
// of the sequence must be DropoutHash(seed, i).
type splitMix64 struct{ state uint64 }

func (g *splitMix64) next() uint64 {
	g.state += 0x9e3779b97f4a7c15
	z := g.state
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

func TestDropoutHashIsSplitMix64(t *testing.T) {
	// The first output for seed 0, as published with the reference C code
	// (and java.util.SplittableRandom's tests): 0xe220a8397b1dcdaf.
	if got := DropoutHash(0, 0); got != 0xe220a8397b1dcdaf {
		t.Fatalf("DropoutHash(0, 0) = %#x, want 0xe220a8397b1dcdaf", got)
	}
	for _, seed := range []uint64{0, 1, 0x0123456789abcdef, math.MaxUint64} {
		g := splitMix64{seed}
		for i := uint64(0); i < 1000; i++ {
			if want, got := g.next(), DropoutHash(seed, i); got != want {
				t.Fatalf("seed %#x: DropoutHash(%d) = %#x, SplitMix64 gives %#x", seed, i, got, want)
			}
		}
	}
}

// dropoutMask runs Dropout on ones: the mask times 1/(1-p).
func dropoutMask(t *testing.T, n int, p float32, seed uint64) []bool {
	t.Helper()
	ones := New(F32, n)
	for i := range ones.F32() {
		ones.F32()[i] = 1
	}
	out := New(F32, n)
	if err := NewCPU().Dropout(out, ones, p, seed); err != nil {
		t.Fatal(err)
	}
	keep := make([]bool, n)
	scale := DropoutScale(p)
	for i, v := range out.F32() {
		switch v {
		case scale:
			keep[i] = true
		case 0:
		default:
			t.Fatalf("element %d of dropout(ones) is %v, want 0 or %v", i, v, scale)
		}
	}
	return keep
}

// within fails unless count is within 6 standard deviations of a binomial
// count of n trials of probability q: a correct mask fails with chance
// about 2e-9, a biased or correlated one (a hash of few bits, a threshold
// off by a factor, neighbours that agree) fails for sure at n = 2^20.
func within(t *testing.T, what string, count, n int, q float64) {
	t.Helper()
	mean, sd := float64(n)*q, math.Sqrt(float64(n)*q*(1-q))
	dev := (float64(count) - mean) / sd
	if math.Abs(dev) > 6 {
		t.Errorf("%s: %d of %d, expected %.0f ± %.0f (%.1f sd)", what, count, n, mean, sd, dev)
		return
	}
	t.Logf("%s: %d of %d, expected %.0f (%.2f sd)", what, count, n, mean, dev)
}

// TestDropoutStatistics checks the mask's statistics on 2^20 elements: the
// kept share is 1-p, neighbours are independent (pairs kept together
// (1-p)^2), so are elements a row of 1024 apart and the masks of two
// seeds that differ in one bit; and each column of a [1024, 1024] view
// keeps its share (no column, that is no low bits of the index, is
// favoured).
func TestDropoutStatistics(t *testing.T) {
	const n, cols = 1 << 20, 1024
	for _, c := range []struct {
		p    float32
		seed uint64
	}{{0.1, 1}, {0.5, 0xdeadbeef}, {0.9, 1 << 63}} {
		name := fmt.Sprintf("p=%v seed=%#x", c.p, c.seed)
		q := 1 - float64(c.p)
		keep := dropoutMask(t, n, c.p, c.seed)
		other := dropoutMask(t, n, c.p, c.seed^1)
		kept, pairs, rowPairs, both := 0, 0, 0, 0
		colKept := make([]int, cols)
		for i, k := range keep {
			if !k {
				continue
			}
			kept++
			colKept[i%cols]++
			if i+1 < n && keep[i+1] {
				pairs++
			}
			if i+cols < n && keep[i+cols] {
				rowPairs++
			}
			if other[i] {
				both++
			}
		}
		within(t, name+" kept", kept, n, q)
		within(t, name+" neighbours kept", pairs, n-1, q*q)
		within(t, name+" elements a row apart kept", rowPairs, n-cols, q*q)
		within(t, name+" kept by both seeds", both, n, q*q)
		// Columns: a chi-squared over 1024 columns of 1024 elements each;
		// its mean is 1023 and sd 45. Too small is a failure too: counts
		// more even than chance are a pattern (an unmixed Weyl sequence).
		chi2, rows := 0.0, float64(n/cols)
		for _, k := range colKept {
			d := float64(k) - rows*q
			chi2 += d * d / (rows * q * (1 - q))
		}
		if math.Abs(chi2-1023) > 6*math.Sqrt(2*1023) {
			t.Errorf("%s: columns' kept counts: chi-squared %.0f over 1023 degrees of freedom", name, chi2)
		} else {
			t.Logf("%s: columns' kept counts: chi-squared %.0f over 1023 degrees of freedom", name, chi2)
		}
	}
}

// TestDropoutDeterministic checks that a seed gives one mask (also when a
// tensor is split across goroutines differently: sizes below and above
// the parallel grain), that other seeds give other masks, that the values
// are x/(1-p) or 0, that p = 0 is a copy bit for bit and that out may be x,
// for F32, BF16 and F16.
func TestDropoutDeterministic(t *testing.T) {
	cpu := NewCPU()
	rng := rand.New(rand.NewPCG(5, 6))
	for _, dt := range []DType{F32, BF16, F16} {
		for _, n := range []int{1, 4099, 1 << 17} {
			name := fmt.Sprint(dt, n)
			x := opRandom(rng, dt, n)
			a, b, c := New(dt, n), New(dt, n), New(dt, n)
			for _, call := range []struct {
				out  *Tensor
				seed uint64
			}{{a, 42}, {b, 42}, {c, 43}} {
				if err := cpu.Dropout(call.out, x, 0.25, call.seed); err != nil {
					t.Fatal(err)
				}
			}
			if string(a.Bytes()) != string(b.Bytes()) {
				t.Errorf("%s: one seed, two masks", name)
			}
			if n > 1 && string(a.Bytes()) == string(c.Bytes()) {
				t.Errorf("%s: seeds 42 and 43 give the same mask", name)
			}
			// The kept values are x * scale rounded once to the dtype.
			xs, got := x.ToF32(), a.ToF32()
			scale := DropoutScale(0.25)
			for i := range xs {
				keep := DropoutHash(42, uint64(i)) >= DropoutThreshold(0.25)
				want := float32(0)
				if keep {
					v := []float32{xs[i] * scale}
					roundTo(dt, v)
					want = v[0]
				}
				if got[i] != want {
					t.Fatalf("%s: element %d = %v, want %v (kept %v)", name, i, got[i], want, keep)
				}
			}
			// In place gives the same.
			inPlace := New(dt, n)
			copy(inPlace.Bytes(), x.Bytes())
			if err := cpu.Dropout(inPlace, inPlace, 0.25, 42); err != nil {
				t.Fatal(err)
			}
			if string(inPlace.Bytes()) != string(a.Bytes()) {
				t.Errorf("%s: in place differs", name)
			}
			// p = 0 copies.
			if err := cpu.Dropout(b, x, 0, 42); err != nil {
				t.Fatal(err)
			}
			if string(b.Bytes()) != string(x.Bytes()) {
				t.Errorf("%s: p = 0 is not a copy", name)
			}
		}
	}
	// p = 0 keeps NaN payloads, and a dropped NaN stays NaN (x * 0).
	nan := math.Float32frombits(0x7fc12345)
	x, _ := FromF32([]float32{nan, nan, nan, nan, nan, nan, nan, nan}, 8)
	out := New(F32, 8)
	if err := cpu.Dropout(out, x, 0, 1); err != nil {
		t.Fatal(err)
	}
	if string(out.Bytes()) != string(x.Bytes()) {
		t.Errorf("p = 0 changed a NaN's payload")
	}
	if err := cpu.Dropout(out, x, 0.5, 1); err != nil {
		t.Fatal(err)
	}
	for i, v := range out.F32() {
		if !math.IsNaN(float64(v)) {
			t.Errorf("dropout(NaN)[%d] = %v, want NaN", i, v)
		}
	}
}

func TestDropoutErrors(t *testing.T) {
	cpu := NewCPU()
	x, out := New(F32, 4, 5), New(F32, 4, 5)
	for _, p := range []float32{-0.1, 1, 1.5, float32(math.NaN())} {
		opWantErr(t, fmt.Sprint("p=", p), cpu.Dropout(out, x, p, 1), "want a probability in [0, 1)")
	}
	opWantErr(t, "shape", cpu.Dropout(New(F32, 5, 4), x, 0.1, 1), "out F32[5 4] != x F32[4 5]")
	opWantErr(t, "ids", cpu.Dropout(New(I32, 4, 5), x, 0.1, 1), "not a floating-point tensor")
}
