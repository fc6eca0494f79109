package lora

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/compassml/compass/internal/fuzzguard"
)

// FuzzReadConfig reads an adapter_config.json of any content. A config
// ReadConfig accepts must write and read back unchanged.
func FuzzReadConfig(f *testing.F) {
	for _, s := range []string{
		peftConfig,
		`{"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": "all-linear"}`,
		`{"peft_type": "LORA", "r": 2, "target_modules": ".*\\.(q|v)_proj", "exclude_modules": ["lm_head"], "use_rslora": true}`,
		`{"peft_type": "LORA", "target_modules": ["q_proj"], "rank_pattern": {"q_proj": 4}, "alpha_pattern": {"^model.layers.0.q_proj": 0.5}, "layers_to_transform": null}`,
		`{"r": 0}`, `null`, `[]`, `{"r": 1e400}`, `{"target_modules": "("}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		path := filepath.Join(dir, ConfigName)
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		done := fuzzguard.Start(t, 256<<20)
		c, err := ReadConfig(path)
		done()
		if err != nil {
			return
		}
		for _, m := range []string{"model.layers.0.self_attn.q_proj", "lm_head", ""} {
			c.Matches(m)
			c.Scaling(m)
		}
		// Write adds PEFT's defaults of the fields it does not read to
		// Extra: compare the rest, then check that a second round trip
		// changes nothing at all.
		c2 := fuzzRoundTrip(t, c, filepath.Join(dir, "again.json"))
		c3 := fuzzRoundTrip(t, c2, filepath.Join(dir, "again2.json"))
		if !reflect.DeepEqual(c3, c2) {
			t.Fatalf("config changed in a second round trip:\n%+v\n%+v", c3, c2)
		}
		c.Extra, c2.Extra = nil, nil
		if !reflect.DeepEqual(c2, c) {
			t.Fatalf("config changed in a round trip:\n%+v\n%+v", c2, c)
		}
	})
}

func fuzzRoundTrip(t *testing.T, c Config, path string) Config {
	t.Helper()
	if err := c.Write(path); err != nil {
		t.Fatalf("write of an accepted config: %v", err)
	}
	again, err := ReadConfig(path)
	if err != nil {
		b, _ := os.ReadFile(path)
		t.Fatalf("read of a written config: %v\n%s", err, b)
	}
	return again
}

// FuzzLoadWeights loads an adapter whose config is valid and whose
// adapter_model.safetensors holds any bytes: Load must refuse it or give
// an adapter with every targeted module's A and B.
func FuzzLoadWeights(f *testing.F) {
	modules := llamaModules(1)
	c := configFor(TargetNames("q_proj", "down_proj"))
	c.R, c.LoraAlpha = 2, 4
	c.RankPattern = RankPattern{{"down_proj", 1}}
	a, err := New(c, modules, 1)
	if err != nil {
		f.Fatal(err)
	}
	randomize(a)
	seedDir := filepath.Join(f.TempDir(), "adapter")
	if err := a.Save(seedDir); err != nil {
		f.Fatal(err)
	}
	cfg, err := os.ReadFile(filepath.Join(seedDir, ConfigName))
	if err != nil {
		f.Fatal(err)
	}
	weights, err := os.ReadFile(filepath.Join(seedDir, WeightsName))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(weights)
	f.Add(weights[:len(weights)-1])
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, ConfigName), cfg, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, WeightsName), data, 0o644); err != nil {
			t.Fatal(err)
		}
		defer fuzzguard.Start(t, 256<<20)()
		got, err := Load(dir, modules)
		if err != nil {
			return
		}
		if len(got.Modules) != 2 {
			t.Fatalf("modules %v, want the 2 targeted", got.Modules)
		}
		if err := got.check(); err != nil {
			t.Fatalf("loaded adapter: %v", err)
		}
	})
}
