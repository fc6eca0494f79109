package main

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/compassml/compass/sampling/embed"
	"github.com/compassml/compass/tensor"
)

// writePlanted writes a small planted selection problem: 6 topics; the
// target (Yoruba) uses all of them, its data covers topics 0-3, and the
// pool holds topics 4-5 only in English and French. It returns the
// directory and the topic of every pool row.
func writePlanted(t *testing.T) (string, []int) {
	t.Helper()
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(3, 4))
	const d = 12
	write := func(name string, topics []int) {
		x := tensor.New(tensor.F32, len(topics), d)
		v := x.F32()
		for i, tp := range topics {
			for j := 0; j < d; j++ {
				v[i*d+j] = float32(rng.NormFloat64() * 0.5)
			}
			v[i*d+tp] += 5
		}
		if err := embed.WriteNPY(filepath.Join(dir, name), x); err != nil {
			t.Fatal(err)
		}
	}
	var usage, have, pool []int
	for i := 0; i < 120; i++ {
		usage = append(usage, i%6)
	}
	for i := 0; i < 200; i++ {
		have = append(have, i%4)
	}
	var meta strings.Builder
	for i := 0; i < 900; i++ {
		tp := rng.IntN(6)
		lang := []string{"ig", "ha", "wo"}[rng.IntN(3)]
		if tp >= 4 {
			lang = []string{"en", "fr"}[rng.IntN(2)]
		}
		pool = append(pool, tp)
		fmt.Fprintf(&meta, `{"id": %d, "language": %q}`+"\n", i, lang)
	}
	write("usage.npy", usage)
	write("have.npy", have)
	write("pool.npy", pool)
	if err := os.WriteFile(filepath.Join(dir, "pool.jsonl"), []byte(meta.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir, pool
}

type manifestLine struct {
	ID       string  `json:"id"`
	Language string  `json:"language"`
	Cluster  int     `json:"cluster"`
	Score    float64 `json:"score"`
	Reason   string  `json:"reason"`
	Row      int     `json:"row"`
}

func readManifest(t *testing.T, path string) []manifestLine {
	t.Helper()
	var out []manifestLine
	for _, line := range strings.Split(strings.TrimSpace(readFile(t, path)), "\n") {
		var m manifestLine
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}

func TestSelectCommand(t *testing.T) {
	dir, topics := writePlanted(t)
	p := func(name string) string { return filepath.Join(dir, name) }
	base := []string{"select", "--target", "yo", "--budget", "60", "--pool", p("pool.npy"), "--pool-meta", p("pool.jsonl"),
		"--seed", "7", "--device", "cpu", "--quiet"}
	text, err := runSampling(t, append(base, "--method", "compass", "--target-usage", p("usage.npy"), "--target-data", p("have.npy"),
		"--k", "6", "--n-init", "3", "--output", p("compass.jsonl"), "--report-dir", p("report"))...)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(text, "compass for yo: selected 60 of a budget of 60") {
		t.Errorf("printed %q", text)
	}
	picks := readManifest(t, p("compass.jsonl"))
	gap := 0
	for _, m := range picks {
		if topics[m.Row] >= 4 {
			gap++
		}
		if m.ID != fmt.Sprint(m.Row) || m.Reason == "" {
			t.Errorf("manifest line %+v", m)
		}
	}
	// Every pick: the pool's topics 4-5 hold about 300 rows, five times
	// the budget.
	if len(picks) != 60 || gap != 60 {
		t.Errorf("%d picks, %d from the under-served topics, want all 60", len(picks), gap)
	}
	for _, f := range []string{"report.md", "report.json", "clusters.png"} {
		if _, err := os.Stat(filepath.Join(dir, "report", f)); err != nil {
			t.Error(err)
		}
	}

	// The baselines under the same budget.
	for _, method := range []string{"random", "langsim", "all"} {
		out := p(method + ".jsonl")
		if _, err := runSampling(t, append(base, "--method", method, "--output", out, "--report-dir", p("report-"+method))...); err != nil {
			t.Fatalf("%s: %v", method, err)
		}
		n := len(readManifest(t, out))
		if want := map[string]int{"random": 60, "langsim": 60, "all": 900}[method]; n != want {
			t.Errorf("%s: %d picks, want %d", method, n, want)
		}
	}
	ls := readManifest(t, p("langsim.jsonl"))
	for _, m := range ls {
		if m.Language == "en" || m.Language == "fr" {
			t.Fatalf("langsim picked %+v before the Niger-Congo languages ran out", m)
		}
	}

	// Errors say what is wrong.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--method", "compass", "--output", p("x.jsonl")}, "needs --target-usage"},
		{[]string{"--method", "magic", "--output", p("x.jsonl")}, "unknown --method"},
		{[]string{"--method", "langsim", "--target", "qq", "--output", p("x.jsonl")}, "unknown language"},
		{[]string{"--method", "compass", "--target-usage", p("usage.npy"), "--k", "5000", "--output", p("x.jsonl")}, "more than the"},
		{[]string{"--method", "compass", "--target-usage", p("pool.jsonl"), "--output", p("x.jsonl")}, "unknown embeddings format"},
		{[]string{"--method", "compass", "--target-usage", p("usage.npy"), "--n-init", "0", "--output", p("x.jsonl")}, "select: --n-init 0: want 1 or more"},
		{[]string{"--method", "compass", "--target-usage", p("usage.npy"), "--max-iter", "0", "--output", p("x.jsonl")}, "select: --max-iter 0: want 1 or more"},
		{[]string{"--method", "compass", "--target-usage", p("usage.npy"), "--k-range", "9:3", "--output", p("x.jsonl")}, "select: --k-range 9:3: need 2 <= LO <= HI"},
		{[]string{"--method", "compass", "--target-usage", p("usage.npy"), "--gap", "ratio", "--epsilon", "NaN", "--output", p("x.jsonl")}, "NaN epsilon"},
	} {
		_, err := runSampling(t, append(base, tc.args...)...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want %q", tc.args, err, tc.want)
		}
	}
	if _, err := os.Stat(p("x.jsonl")); !os.IsNotExist(err) {
		t.Error("a failed selection left a manifest behind")
	}
	// Usage and pool embedded by two different checkpoints: their vectors
	// are not comparable (the same checkpoint in two directories is).
	for name, embedder := range map[string]string{
		"usage-a.safetensors": "model:/data/a#1111111111111111;pool=mean;maxlen=512",
		"pool-b.safetensors":  "model:/data/b#2222222222222222;pool=mean;maxlen=512",
		"pool-a.safetensors":  "model:/moved/a#1111111111111111;pool=mean;maxlen=512",
	} {
		src := map[bool]string{true: "usage.npy", false: "pool.npy"}[strings.HasPrefix(name, "usage")]
		e, err := embed.Load(p(src), embed.LoadOptions{})
		if err != nil {
			t.Fatal(err)
		}
		e.Embedder = embedder
		if err := embed.Save(p(name), e); err != nil {
			t.Fatal(err)
		}
	}
	mixed := []string{"select", "--target", "yo", "--budget", "5", "--method", "compass", "--target-usage", p("usage-a.safetensors"),
		"--pool-meta", p("pool.jsonl"), "--k", "6", "--output", p("z.jsonl"), "--device", "cpu", "--quiet"}
	_, err = runSampling(t, append(mixed, "--pool", p("pool-b.safetensors"))...)
	if err == nil || !strings.Contains(err.Error(), "not comparable") {
		t.Errorf("usage and pool of two embedders: %v", err)
	}
	if _, err = runSampling(t, append(mixed, "--pool", p("pool-a.safetensors"))...); err != nil {
		t.Errorf("usage and pool of one checkpoint in two directories: %v", err)
	}

	// A pool-meta file that does not match the pool.
	if err := os.WriteFile(p("short.jsonl"), []byte(`{"id": "a", "language": "en"}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = runSampling(t, "select", "--target", "yo", "--budget", "5", "--method", "compass", "--target-usage", p("usage.npy"),
		"--pool", p("pool.npy"), "--pool-meta", p("short.jsonl"), "--k", "6", "--output", p("y.jsonl"), "--device", "cpu", "--quiet")
	if err == nil || !strings.Contains(err.Error(), "1 pool items for 900") {
		t.Errorf("short pool meta: %v", err)
	}
}
