package bench

import (
	"bufio"
	"encoding/json"
	"io"
	"os"
	"strings"
	"testing"
	"time"
)

// The harness itself: suites run at smoke size, produce positive values in
// known units, and survive a missing PyTorch (its column is then empty).
func TestRunQuick(t *testing.T) {
	o := Options{Quick: true, MinTime: time.Millisecond, Threads: []int{1}, Python: "/nonexistent/python3", TempDir: t.TempDir()}
	var out strings.Builder
	rs, err := Run(&out, o)
	if err != nil {
		t.Fatal(err)
	}
	impls := map[string]bool{}
	for _, r := range rs {
		if r.Value <= 0 || r.Unit == "" {
			t.Errorf("result %+v", r)
		}
		impls[r.Suite+"/"+r.Impl] = true
	}
	for _, want := range []string{"safetensors/compass", "matmul/compass", "matmul/gonum", "encode/compass"} {
		if !impls[want] {
			t.Errorf("no %s result in %v", want, impls)
		}
	}
	if impls["matmul/pytorch"] {
		t.Error("pytorch results without a python")
	}
	if !strings.Contains(out.String(), "ratio") {
		t.Errorf("no table printed:\n%s", out.String())
	}

	dir := t.TempDir()
	path, err := WriteResults(dir, "test", ThisMachine(), rs)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	lines := 0
	for sc.Scan() {
		var v map[string]any
		if err := json.Unmarshal(sc.Bytes(), &v); err != nil {
			t.Fatalf("line %d: %v", lines+1, err)
		}
		lines++
	}
	if lines != len(rs)+1 {
		t.Errorf("%d lines for %d results and the machine", lines, len(rs))
	}
}

func TestRunUnknownSuite(t *testing.T) {
	if _, err := Run(io.Discard, Options{Only: []string{"nope"}}); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Errorf("err = %v", err)
	}
}
