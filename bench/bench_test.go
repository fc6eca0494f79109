package bench

import (
	"bufio"
	"context"
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
	rs, err := Run(context.Background(), &out, o)
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
	path, err := WriteResults(dir, "test", ThisMachine(), rs, nil)
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
	if _, err := Run(context.Background(), io.Discard, Options{Only: []string{"nope"}}); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Errorf("err = %v", err)
	}
}

// A suite that fails does not stop the run: the suites after it still
// measure, their results come back with the failure, and the results file
// says the run was partial. Here the safetensors suite cannot make its
// scratch directory (TempDir is a file); matmul, after it, needs none.
func TestRunGoesOnPastAFailingSuite(t *testing.T) {
	notDir := t.TempDir() + "/file"
	if err := os.WriteFile(notDir, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	o := Options{Only: []string{"safetensors", "matmul"}, Quick: true, MinTime: time.Millisecond, Threads: []int{1},
		Python: "/nonexistent/python3", TempDir: notDir}
	rs, err := Run(context.Background(), io.Discard, o)
	if err == nil || !strings.Contains(err.Error(), "bench safetensors") || strings.Contains(err.Error(), "bench matmul") {
		t.Errorf("err = %v, want the safetensors suite's failure alone", err)
	}
	suites := map[string]int{}
	for _, r := range rs {
		suites[r.Suite]++
	}
	if suites["matmul"] == 0 || suites["safetensors"] != 0 {
		t.Errorf("results by suite %v, want matmul's only", suites)
	}

	path, werr := WriteResults(t.TempDir(), "partial", ThisMachine(), rs, err)
	if werr != nil {
		t.Fatal(werr)
	}
	data, werr := os.ReadFile(path)
	if werr != nil {
		t.Fatal(werr)
	}
	first, _, _ := strings.Cut(string(data), "\n")
	var head struct {
		Machine Machine `json:"machine"`
		Failed  string  `json:"failed"`
	}
	if werr := json.Unmarshal([]byte(first), &head); werr != nil || !strings.Contains(head.Failed, "bench safetensors") || head.Machine.Cores == 0 {
		t.Errorf("first line %s (%v): want the machine and the failure", first, werr)
	}
}

func TestRunUnknownGPUGroup(t *testing.T) {
	_, err := Run(context.Background(), io.Discard, Options{Only: []string{"gpu"}, GPUGroups: []string{"lora", "attn"}})
	if err == nil || !strings.Contains(err.Error(), `"attn"`) || !strings.Contains(err.Error(), "train-step") {
		t.Errorf("err = %v, want the unknown group named and the groups listed", err)
	}
}

// cancelWriter cancels its context on the first write: a progress line.
type cancelWriter struct{ cancel context.CancelFunc }

func (c cancelWriter) Write(p []byte) (int, error) {
	c.cancel()
	return len(p), nil
}

// Interrupted (the context done, as the command's Ctrl-C makes it) while
// the first suite runs: that suite finishes and its results come back, the
// next is not started, and the error names it.
func TestRunStopsWhenInterrupted(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	o := Options{Only: []string{"safetensors", "matmul"}, Quick: true, MinTime: time.Millisecond, Threads: []int{1},
		Python: "/nonexistent/python3", TempDir: t.TempDir(), Log: cancelWriter{cancel}}
	rs, err := Run(ctx, io.Discard, o)
	if err == nil || !strings.Contains(err.Error(), "interrupted: matmul not run") {
		t.Errorf("err = %v, want matmul named as not run", err)
	}
	suites := map[string]int{}
	for _, r := range rs {
		suites[r.Suite]++
	}
	if suites["safetensors"] == 0 || suites["matmul"] != 0 {
		t.Errorf("results by suite %v, want safetensors' only", suites)
	}
}
