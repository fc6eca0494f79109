package main

import (
	"bytes"
	"context"
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/compassml/compass/sampling/embed"
	"github.com/compassml/compass/tensor"
	"github.com/urfave/cli/v3"
)

// runSampling runs the cluster and select commands (registered here too,
// so that these tests do not depend on the command list in main.go).
func runSampling(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	app := &cli.Command{Name: "compass", Commands: []*cli.Command{clusterCommand(), selectCommand()},
		Writer: &out, ErrWriter: &out}
	err := app.Run(context.Background(), append([]string{"compass"}, args...))
	return out.String(), err
}

// writeBlobs writes n rows of dimension d around k well-separated centres.
func writeBlobs(t *testing.T, path string, n, d, k int) {
	t.Helper()
	rng := rand.New(rand.NewPCG(1, 2))
	x := tensor.New(tensor.F32, n, d)
	v := x.F32()
	for i := 0; i < n; i++ {
		c := i % k
		for j := 0; j < d; j++ {
			v[i*d+j] = float32(rng.NormFloat64())
		}
		v[i*d+c%d] += 10
	}
	if err := embed.WriteNPY(path, x); err != nil {
		t.Fatal(err)
	}
}

func TestClusterCommand(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "x.npy")
	writeBlobs(t, in, 300, 5, 3)
	out := filepath.Join(dir, "out")
	text, err := runSampling(t, "cluster", "--input", in, "--k", "3", "--n-init", "2", "--output-dir", out, "--device", "cpu", "--quiet")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(text, "300 rows of dimension 5 in 3 clusters") || !strings.Contains(text, "silhouette") {
		t.Errorf("printed %q", text)
	}
	var sum struct {
		K          int
		Inertia    float64
		Silhouette float64
		Sizes      []int
	}
	js, _ := os.ReadFile(filepath.Join(out, "clusters.json"))
	if err := json.Unmarshal(js, &sum); err != nil || sum.K != 3 || sum.Silhouette < 0.5 || len(sum.Sizes) != 3 {
		t.Errorf("clusters.json %s (%v)", js, err)
	}
	lines := strings.Split(strings.TrimSpace(readFile(t, filepath.Join(out, "assignments.jsonl"))), "\n")
	if len(lines) != 300 || !strings.HasPrefix(lines[0], `{"row":0,`) {
		t.Errorf("%d assignment lines, first %q", len(lines), lines[0])
	}
	c, err := embed.ReadNPY(filepath.Join(out, "centroids.npy"))
	if err != nil || c.Dim(0) != 3 || c.Dim(1) != 5 {
		t.Errorf("centroids %v %v", c, err)
	}

	// Two inputs (here the same file twice): their rows clustered together.
	out2 := filepath.Join(dir, "out2")
	text, err = runSampling(t, "cluster", "--input", in, "--input", in, "--k", "3", "--output-dir", out2, "--device", "cpu", "--quiet")
	if err != nil || !strings.Contains(text, "600 rows of dimension 5 in 3 clusters") {
		t.Errorf("two inputs: %v, printed %q", err, text)
	}

	// K by silhouette over a range.
	if _, err := runSampling(t, "cluster", "--input", in, "--k-range", "2:6:1", "--spherical", "--output-dir", out, "--device", "cpu", "--quiet"); err != nil {
		t.Fatal(err)
	}
	js, _ = os.ReadFile(filepath.Join(out, "clusters.json"))
	if err := json.Unmarshal(js, &sum); err != nil || sum.K != 3 {
		t.Errorf("chose K = %d: %s", sum.K, js)
	}

	for _, c := range []struct{ flag, value, want string }{
		{"--max-iter", "0", "--max-iter 0: want 1 or more"},
		{"--n-init", "0", "--n-init 0: want 1 or more"},
		{"--k", "-2", "--k -2: want 0 or more"},
		{"--mini-batch", "-5", "--mini-batch -5: want 0 or more"},
		{"--silhouette-sample", "0", "--silhouette-sample 0: want a number of rows, or -1"},
		{"--tol", "-1e-4", "--tol -0.0001: want 0 or more"},
	} {
		args := []string{"cluster", "--input", in, "--k", "2", "--output-dir", out, c.flag, c.value, "--device", "cpu", "--quiet"}
		if _, err := runSampling(t, args...); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s %s: %v, want %q", c.flag, c.value, err, c.want)
		}
	}
	// The K range's errors name the flag once, as the others do, not the
	// package twice ("cluster: --k-range: cluster: K range ...").
	for _, c := range []struct{ value, want string }{
		{"5:2", "compass: cluster: --k-range 5:2: need 2 <= LO <= HI and STEP >= 1"},
		{"a:b", `compass: cluster: --k-range a:b: "a" is not a number`},
		{"7", "compass: cluster: --k-range 7: want LO:HI or LO:HI:STEP"},
	} {
		args := []string{"cluster", "--input", in, "--k-range", c.value, "--output-dir", out, "--device", "cpu", "--quiet"}
		if _, err := runSampling(t, args...); err == nil || "compass: "+err.Error() != c.want {
			t.Errorf("--k-range %s: %v, want %q", c.value, err, c.want)
		}
	}
	for _, args := range [][]string{
		{"cluster", "--input", in, "--k", "301", "--output-dir", out},
		{"cluster", "--input", filepath.Join(dir, "missing.npy"), "--k", "2", "--output-dir", out},
		{"cluster", "--input", in, "--k", "2"},
	} {
		if _, err := runSampling(t, append(args, "--device", "cpu", "--quiet")...); err == nil {
			t.Errorf("%v: no error", args)
		}
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
