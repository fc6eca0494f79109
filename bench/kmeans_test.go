package bench

import (
	"strings"
	"testing"
	"time"
)

// The k-means suite at smoke size: all three run the same iterations and
// agree on the inertia; the whole run's phases are measured; without a
// Python only compass is.
func TestKMeansQuick(t *testing.T) {
	o := Options{Quick: true, MinTime: time.Millisecond, Threads: []int{1}, Python: "/usr/bin/python3", TempDir: t.TempDir(), Log: &strings.Builder{}}
	var out strings.Builder
	rs, err := runKMeans(&out, o)
	if err != nil {
		t.Fatal(err)
	}
	impls := map[string]bool{}
	for _, r := range rs {
		whole := strings.HasSuffix(r.Case, "whole run")
		if r.Value <= 0 || (!whole && r.Unit != "iterations/s") || (whole && r.Unit != "runs/s") {
			t.Errorf("result %+v", r)
		}
		impls[r.Impl] = true
		if whole && r.Impl == "compass" && !strings.Contains(r.Note, "seeding") {
			t.Errorf("whole run without its phases: %+v", r)
		}
	}
	if !impls["compass"] || !impls["scikit-learn"] || !impls["faiss"] {
		t.Fatalf("results %+v; log:\n%s", rs, o.Log)
	}
	if !strings.Contains(out.String(), "vs faiss") || !strings.Contains(out.String(), "silhouette") {
		t.Errorf("table:\n%s", out.String())
	}

	o.Python = "/nonexistent/python3"
	rs, err = runKMeans(&out, o)
	if err != nil || len(rs) != 2 || rs[0].Impl != "compass" || rs[1].Impl != "compass" {
		t.Errorf("without python: %+v %v", rs, err)
	}
}
