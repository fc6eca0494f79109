package bench

import (
	"math"
	"reflect"
	"testing"

	"github.com/compassml/compass/cgo"
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

// kmeansRows pairs each compass case with its PyTorch counterpart, ratio =
// PyTorch's time / compass's, and leaves "-" where a side did not run.
func TestKMeansRows(t *testing.T) {
	ours := map[string]cgo.BenchRecord{
		"kmeans_assign_tc_bf16": {Metrics: map[string]float64{"us": 2000, "same_as_fma": 0.99999}},
		"kmeans_update_f32":     {Metrics: map[string]float64{"us": 500}},
	}
	torch := []map[string]any{
		{"bench": "kmeans_assign_bf16", "us": 3000.0, "same_as_f32": 0.998},
		{"bench": "kmeans_assign_f32", "us": 30000.0, "same_as_f32": 1.0},
	}
	got := kmeansRows(ours, torch)
	want := [][]string{
		{"kmeans_assign_tc_bf16", "2000", "0.99999", "kmeans_assign_bf16", "3000", "0.99800", "1.50x"},
		{"kmeans_update_f32", "500", "-", "kmeans_update_f32", "-", "-", "-"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("kmeansRows:\n got %q\nwant %q", got, want)
	}
}
