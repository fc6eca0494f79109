package bench

import (
	"math"
	"testing"
)

// A ratio is a number or "-", never +Inf or NaN (a side that did not run,
// or one that measured no time).
func TestRatio(t *testing.T) {
	for _, c := range []struct {
		a, b float64
		want string
	}{
		{3, 2, "1.50x"}, {1, 0, "-"}, {0, 0, "-"}, {math.Inf(1), 2, "-"}, {1, math.Inf(1), "0.00x"},
		{math.NaN(), 1, "-"}, {1e300, 1e-300, "-"},
	} {
		if got := ratio(c.a, c.b); got != c.want {
			t.Errorf("ratio(%g, %g) = %q, want %q", c.a, c.b, got, c.want)
		}
	}
}
