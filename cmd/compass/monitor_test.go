package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/compassml/compass/sampling/cluster"
	"github.com/compassml/compass/sampling/embed"
	"github.com/urfave/cli/v3"
)

// The monitor end to end on a tiny random model: build the reference from
// usage embeddings and centroids, then read a watched directory.
func TestMonitorCommand(t *testing.T) {
	dir := t.TempDir()
	modelDir := writeEmbedModel(t, dir)
	usage := filepath.Join(dir, "usage.safetensors")
	if msg, err := runEmbed(t, "--model", modelDir, "--input", "../../testdata/datasets/aya.parquet", "--output", usage, "--no-cache"); err != nil {
		t.Fatalf("%v\n%s", err, msg)
	}
	emb, err := embed.Load(usage, embed.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	km, err := cluster.KMeans(emb.Vectors, cluster.DefaultKMeansOptions(2))
	if err != nil {
		t.Fatal(err)
	}
	centroids := filepath.Join(dir, "centroids.npy")
	if err := embed.WriteNPY(centroids, km.Centroids); err != nil {
		t.Fatal(err)
	}
	watch := filepath.Join(dir, "incoming")
	if err := os.Mkdir(watch, 0o755); err != nil {
		t.Fatal(err)
	}
	var lines strings.Builder
	for i := range 9 {
		fmt.Fprintf(&lines, "{\"text\": \"production text number %d\"}\n", i)
	}
	if err := os.WriteFile(filepath.Join(watch, "a.jsonl"), []byte(lines.String()), 0o644); err != nil {
		t.Fatal(err)
	}

	var out, errOut bytes.Buffer
	app := &cli.Command{Name: "compass", Commands: []*cli.Command{monitorCommand()}}
	app.Writer, app.ErrWriter = &out, &errOut
	registry := filepath.Join(dir, "registry")
	err = app.Run(context.Background(), []string{"compass", "monitor", "--device", "cpu", "--registry", registry, "--adapter", "sw",
		"--model", modelDir, "--reference", usage, "--centroids", centroids, "--watch", watch, "--once", "--window", "4"})
	if err != nil {
		t.Fatalf("%v\n%s", err, errOut.String())
	}
	t.Logf("stdout:\n%sstderr:\n%s", out.String(), errOut.String())
	got := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(got) != 2 || !strings.HasPrefix(got[0], "window 0: 4 texts, JS ") || !strings.HasPrefix(got[1], "window 1: 4 texts") {
		t.Errorf("want two window lines, got %q", got)
	}
	if !strings.Contains(errOut.String(), "reference of 2 clusters saved") || !strings.Contains(errOut.String(), "2 windows, 0 drift records, 1 texts left over") {
		t.Errorf("stderr %q", errOut.String())
	}
	if _, err := os.Stat(filepath.Join(registry, "sw", "drift-reference.json")); err != nil {
		t.Error(err)
	}

	app = &cli.Command{Name: "compass", Commands: []*cli.Command{monitorCommand()}}
	app.Writer, app.ErrWriter = &out, &errOut
	err = app.Run(context.Background(), []string{"compass", "monitor", "--registry", registry, "--adapter", "sw", "--model", modelDir, "--reference", usage})
	if err == nil || !strings.Contains(err.Error(), "--reference and --centroids go together") {
		t.Errorf("--reference without --centroids: %v", err)
	}

	// Values the library would read as its defaults, and an --update
	// config that would fail at the first drift, fail before any window.
	badUpdate := filepath.Join(t.TempDir(), "adapt.yaml")
	if err := os.WriteFile(badUpdate, []byte("model: "+modelDir+"\npool: {file: missing-pool.jsonl}\ntargets: [{language: sw, usage: {file: u.jsonl}}]\nbudget: 3\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--window", "0"}, "--window 0: want 2 or more"},
		{[]string{"--k", "0"}, "--k 0: want 1 or more"},
		{[]string{"--max-len", "0"}, "--max-len 0: want 1 or more"},
		{[]string{"--threshold", "0"}, "--threshold 0: want a divergence in (0, 1]"},
		{[]string{"--alpha", "0"}, "--alpha 0: want a test level in (0, 1)"},
		{[]string{"--update", badUpdate}, "missing-pool.jsonl does not exist"},
	} {
		app = &cli.Command{Name: "compass", Commands: []*cli.Command{monitorCommand()}}
		app.Writer, app.ErrWriter = &out, &errOut
		args := append([]string{"compass", "monitor", "--registry", registry, "--adapter", "sw", "--model", modelDir}, c.args...)
		if err := app.Run(context.Background(), args); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want %q", c.args, err, c.want)
		}
	}
}
