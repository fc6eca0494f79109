package engine

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"testing"

	"github.com/compassml/compass/sampling/cluster"
	"github.com/compassml/compass/sampling/embed"
	"github.com/compassml/compass/sampling/selection"
	"github.com/compassml/compass/tensor"
)

// writeTopics writes embeddings with one row per topic in topics (a
// blob around axis topic) and their rows file, ids prefix0, prefix1...
func writeTopics(t *testing.T, path, prefix, lang string, topics []int, rng *rand.Rand) {
	t.Helper()
	const d = 8
	x := tensor.New(tensor.F32, len(topics), d)
	rows := make([]embed.Row, len(topics))
	for i, tp := range topics {
		for j := 0; j < d; j++ {
			x.F32()[i*d+j] = float32(rng.NormFloat64() * 0.3)
		}
		x.F32()[i*d+tp] += 5
		rows[i] = embed.Row{ID: fmt.Sprintf("%s%d", prefix, i), Language: lang}
	}
	if err := embed.Save(path, &embed.Embeddings{Vectors: x, Rows: rows}); err != nil {
		t.Fatal(err)
	}
}

// Cluster stacks its inputs in order, and Select with a Cluster output
// directory clusters with the K chosen there and reports every K tried.
func TestClusterThenSelect(t *testing.T) {
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(5, 6))
	var usage, pool []int
	for i := 0; i < 60; i++ {
		usage = append(usage, i%2) // the target uses topics 0 and 1
	}
	for i := 0; i < 300; i++ {
		pool = append(pool, i%4)
	}
	p := func(name string) string { return filepath.Join(dir, name) }
	writeTopics(t, p("usage.safetensors"), "u", "sw", usage, rng)
	writeTopics(t, p("pool.safetensors"), "p", "yo", pool, rng)
	writeTopics(t, p("empty.safetensors"), "e", "sw", nil, rng)

	out := p("clusters")
	sum, err := Cluster(ClusterOptions{Inputs: []string{p("usage.safetensors"), p("empty.safetensors"), p("pool.safetensors")},
		KRange: []int{2, 3, 4, 5}, KMeans: cluster.KMeansOptions{Seed: 1, NInit: 2, MaxIter: 100}, OutputDir: out})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Rows != 360 || sum.K != 4 || len(sum.KScores) != 4 || sum.Silhouette == nil {
		t.Errorf("summary %+v", sum)
	}
	lines := strings.Split(strings.TrimSpace(readTestFile(t, filepath.Join(out, "assignments.jsonl"))), "\n")
	if len(lines) != 360 || !strings.HasPrefix(lines[0], `{"row":0,"id":"u0",`) || !strings.HasPrefix(lines[60], `{"row":60,"id":"p0",`) {
		t.Errorf("%d assignments; line 1 %q, line 61 %q", len(lines), lines[0], lines[60])
	}
	if got, err := ReadClusterSummary(out); err != nil || got.K != sum.K || !slices.Equal(got.Sizes, sum.Sizes) {
		t.Errorf("read back %+v, %v", got, err)
	}

	o := selection.DefaultOptions(40)
	o.K, o.Seed = 2, 1 // overridden by the cluster directory's K = 4
	gc := debug.SetGCPercent(100)
	sel, err := Select(SelectOptions{Method: "compass", Target: "sw", Usage: p("usage.safetensors"), Pool: p("pool.safetensors"),
		Clusters: out, Options: o, Output: p("manifest.jsonl")})
	// The selection's low GC percent is its own: a training that follows
	// in the same process runs at the default.
	if after := debug.SetGCPercent(gc); after != 100 {
		t.Errorf("GC percent %d after Select, want it restored to 100", after)
	}
	if err != nil {
		t.Fatal(err)
	}
	if sel.Report.K != 4 || len(sel.Report.KScores) != 4 || len(sel.Picks) != 40 {
		t.Errorf("K %d, %d K scores, %d picks", sel.Report.K, len(sel.Report.KScores), len(sel.Picks))
	}
	// The gap is where the target's usage is: topics 0 and 1.
	for _, pk := range sel.Picks {
		if tp := pool[pk.Row]; tp > 1 {
			t.Errorf("picked pool row %d of topic %d", pk.Row, tp)
			break
		}
	}
	if got := readTestFile(t, p("manifest.jsonl")); strings.Count(got, "\n") != 40 {
		t.Errorf("manifest of %d lines", strings.Count(got, "\n"))
	}

	// A rerun with another K stopped after its first file (as a kill
	// would stop it) leaves that file alone, not beside the first run's
	// centroids and summary.
	clusterHook = func(file string) {
		if file == "assignments.jsonl" {
			panic("stopped")
		}
	}
	func() {
		defer func() { recover() }()
		Cluster(ClusterOptions{Inputs: []string{p("usage.safetensors"), p("pool.safetensors")}, K: 3,
			KMeans: cluster.KMeansOptions{Seed: 1, NInit: 1, MaxIter: 20}, OutputDir: out})
	}()
	clusterHook = func(string) {}
	left, _ := os.ReadDir(out)
	if len(left) != 1 || left[0].Name() != "assignments.jsonl" {
		var names []string
		for _, e := range left {
			names = append(names, e.Name())
		}
		t.Errorf("a rerun stopped after its assignments left %v, want them alone", names)
	}

	// Inputs of different dimensions, and no rows at all, are errors.
	x := tensor.New(tensor.F32, 3, 5)
	if err := embed.Save(p("other.npy"), &embed.Embeddings{Vectors: x}); err != nil {
		t.Fatal(err)
	}
	for _, inputs := range [][]string{{p("usage.safetensors"), p("other.npy")}, {p("empty.safetensors")}, nil} {
		if _, err := Cluster(ClusterOptions{Inputs: inputs, K: 2, OutputDir: p("bad")}); err == nil {
			t.Errorf("%v: no error", inputs)
		}
	}
}

// Select takes the clustering of a Cluster directory as it is when that
// clustered the very files it selects from, in whatever order: the K,
// silhouette and inertia it reports are the cluster step's, and every
// pick's cluster is the one the directory assigned its pool row. A
// directory of other files or settings gives only its K.
func TestSelectTakesTheClustering(t *testing.T) {
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(7, 8))
	p := func(name string) string { return filepath.Join(dir, name) }
	var usage, data, pool []int
	for i := 0; i < 60; i++ {
		usage = append(usage, i%3)
	}
	for i := 0; i < 37; i++ { // not a multiple of the pool's 5 topics: a shifted row is another topic
		data = append(data, 2+i%2)
	}
	for i := 0; i < 300; i++ {
		pool = append(pool, i%5)
	}
	writeTopics(t, p("usage.safetensors"), "u", "sw", usage, rng)
	writeTopics(t, p("data.safetensors"), "d", "sw", data, rng)
	writeTopics(t, p("pool.safetensors"), "p", "yo", pool, rng)
	km := cluster.KMeansOptions{Spherical: true, Seed: 3, NInit: 1, MaxIter: 100}
	// adapt's cluster step order: usage, data, pool.
	sum, err := Cluster(ClusterOptions{Inputs: []string{p("usage.safetensors"), p("data.safetensors"), p("pool.safetensors")},
		KRange: []int{4, 5, 6}, KMeans: km, OutputDir: p("clusters")})
	if err != nil {
		t.Fatal(err)
	}
	var assigned []int // cluster of every clustered row
	for _, line := range strings.Split(strings.TrimSpace(readTestFile(t, p("clusters/assignments.jsonl"))), "\n") {
		var a struct{ Cluster int }
		if err := json.Unmarshal([]byte(line), &a); err != nil {
			t.Fatal(err)
		}
		assigned = append(assigned, a.Cluster)
	}
	o := selection.DefaultOptions(50)
	o.Seed = 9 // another seed would cluster otherwise: the directory's clustering must win
	var progress strings.Builder
	o.Progress = &progress
	run := func(clusters string) *selection.Selection {
		t.Helper()
		sel, err := Select(SelectOptions{Method: "compass", Target: "sw", Usage: p("usage.safetensors"), Pool: p("pool.safetensors"),
			Data: []string{p("data.safetensors")}, Clusters: clusters, Options: o, Output: p("manifest.jsonl")})
		if err != nil {
			t.Fatal(err)
		}
		return sel
	}
	sel := run(p("clusters"))
	rep := sel.Report
	if rep.K != sum.K || rep.Inertia != sum.Inertia || sum.Silhouette == nil || rep.Silhouette != *sum.Silhouette {
		t.Errorf("report K %d, inertia %v, silhouette %v; the cluster step's %d, %v, %v", rep.K, rep.Inertia, rep.Silhouette, sum.K, sum.Inertia, *sum.Silhouette)
	}
	for _, pk := range sel.Picks {
		if want := assigned[len(usage)+len(data)+pk.Row]; pk.Cluster != want {
			t.Fatalf("pick %+v: cluster %d, the directory assigned pool row %d to %d", pk, pk.Cluster, pk.Row, want)
		}
	}
	if !strings.Contains(progress.String(), "in the "+fmt.Sprint(sum.K)+" clusters given") {
		t.Errorf("progress %q: no word of the clustering given", progress.String())
	}

	// Another file set: only K comes from the directory.
	if _, err := Cluster(ClusterOptions{Inputs: []string{p("usage.safetensors"), p("pool.safetensors")}, K: sum.K, KMeans: km, OutputDir: p("other")}); err != nil {
		t.Fatal(err)
	}
	progress.Reset()
	if sel := run(p("other")); sel.Report.K != sum.K || !strings.Contains(progress.String(), "clustering again with its K = "+fmt.Sprint(sum.K)) {
		t.Errorf("K %d; progress %q", sel.Report.K, progress.String())
	}

	// The same files with a row less than the directory clustered: an error.
	if err := os.WriteFile(p("clusters/assignments.jsonl"), []byte(strings.Join(strings.SplitN(readTestFile(t, p("clusters/assignments.jsonl")), "\n", 2)[1:], "")), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = Select(SelectOptions{Method: "compass", Target: "sw", Usage: p("usage.safetensors"), Pool: p("pool.safetensors"),
		Data: []string{p("data.safetensors")}, Clusters: p("clusters"), Options: o, Output: p("manifest.jsonl")})
	if err == nil || !strings.Contains(err.Error(), "assignments.jsonl") {
		t.Errorf("assignments without their first row: err = %v", err)
	}
}

// ReadPoolMeta reads string and numeric ids and names the bad line; a
// blank line, which would shift every row after it, is an error.
func TestReadPoolMeta(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "meta.jsonl")
	os.WriteFile(path, []byte("{\"id\": \"a\", \"language\": \"sw\"}\n{\"id\": 7, \"language\": \"yo\"}\n"), 0o644)
	items, err := ReadPoolMeta(path)
	if err != nil || !slices.Equal(items, []selection.Item{{ID: "a", Language: "sw"}, {ID: "7", Language: "yo"}}) {
		t.Errorf("items %v, %v", items, err)
	}
	for content, want := range map[string]string{
		"{\"id\": \"a\", \"language\": \"sw\"}\n\n{\"id\": \"b\", \"language\": \"sw\"}\n": "meta.jsonl line 2: blank line",
		"{\"id\": \"a\"}\n":             "meta.jsonl line 1: want",
		"{\"id\": \"a\", \"language\":": "meta.jsonl line 1: unexpected end",
	} {
		os.WriteFile(path, []byte(content), 0o644)
		if _, err := ReadPoolMeta(path); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want %q", content, err, want)
		}
	}
}

func readTestFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// Select reads the target usage, the pool and the target data into the one
// matrix that COMPASS clusters (selection.Input.Stacked), so that the
// pool's vectors are not loaded and then copied: 400k x 768 took 3.1 GB
// at its peak before, 1.8 GB after. (selection checks that the three are
// the matrix's rows, in order.)
func TestSelectStacksTheInputs(t *testing.T) {
	dir := t.TempDir()
	p := func(name string) string { return filepath.Join(dir, name) }
	rng := rand.New(rand.NewPCG(3, 4))
	writeTopics(t, p("usage.npy"), "u", "sw", []int{0, 1, 0, 1}, rng)
	writeTopics(t, p("pool.npy"), "p", "yo", []int{0, 1, 2, 3, 0, 1, 2, 3}, rng)
	writeTopics(t, p("data1.npy"), "d", "sw", []int{2}, rng)
	writeTopics(t, p("data2.npy"), "e", "sw", []int{3, 3}, rng)
	var seen selection.Input
	selectInputHook = func(in selection.Input) { seen = in }
	defer func() { selectInputHook = func(selection.Input) {} }()
	o := selection.DefaultOptions(2)
	o.K = 2
	if _, err := Select(SelectOptions{Method: "compass", Target: "sw", Usage: p("usage.npy"), Pool: p("pool.npy"),
		Data: []string{p("data1.npy"), p("data2.npy")}, Options: o, Output: p("manifest.jsonl")}); err != nil {
		t.Fatal(err)
	}
	if seen.Stacked == nil || seen.Stacked.Dim(0) != 4+8+3 || seen.Have.Dim(0) != 3 {
		t.Errorf("selection was given the stacked rows %v and target data %v; want 15 and 3 rows", seen.Stacked, seen.Have)
	}
}
