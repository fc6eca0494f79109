package bench

import (
	"strings"
	"testing"
	"time"
)

// The k-means suite at smoke size: both sides run the same iterations and
// agree on the inertia; without a Python only compass is measured.
func TestKMeansQuick(t *testing.T) {
	o := Options{Quick: true, MinTime: time.Millisecond, Threads: []int{1}, Python: "/usr/bin/python3", TempDir: t.TempDir(), Log: &strings.Builder{}}
	var out strings.Builder
	rs, err := runKMeans(&out, o)
	if err != nil {
		t.Fatal(err)
	}
	impls := map[string]bool{}
	for _, r := range rs {
		if r.Value <= 0 || r.Unit != "iterations/s" {
			t.Errorf("result %+v", r)
		}
		impls[r.Impl] = true
	}
	if !impls["compass"] || !impls["scikit-learn"] {
		t.Fatalf("results %+v; log:\n%s", rs, o.Log)
	}
	if !strings.Contains(out.String(), "5 / 5") || !strings.Contains(out.String(), "speed-up") {
		t.Errorf("table:\n%s", out.String())
	}

	o.Python = "/nonexistent/python3"
	rs, err = runKMeans(&out, o)
	if err != nil || len(rs) != 1 || rs[0].Impl != "compass" {
		t.Errorf("without python: %+v %v", rs, err)
	}
}
