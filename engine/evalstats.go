package engine

import (
	"math"
	"math/rand/v2"
	"slices"
)

// MeanStderr returns the mean of x and the harness's standard error of a
// mean: the sample standard deviation (n-1) over sqrt(n); 0 for n < 2.
func MeanStderr(x []float64) (mean, stderr float64) {
	n := float64(len(x))
	if len(x) == 0 {
		return 0, 0
	}
	for _, v := range x {
		mean += v
	}
	mean /= n
	if len(x) < 2 {
		return mean, 0
	}
	ss := 0.0
	for _, v := range x {
		ss += (v - mean) * (v - mean)
	}
	return mean, math.Sqrt(ss/(n-1)) / math.Sqrt(n)
}

// PooledStderr is the harness's stderr of a group's size-weighted mean
// (lm_eval.api.metrics.pooled_sample_stderr) from its subtasks' stderrs
// and sizes.
func PooledStderr(stderrs []float64, sizes []int) float64 {
	num, total := 0.0, 0
	for i, se := range stderrs {
		num += float64(sizes[i]-1) * se * se * float64(sizes[i])
		total += sizes[i]
	}
	if total-len(sizes) <= 0 {
		return 0
	}
	return math.Sqrt(num / float64(total-len(sizes)) / float64(total))
}

// PairedComparison compares two systems on the same items.
type PairedComparison struct {
	A, B       string  // the systems; Diff is B's accuracy minus A's
	N          int     // items
	Diff       float64 // mean(b) - mean(a)
	Low, High  float64 // 95% percentile bootstrap interval of Diff
	OnlyA      int     // items A gets right and B wrong
	OnlyB      int     // items B gets right and A wrong
	McNemarP   float64 // exact (binomial) two-sided McNemar p-value
	Bootstraps int
}

// ComparePaired returns the difference of b and a (per-item 0/1 scores of
// the same items), its 95% interval from resamples bootstrap resamples of
// the items (seeded: the same seed, the same interval) and McNemar's exact
// p-value.
func ComparePaired(a, b []float64, resamples int, seed uint64) PairedComparison {
	n := len(a)
	c := PairedComparison{N: n, Bootstraps: resamples}
	if n == 0 || len(b) != n {
		c.McNemarP = 1
		return c
	}
	d := make([]float64, n)
	for i := range a {
		d[i] = b[i] - a[i]
		c.Diff += d[i]
		switch {
		case a[i] > b[i]:
			c.OnlyA++
		case b[i] > a[i]:
			c.OnlyB++
		}
	}
	c.Diff /= float64(n)
	c.McNemarP = McNemarExact(c.OnlyA, c.OnlyB)
	if resamples > 0 {
		rng := rand.New(rand.NewPCG(seed, 0x636f6d70617373))
		means := make([]float64, resamples)
		for r := range means {
			s := 0.0
			for range n {
				s += d[rng.IntN(n)]
			}
			means[r] = s / float64(n)
		}
		slices.Sort(means)
		c.Low, c.High = percentile(means, 0.025), percentile(means, 0.975)
	}
	return c
}

// percentile of sorted x with linear interpolation (numpy's default).
func percentile(x []float64, q float64) float64 {
	pos := q * float64(len(x)-1)
	lo := int(math.Floor(pos))
	hi := min(lo+1, len(x)-1)
	return x[lo] + (pos-float64(lo))*(x[hi]-x[lo])
}

// McNemarExact is the two-sided exact McNemar test of b and c discordant
// pairs: 2 P(X <= min(b, c)) for X ~ Binomial(b+c, 1/2), at most 1.
func McNemarExact(b, c int) float64 {
	n := b + c
	if n == 0 {
		return 1
	}
	k := min(b, c)
	// Sum the binomial probabilities in log space: n can be thousands.
	p := 0.0
	for i := 0; i <= k; i++ {
		lg := lgamma(n+1) - lgamma(i+1) - lgamma(n-i+1) - float64(n)*math.Ln2
		p += math.Exp(lg)
	}
	return min(1, 2*p)
}

func lgamma(n int) float64 {
	v, _ := math.Lgamma(float64(n))
	return v
}
