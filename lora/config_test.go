package lora

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// peftConfig is an adapter_config.json as PEFT 0.18.1 writes it
// (json.dumps(indent=2, sort_keys=True), no final newline), modelled on
// github.com/Adarsh5557/qwen7b-finetuned-Smart-MCQ-Solver, adapter_config.json
// (a Qwen2.5-7B-Instruct adapter), with rank_pattern and alpha_pattern
// entries added.
const peftConfig = `{
  "alora_invocation_tokens": null,
  "alpha_pattern": {
    "v_proj": 8
  },
  "arrow_config": null,
  "auto_mapping": null,
  "base_model_name_or_path": "Qwen/Qwen2.5-7B-Instruct",
  "bias": "none",
  "corda_config": null,
  "ensure_weight_tying": false,
  "eva_config": null,
  "exclude_modules": null,
  "fan_in_fan_out": false,
  "inference_mode": true,
  "init_lora_weights": true,
  "layer_replication": null,
  "layers_pattern": null,
  "layers_to_transform": null,
  "loftq_config": {},
  "lora_alpha": 32,
  "lora_bias": false,
  "lora_dropout": 0.05,
  "megatron_config": null,
  "megatron_core": "megatron.core",
  "modules_to_save": null,
  "peft_type": "LORA",
  "peft_version": "0.18.1",
  "qalora_group_size": 16,
  "r": 16,
  "rank_pattern": {
    "model.layers.0.self_attn.q_proj": 32,
    "v_proj": 4
  },
  "revision": null,
  "target_modules": [
    "gate_proj",
    "q_proj",
    "o_proj",
    "down_proj",
    "v_proj",
    "up_proj",
    "k_proj"
  ],
  "target_parameters": null,
  "task_type": "CAUSAL_LM",
  "trainable_token_indices": null,
  "use_dora": false,
  "use_qalora": false,
  "use_rslora": false
}`

func writeFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestConfigRoundTrip(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, ConfigName)
	writeFile(t, path, peftConfig)
	c, err := ReadConfig(path)
	if err != nil {
		t.Fatal(err)
	}

	if c.PeftType != "LORA" || c.TaskType != "CAUSAL_LM" || c.BaseModelNameOrPath != "Qwen/Qwen2.5-7B-Instruct" ||
		c.Revision != "" || c.R != 16 || c.LoraAlpha != 32 || c.LoraDropout != 0.05 || c.UseRslora ||
		c.InitLoraWeights != true || c.Bias != "none" {
		t.Errorf("fields read wrong: %+v", c)
	}
	wantTargets := TargetNames("gate_proj", "q_proj", "o_proj", "down_proj", "v_proj", "up_proj", "k_proj")
	if !reflect.DeepEqual(c.TargetModules, wantTargets) {
		t.Errorf("target_modules %+v, want %+v", c.TargetModules, wantTargets)
	}
	if c.ExcludeModules.Kind != TargetNone {
		t.Errorf("exclude_modules %+v, want none", c.ExcludeModules)
	}
	wantRank := RankPattern{{"model.layers.0.self_attn.q_proj", 32}, {"v_proj", 4}}
	if !reflect.DeepEqual(c.RankPattern, wantRank) {
		t.Errorf("rank_pattern %v, want %v", c.RankPattern, wantRank)
	}
	if want := (AlphaPattern{{"v_proj", 8}}); !reflect.DeepEqual(c.AlphaPattern, want) {
		t.Errorf("alpha_pattern %v, want %v", c.AlphaPattern, want)
	}
	if got := string(c.Extra["peft_version"]); got != `"0.18.1"` {
		t.Errorf("peft_version kept as %s", got)
	}
	if got := string(c.Extra["loftq_config"]); got != `{}` {
		t.Errorf("loftq_config kept as %s", got)
	}

	out := filepath.Join(dir, "again.json")
	if err := c.Write(out); err != nil {
		t.Fatal(err)
	}
	written, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	// Byte for byte what PEFT wrote, but for exclude_modules: null, which
	// is left out so that PEFT before 0.14 (which refuses unknown fields)
	// still loads the file.
	want := strings.Replace(peftConfig, "  \"exclude_modules\": null,\n", "", 1)
	if string(written) != want {
		t.Errorf("written config differs from PEFT's:\n%s\nwant:\n%s", written, want)
	}
	again, err := ReadConfig(out)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(again, c) {
		t.Errorf("config changed in a round trip:\n%+v\n%+v", again, c)
	}
}

func TestConfigDefaultsEncode(t *testing.T) {
	c := DefaultConfig()
	c.TargetModules = TargetNames("q_proj", "v_proj")
	c.BaseModelNameOrPath = "meta-llama/Llama-3.1-8B"
	data, err := c.Encode()
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatalf("%v:\n%s", err, data)
	}
	// The fields PEFT 0.10 and later write, with PEFT's defaults.
	want := map[string]any{
		"alpha_pattern":           map[string]any{},
		"auto_mapping":            nil,
		"base_model_name_or_path": "meta-llama/Llama-3.1-8B",
		"bias":                    "none",
		"fan_in_fan_out":          false,
		"inference_mode":          true,
		"init_lora_weights":       true,
		"layer_replication":       nil,
		"layers_pattern":          nil,
		"layers_to_transform":     nil,
		"loftq_config":            map[string]any{},
		"lora_alpha":              8.0,
		"lora_dropout":            0.0,
		"megatron_config":         nil,
		"megatron_core":           "megatron.core",
		"modules_to_save":         nil,
		"peft_type":               "LORA",
		"r":                       8.0,
		"rank_pattern":            map[string]any{},
		"revision":                nil,
		"target_modules":          []any{"q_proj", "v_proj"},
		"task_type":               "CAUSAL_LM",
		"use_dora":                false,
		"use_rslora":              false,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("encoded\n%s\nwant the fields %v", data, want)
	}
	for _, s := range []string{`"lora_dropout": 0.0,`, `"lora_alpha": 8,`, `"r": 8,`} {
		if !strings.Contains(string(data), s) {
			t.Errorf("encoded config lacks %s as Python writes it:\n%s", s, data)
		}
	}

	// A float alpha (PEFT writes alpha * sqrt 2 when converting a PiSSA
	// adapter under rsLoRA) and a regex target survive a round trip.
	c.LoraAlpha = 16 * math.Sqrt2
	c.TargetModules = TargetString(`.*\.(q|v)_proj`)
	again := writeAndRead(t, c)
	c.Extra = again.Extra // the defaults Encode added
	if !reflect.DeepEqual(again, c) {
		t.Errorf("round trip:\n%+v\n%+v", again, c)
	}
}

func TestTargetMatching(t *testing.T) {
	cases := []struct {
		targets Targets
		exclude Targets
		module  string
		want    bool
	}{
		// A list: the name itself or a "."-bounded suffix.
		{TargetNames("q_proj"), Targets{}, "model.layers.0.self_attn.q_proj", true},
		{TargetNames("q_proj"), Targets{}, "q_proj", true},
		{TargetNames("proj"), Targets{}, "model.layers.0.self_attn.q_proj", false},
		{TargetNames("q_proj"), Targets{}, "model.layers.0.self_attn.xq_proj", false},
		{TargetNames("q_proj"), Targets{}, "model.layers.0.self_attn.q_proj.lora_A", false},
		{TargetNames("self_attn.q_proj"), Targets{}, "model.layers.0.self_attn.q_proj", true},
		{TargetNames("layers.1.self_attn.q_proj"), Targets{}, "model.layers.11.self_attn.q_proj", false},
		{TargetNames("layers.1.self_attn.q_proj"), Targets{}, "model.layers.1.self_attn.q_proj", true},
		{TargetNames(".*q_proj"), Targets{}, "model.layers.0.self_attn.q_proj", false}, // names are not regexes
		{TargetNames("q_proj", "v_proj"), Targets{}, "model.layers.3.self_attn.v_proj", true},
		{TargetNames(), Targets{}, "model.layers.3.self_attn.v_proj", false},
		// Phi-3's fused modules are targeted by their own names.
		{TargetNames("q_proj"), Targets{}, "model.layers.0.self_attn.qkv_proj", false},
		{TargetNames("qkv_proj"), Targets{}, "model.layers.0.self_attn.qkv_proj", true},
		{TargetNames("gate_up_proj"), Targets{}, "model.layers.0.mlp.gate_up_proj", true},
		// A string: a regular expression matching the whole name.
		{TargetString("q_proj"), Targets{}, "model.layers.0.self_attn.q_proj", false},
		{TargetString(`.*\.(q|v)_proj`), Targets{}, "model.layers.0.self_attn.v_proj", true},
		{TargetString(`.*\.(q|v)_proj`), Targets{}, "model.layers.0.self_attn.k_proj", false},
		{TargetString(`.*\.(q|v)_proj`), Targets{}, "model.layers.0.self_attn.q_proj_extra", false},
		{TargetString(`q_proj|v_proj`), Targets{}, "model.layers.0.self_attn.v_proj", false},
		{TargetString(`model\.layers\.[0-3]\..*`), Targets{}, "model.layers.2.mlp.down_proj", true},
		{TargetString(`model\.layers\.[0-3]\..*`), Targets{}, "model.layers.12.mlp.down_proj", false},
		// all-linear: every linear layer but the output layer.
		{TargetString("all-linear"), Targets{}, "model.layers.0.mlp.down_proj", true},
		{TargetString("ALL-LINEAR"), Targets{}, "model.layers.0.self_attn.qkv_proj", true},
		{TargetString("all-linear"), Targets{}, "lm_head", false},
		// exclude_modules takes modules out, with the same rules.
		{TargetString("all-linear"), TargetNames("down_proj"), "model.layers.0.mlp.down_proj", false},
		{TargetString("all-linear"), TargetNames("down_proj"), "model.layers.0.mlp.up_proj", true},
		{TargetNames("q_proj"), Targets{Kind: TargetRegex, Regex: `model\.layers\.0\..*`}, "model.layers.0.self_attn.q_proj", false},
		{TargetNames("q_proj"), Targets{Kind: TargetRegex, Regex: `model\.layers\.0\..*`}, "model.layers.10.self_attn.q_proj", true},
	}
	for _, tc := range cases {
		c := DefaultConfig()
		c.TargetModules = tc.targets
		c.ExcludeModules = tc.exclude
		if got := c.Matches(tc.module); got != tc.want {
			t.Errorf("target_modules %s, exclude_modules %s: Matches(%q) = %v, want %v", tc.targets, tc.exclude, tc.module, got, tc.want)
		}
	}
}

func TestExcludeAllLinearIsARegex(t *testing.T) {
	// In exclude_modules, PEFT reads "all-linear" as a regular expression,
	// which matches no real module.
	path := filepath.Join(t.TempDir(), ConfigName)
	writeFile(t, path, `{"peft_type": "LORA", "target_modules": "all-linear", "exclude_modules": "all-linear"}`)
	c, err := ReadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if c.TargetModules.Kind != TargetAllLinear || c.ExcludeModules.Kind != TargetRegex {
		t.Errorf("kinds %d and %d", c.TargetModules.Kind, c.ExcludeModules.Kind)
	}
	if !c.Matches("model.layers.0.mlp.up_proj") {
		t.Error("up_proj excluded")
	}
}

func TestRankAndAlphaPatterns(t *testing.T) {
	c := DefaultConfig()
	c.TargetModules = TargetString("all-linear")
	c.R, c.LoraAlpha = 8, 16
	c.RankPattern = RankPattern{
		{"model.layers.0.self_attn.q_proj", 2}, // a full name
		{"q_proj", 4},                          // a name part after a "."
		{`layers\.[12]\..*_proj`, 6},           // a regular expression
		{"proj", 100},                          // matches no name: "proj" never follows a "."
	}
	c.AlphaPattern = AlphaPattern{{"v_proj", 3}, {`.*\.mlp\..*`, 32}}
	cases := []struct {
		module string
		rank   int
		alpha  float64
	}{
		{"model.layers.0.self_attn.q_proj", 2, 16},
		{"model.layers.5.self_attn.q_proj", 4, 16},
		{"model.layers.1.self_attn.q_proj", 4, 16}, // the first matching key wins
		{"model.layers.1.self_attn.k_proj", 6, 16},
		{"model.layers.11.self_attn.k_proj", 8, 16}, // "layers.11." is not "layers.1."
		{"model.layers.5.self_attn.v_proj", 8, 3},
		{"model.layers.2.mlp.up_proj", 6, 32},
		{"model.layers.7.mlp.down_proj", 8, 32},
		{"model.layers.7.self_attn.xq_proj", 8, 16},
	}
	for _, tc := range cases {
		if got := c.Rank(tc.module); got != tc.rank {
			t.Errorf("Rank(%q) = %d, want %d", tc.module, got, tc.rank)
		}
		if got := c.Scaling(tc.module); got != tc.alpha/float64(tc.rank) {
			t.Errorf("Scaling(%q) = %v, want %v/%d", tc.module, got, tc.alpha, tc.rank)
		}
	}
}

func TestScalingRSLoRA(t *testing.T) {
	c := DefaultConfig()
	c.TargetModules = TargetNames("q_proj")
	c.R, c.LoraAlpha = 16, 32
	if got := c.Scaling("model.layers.0.self_attn.q_proj"); got != 2 {
		t.Errorf("alpha/r scaling %v, want 2", got)
	}
	c.UseRslora = true
	if got := c.Scaling("model.layers.0.self_attn.q_proj"); got != 32.0/4 {
		t.Errorf("rsLoRA scaling %v, want alpha/sqrt(r) = 8", got)
	}
	c.RankPattern = RankPattern{{"q_proj", 64}}
	if got := c.Scaling("model.layers.0.self_attn.q_proj"); got != 32.0/8 {
		t.Errorf("rsLoRA scaling with rank 64 %v, want 4", got)
	}
}

func TestDefaultTargets(t *testing.T) {
	for _, mt := range []string{"llama", "qwen2"} {
		got, err := DefaultTargets(mt)
		if err != nil || !reflect.DeepEqual(got, TargetNames("q_proj", "v_proj")) {
			t.Errorf("DefaultTargets(%q) = %v, %v", mt, got, err)
		}
	}
	if _, err := DefaultTargets("phi3"); err == nil || !strings.Contains(err.Error(), "qkv_proj") {
		t.Errorf("DefaultTargets(phi3) error %v, want one naming qkv_proj", err)
	}
}

func TestReadConfigErrors(t *testing.T) {
	const base = `"peft_type": "LORA", "r": 8, "target_modules": ["q_proj"]`
	cases := []struct {
		name, text, want string
	}{
		{"invalid JSON", `{"peft_type": "LORA",`, "JSON object"},
		{"not an object", `[1]`, "JSON object"},
		{"other method", `{"peft_type": "IA3", "target_modules": ["q_proj"]}`, "peft_type"},
		{"task type", `{` + base + `, "task_type": "SEQ_CLS"}`, "task_type"},
		{"rank zero", `{"peft_type": "LORA", "r": 0, "target_modules": ["q_proj"]}`, "r is 0"},
		{"float rank", `{"peft_type": "LORA", "r": 16.0, "target_modules": ["q_proj"]}`, "r:"},
		{"dropout", `{` + base + `, "lora_dropout": 1.5}`, "lora_dropout"},
		{"no targets", `{"peft_type": "LORA", "target_modules": null}`, "target_modules is null"},
		{"bad targets", `{"peft_type": "LORA", "target_modules": [1, 2]}`, "target_modules"},
		{"lookahead", `{"peft_type": "LORA", "target_modules": "(?!lm_head).*"}`, "regular expression"},
		{"bias", `{` + base + `, "bias": "all"}`, `bias is "all"`},
		{"lora only bias", `{` + base + `, "bias": "lora_only"}`, "bias"},
		{"dora", `{` + base + `, "use_dora": true}`, "use_dora"},
		{"modules to save", `{` + base + `, "modules_to_save": ["lm_head"]}`, "modules_to_save"},
		{"fan in fan out", `{` + base + `, "fan_in_fan_out": true}`, "fan_in_fan_out"},
		{"layers to transform", `{` + base + `, "layers_to_transform": [0, 1]}`, "layers_to_transform"},
		{"layer zero", `{` + base + `, "layers_to_transform": 0}`, "layers_to_transform"},
		{"layers pattern", `{` + base + `, "layers_pattern": "layers"}`, "layers_pattern"},
		{"lora bias", `{` + base + `, "lora_bias": true}`, "lora_bias"},
		{"alora", `{` + base + `, "alora_invocation_tokens": [1, 2]}`, "alora_invocation_tokens"},
		{"target parameters", `{` + base + `, "target_parameters": ["experts.down_proj"]}`, "target_parameters"},
		{"pissa", `{` + base + `, "init_lora_weights": "pissa_niter_4"}`, "pissa"},
		{"pissa upper case", `{` + base + `, "init_lora_weights": "PiSSA"}`, "PiSSA"},
		{"loftq upper case", `{` + base + `, "init_lora_weights": "LOFTQ"}`, "LOFTQ"},
		{"init number", `{` + base + `, "init_lora_weights": 1}`, "init_lora_weights"},
		{"rank pattern", `{` + base + `, "rank_pattern": {"q_proj": 0}}`, "rank_pattern"},
		{"rank pattern float", `{` + base + `, "rank_pattern": {"q_proj": 2.5}}`, "rank_pattern"},
		{"rank pattern regex", `{` + base + `, "rank_pattern": {"q_proj(": 4}}`, "rank_pattern"},
		{"rank pattern twice", `{` + base + `, "rank_pattern": {"q_proj": 4, "q_proj": 2}}`, "twice"},
		{"alpha pattern", `{` + base + `, "alpha_pattern": ["q_proj"]}`, "alpha_pattern"},
	}
	dir := t.TempDir()
	for _, tc := range cases {
		path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_")+".json")
		writeFile(t, path, tc.text)
		_, err := ReadConfig(path)
		if err == nil {
			t.Errorf("%s: no error", tc.name)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), path) {
			t.Errorf("%s: error %q does not name %q and the file", tc.name, err, tc.want)
		}
	}
	if _, err := ReadConfig(filepath.Join(dir, "absent.json")); err == nil {
		t.Error("missing file: no error")
	}
}

func TestReadConfigAccepts(t *testing.T) {
	// Unset forms of optional fields, a float alpha, init names that keep
	// the base weights, a dropout of 1 (nn.Dropout takes p in [0, 1]), and
	// a minimal config.
	cases := []string{
		`{"peft_type": "LORA", "target_modules": ["q_proj"]}`,
		`{"peft_type": "LORA", "target_modules": ["q_proj"], "lora_alpha": 22.627416997969522, "layers_to_transform": [], "modules_to_save": [], "layers_pattern": null}`,
		`{"peft_type": "LORA", "target_modules": "all-linear", "init_lora_weights": "gaussian", "task_type": null}`,
		`{"peft_type": "LORA", "target_modules": ["q_proj"], "init_lora_weights": false, "lora_bias": false, "use_qalora": false}`,
		`{"peft_type": "LORA", "target_modules": ["q_proj"], "init_lora_weights": "eva", "eva_config": {"rho": 2.0}}`,
		`{"peft_type": "LORA", "target_modules": ["q_proj"], "arrow_config": {}, "lora_dropout": 1}`,
	}
	dir := t.TempDir()
	for i, text := range cases {
		path := filepath.Join(dir, "c.json")
		writeFile(t, path, text)
		c, err := ReadConfig(path)
		if err != nil {
			t.Errorf("case %d: %v", i, err)
			continue
		}
		out := filepath.Join(dir, "out.json")
		if err := c.Write(out); err != nil {
			t.Errorf("case %d: write: %v", i, err)
			continue
		}
		again, err := ReadConfig(out)
		if err != nil {
			t.Errorf("case %d: read back: %v", i, err)
			continue
		}
		// Encode adds PEFT's default fields; the rest reads back equal.
		for name := range peftDefaults {
			if _, ok := c.Extra[name]; !ok {
				delete(again.Extra, name)
			}
		}
		if len(again.Extra) == 0 {
			again.Extra = nil
		}
		if !reflect.DeepEqual(again, c) {
			t.Errorf("case %d: round trip\n%+v\n%+v", i, again, c)
		}
	}
}

// A null boolean is false, as Python reads None.
func TestReadConfigNullIsFalse(t *testing.T) {
	path := filepath.Join(t.TempDir(), ConfigName)
	writeFile(t, path, `{"peft_type": "LORA", "target_modules": ["q_proj"], "use_rslora": null, "use_dora": null, "fan_in_fan_out": null}`)
	c, err := ReadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if c.UseRslora || c.UseDora || c.FanInFanOut {
		t.Errorf("null use_rslora, use_dora, fan_in_fan_out read as %v, %v, %v; want false", c.UseRslora, c.UseDora, c.FanInFanOut)
	}
}

// runtime_config is dropped on reading, as PEFT drops it, so it is not
// written back.
func TestRuntimeConfigNotSaved(t *testing.T) {
	path := filepath.Join(t.TempDir(), ConfigName)
	writeFile(t, path, `{"peft_type": "LORA", "target_modules": ["q_proj"], "runtime_config": {"ephemeral_gpu_offload": true}}`)
	c, err := ReadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if raw, ok := c.Extra["runtime_config"]; ok {
		t.Errorf("runtime_config kept in Extra as %s", raw)
	}
	data, err := c.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(data), "runtime_config") {
		t.Errorf("encoded config has runtime_config:\n%s", data)
	}
}

// Numbers too small or too large for a plain decimal form are written as
// valid JSON and read back the same: an exponent takes no ".0", and an
// integral alpha beyond 2^53 is not converted through int64.
func TestConfigNumberForms(t *testing.T) {
	c := DefaultConfig()
	c.TargetModules = TargetNames("q_proj")
	c.LoraDropout = 1e-7
	c.LoraAlpha = 1e20
	c.AlphaPattern = AlphaPattern{{"q_proj", 1e20}}
	data, err := c.Encode()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{`"lora_dropout": 1e-7,`, `"lora_alpha": 100000000000000000000,`, `"q_proj": 100000000000000000000`} {
		if !strings.Contains(string(data), s) {
			t.Errorf("encoded config lacks %s:\n%s", s, data)
		}
	}
	again := writeAndRead(t, c)
	if again.LoraDropout != 1e-7 || again.LoraAlpha != 1e20 || !reflect.DeepEqual(again.AlphaPattern, c.AlphaPattern) {
		t.Errorf("read back lora_dropout %v, lora_alpha %v, alpha_pattern %v; want 1e-07, 1e+20, %v",
			again.LoraDropout, again.LoraAlpha, again.AlphaPattern, c.AlphaPattern)
	}
}

// writeAndRead writes c as adapter_config.json and reads it back.
func writeAndRead(t *testing.T, c Config) Config {
	t.Helper()
	path := filepath.Join(t.TempDir(), ConfigName)
	if err := c.Write(path); err != nil {
		t.Fatal(err)
	}
	again, err := ReadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	return again
}
