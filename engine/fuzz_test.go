package engine

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/compassml/compass/internal/fuzzguard"
	"github.com/compassml/compass/model/tokenizer"
	"github.com/compassml/compass/sampling/drift"
	"github.com/compassml/compass/tensor"
)

// fuzzFile writes data to a file named name in a new temporary directory.
func fuzzFile(t *testing.T, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// FuzzReadConfigs reads the same bytes as the config of compass adapt,
// compass train and compass continual, as JSON or YAML: each must refuse
// them with an error or give a config, never panic or blow up (YAML
// aliases included).
func FuzzReadConfigs(f *testing.F) {
	for _, s := range []string{
		`{"model": "m", "pool": {"file": "pool.jsonl"}, "targets": [{"language": "sw", "usage": {"file": "u.jsonl"}}], "budget": 6, "k_range": "2:3", "methods": ["compass", "random"], "seeds": [1, 2], "train": {"seq_len": 32, "rank": 2}, "eval": {"tasks": ["global-mmlu"], "shots": 0}}`,
		`{"seq_len": 48, "micro_batch": 4, "global_batch": 4, "max_steps": 6, "lr": 0.01, "rank": 4, "alpha": 8, "schedule": "constant", "warmup_ratio": 0}`,
		`{"model": "m", "work_dir": "work", "periods": [{"name": "p1", "data": ["a.jsonl"], "eval": "e.jsonl"}, {"name": "p2", "data": ["b.jsonl"], "eval": "f.jsonl"}], "seed": 3, "strategies": ["naive"], "train": {"max_steps": 6}}`,
	} {
		f.Add([]byte(s), false)
	}
	f.Add([]byte("model: m\nbudget: 6\nk_range: \"2:9:1\"\ntrain:\n  lr: 1e-3\n  rank: 8\n"), true)
	f.Add([]byte("a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]\ng: [*f, *f, *f, *f, *f, *f, *f, *f, *f]\n"), true)
	f.Fuzz(func(t *testing.T, data []byte, yaml bool) {
		name := "c.json"
		if yaml {
			name = "c.yaml"
		}
		path := fuzzFile(t, name, data)
		defer fuzzguard.Start(t, 256<<20)()
		if c, err := ReadAdaptConfig(path); err == nil {
			if ks, err := c.kRange(); err == nil {
				for _, k := range ks {
					c.selectOptions(k, 1)
				}
			}
		}
		if o, err := ReadTrainConfig(path, DefaultTrainOptions()); err == nil {
			o.Validate()
		}
		ReadContinualConfig(path)
	})
}

// FuzzReadPoolMeta: pool metadata is refused or has an ID and a language
// on every line.
func FuzzReadPoolMeta(f *testing.F) {
	f.Add([]byte("{\"id\": \"a\", \"language\": \"sw\"}\n{\"id\": 7, \"language\": \"en\"}\n"))
	f.Add([]byte("{\"id\": \"a\", \"language\": \"sw\"}\n\n"))
	f.Add([]byte("{\"id\": null, \"language\": \"sw\"}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		path := fuzzFile(t, "meta.jsonl", data)
		defer fuzzguard.Start(t, 256<<20)()
		items, err := ReadPoolMeta(path)
		if err != nil {
			return
		}
		for i, it := range items {
			if it.ID == "" || it.Language == "" {
				t.Fatalf("item %d: %+v", i, it)
			}
		}
	})
}

// FuzzLoadDriftReference: a reference is refused, or can be compared with
// a window of its dimension.
func FuzzLoadDriftReference(f *testing.F) {
	f.Add([]byte(`{"dim": 2, "centroids": [0, 1, 1, 0], "counts": [3, 5], "spherical": false, "quantile": 0.95, "radius": 0.5, "embedder": "e"}`))
	f.Add([]byte(`{"dim": 3, "centroids": [0, 1, 1], "counts": [3], "spherical": true, "quantile": 0.9, "radius": 0.1}`))
	f.Add([]byte(`{"dim": 1, "centroids": [1], "counts": [0], "radius": -1}`))
	// Written from reading drift.Reference.Check, which multiplied
	// clusters by dim: 4 x 2^62 overflowed to the length of no centroids.
	f.Add([]byte(`{"dim": 4611686018427387904, "centroids": [], "counts": [1, 1, 1, 1], "quantile": 0.9, "radius": 0.5}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		path := fuzzFile(t, "drift-reference.json", data)
		defer fuzzguard.Start(t, 256<<20)()
		ref, err := LoadDriftReference(path)
		if err != nil {
			return
		}
		if ref.Dim > len(ref.Centroids) || len(ref.Centroids) != len(ref.Counts)*ref.Dim {
			t.Fatalf("accepted: dim %d, %d centroid values, %d clusters", ref.Dim, len(ref.Centroids), len(ref.Counts))
		}
		x, err := tensor.FromF32(append([]float32(nil), ref.Centroids[:ref.Dim]...), 1, ref.Dim)
		if err != nil {
			t.Fatal(err)
		}
		x.F32()[0] += 0.25 // not a zero row for the spherical case
		if _, err := ref.Compare(x, drift.DefaultOptions()); err != nil && !strings.Contains(err.Error(), "zeros") {
			t.Fatalf("compare with a row of the reference's dimension: %v", err)
		}
	})
}

// FuzzReadPrompts reads a prompts file for compass generate with the
// demo tokenizer and its chat template.
func FuzzReadPrompts(f *testing.F) {
	f.Add([]byte("{\"text\": \"Hello\"}\n\n{\"ids\": [1, 2, 3]}\n{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}]}\n"))
	f.Add([]byte("{\"text\": \"a\", \"ids\": [1]}\n"))
	f.Add([]byte("{\"ids\": []}\n"))
	f.Add([]byte("{\"messages\": []}\n"))
	tok, err := tokenizer.Load(filepath.Join("..", "testdata", "demo", "model"))
	if err != nil {
		f.Fatal(err)
	}
	chat, err := tok.Chat("llama-3.1")
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		defer fuzzguard.Start(t, 256<<20)()
		for _, p := range []Prompter{{Tok: tok}, {Tok: tok, Chat: chat}} {
			prompts, lines, err := ReadPrompts(bytes.NewReader(data), p)
			if err != nil {
				continue
			}
			if len(prompts) != len(lines) {
				t.Fatalf("%d prompts, %d lines", len(prompts), len(lines))
			}
			for i, ids := range prompts {
				if len(ids) == 0 {
					t.Fatalf("prompt %d has no tokens", i)
				}
			}
		}
	})
}

// FuzzRegistryManifest reads an adapter's manifest of any content: List
// and Show refuse it or work, and a version added to a manifest List
// accepts is there when it is read again.
func FuzzRegistryManifest(f *testing.F) {
	f.Add([]byte(`{"adapter": "a", "current": "v2", "versions": [` +
		`{"version": "v1", "created": "2025-01-02T03:04:05Z", "compass_version": "x", "trigger": {"kind": "initial"}, "files": {"adapter_model.safetensors": "00"}},` +
		`{"version": "v2", "parent": "v1", "created": "2025-01-02T03:04:05Z", "compass_version": "x", "trigger": {"kind": "drift", "js": 0.2, "p": 0.01, "window": 3}, "eval": {"acc": 0.5}, "files": {"adapter_model.safetensors": "00", "adapter_config.json": "11"}}]}`))
	f.Add([]byte(`{"adapter": "a", "current": "", "versions": []}`))
	f.Add([]byte(`{"adapter": "a", "current": "v9223372036854775807", "versions": [{"version": "v9223372036854775807", "created": "2025-01-02T03:04:05Z", "trigger": {"kind": "manual"}, "files": {"f": "00"}}]}`))
	f.Add([]byte(`{"adapter": "a", "current": "v1", "versions": [{"version": "v1", "files": {"../x": "00"}}]}`))
	adapter := filepath.Join(f.TempDir(), "adapter")
	writeRegistryAdapter(f, adapter, 1, 8, 2)
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		if err := os.MkdirAll(filepath.Join(dir, "a", "versions"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "a", RegistryManifestName), data, 0o644); err != nil {
			t.Fatal(err)
		}
		defer fuzzguard.Start(t, 256<<20)()
		r, err := OpenRegistry(dir)
		if err != nil {
			t.Fatal(err)
		}
		m, err := r.List("a")
		if err != nil {
			return
		}
		var buf bytes.Buffer
		if err := WriteRegistryList(&buf, m); err != nil {
			t.Fatal(err)
		}
		for _, v := range m.Versions {
			got, err := r.Show("a", v.Version)
			if err != nil {
				t.Fatalf("show %s: %v", v.Version, err)
			}
			WriteRegistryVersion(&buf, got, v.Version == m.Current, r.adapterDir("a"))
		}
		added, err := r.Add("a", adapter, VersionMeta{CompassVersion: "fuzz"}, true)
		if err != nil {
			t.Fatalf("add to an accepted manifest: %v", err)
		}
		m2, err := r.List("a")
		if err != nil {
			t.Fatalf("read after an add: %v", err)
		}
		if m2.Current != added.Version || len(m2.Versions) != len(m.Versions)+1 {
			t.Fatalf("after adding %s: current %s, %d versions (were %d)", added.Version, m2.Current, len(m2.Versions), len(m.Versions))
		}
	})
}
