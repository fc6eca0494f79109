package lora

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/compassml/compass/internal/atomicfile"
)

// ConfigName is the name of the config file in an adapter directory.
const ConfigName = "adapter_config.json"

// Config is adapter_config.json: the fields of PEFT's LoraConfig that
// change what the adapter computes, and the rest kept as read (Extra) so
// that a loaded config writes back the same.
type Config struct {
	PeftType            string // "LORA"
	TaskType            string // "CAUSAL_LM"; "" is null
	BaseModelNameOrPath string // "" is null
	Revision            string // the base model's revision; "" is null

	R           int     // the rank r
	LoraAlpha   float64 // alpha: an int in PEFT's declaration, but any number works, and PEFT itself writes alpha * sqrt 2 in some conversions
	LoraDropout float64 // dropout probability on the adapter's input during training
	UseRslora   bool    // scaling alpha/sqrt(r) instead of alpha/r

	TargetModules  Targets // the modules to adapt
	ExcludeModules Targets // the modules not to adapt; TargetNone for none

	// InitLoraWeights is init_lora_weights as read: true (A kaiming
	// uniform, B zero), false (both random), or the name of another
	// initialisation such as "gaussian".
	InitLoraWeights any

	RankPattern  RankPattern  // per-module ranks, first match wins
	AlphaPattern AlphaPattern // per-module alphas, first match wins

	// Fields that must keep their default values: the package refuses a
	// config that sets them.
	FanInFanOut   bool     // weights stored [in, out] (GPT-2's Conv1D)
	Bias          string   // "none": no bias is trained
	ModulesToSave []string // whole modules trained and saved beside the adapter
	UseDora       bool     // DoRA

	// Extra holds every other field of the file, as compact JSON, by name.
	Extra map[string]json.RawMessage
}

// TargetKind says which form target_modules (or exclude_modules) takes.
type TargetKind uint8

const (
	TargetNone      TargetKind = iota // null
	TargetList                        // a list of names
	TargetRegex                       // one regular expression
	TargetAllLinear                   // "all-linear"
)

// Targets is target_modules or exclude_modules: null, a list of module
// names, one regular expression, or "all-linear".
type Targets struct {
	Kind  TargetKind
	Names []string // TargetList: a module matches a name or ends with "." + name
	Regex string   // TargetRegex: must match the whole module name; TargetAllLinear: the string as written
}

// TargetNames returns the list form of Targets.
func TargetNames(names ...string) Targets {
	return Targets{Kind: TargetList, Names: slices.Clone(names)}
}

// TargetString returns the string form of Targets: a regular expression,
// or "all-linear" in any case.
func TargetString(s string) Targets {
	if strings.EqualFold(s, allLinear) {
		return Targets{Kind: TargetAllLinear, Regex: s}
	}
	return Targets{Kind: TargetRegex, Regex: s}
}

// allLinear is PEFT's INCLUDE_LINEAR_LAYERS_SHORTHAND, compared in lower case.
const allLinear = "all-linear"

// outputLayer is the module "all-linear" leaves out: the output embedding
// of the llama, qwen2 and phi3 families.
const outputLayer = "lm_head"

func (t Targets) String() string {
	switch t.Kind {
	case TargetList:
		return fmt.Sprintf("%q", t.Names)
	case TargetRegex, TargetAllLinear:
		return strconv.Quote(t.Regex)
	}
	return "null"
}

// match reports whether module is one of the targets, as PEFT's
// check_target_module_exists decides. A regular expression that does not
// compile matches nothing (validate refuses it earlier).
func (t Targets) match(module string) bool {
	switch t.Kind {
	case TargetList:
		for _, name := range t.Names {
			if module == name || strings.HasSuffix(module, "."+name) {
				return true
			}
		}
	case TargetRegex:
		re, err := regexp.Compile(`^(?:` + t.Regex + `)$`)
		return err == nil && re.MatchString(module)
	case TargetAllLinear:
		return module != outputLayer
	}
	return false
}

// DefaultTargets returns the target_modules PEFT picks when a config leaves
// them unset (TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING in
// peft/utils/constants.py) for the model types compass supports: q_proj and
// v_proj for llama and qwen2. PEFT has none for phi3, whose projections are
// fused: name them there (for example qkv_proj).
func DefaultTargets(modelType string) (Targets, error) {
	switch modelType {
	case "llama", "qwen2":
		return TargetNames("q_proj", "v_proj"), nil
	}
	return Targets{}, fmt.Errorf("lora: PEFT has no default target_modules for model type %q: name them (on phi3: qkv_proj, o_proj, gate_up_proj, down_proj)", modelType)
}

// RankOverride is one entry of rank_pattern.
type RankOverride struct {
	Pattern string
	Rank    int
}

// RankPattern is rank_pattern, in the file's order: PEFT gives a module the
// rank of the first key that matches it.
type RankPattern []RankOverride

// AlphaOverride is one entry of alpha_pattern.
type AlphaOverride struct {
	Pattern string
	Alpha   float64
}

// AlphaPattern is alpha_pattern, in the file's order: PEFT gives a module
// the alpha of the first key that matches it.
type AlphaPattern []AlphaOverride

// patternMatches reports whether the rank_pattern or alpha_pattern key
// selects module: PEFT's get_pattern_key tries re.match(rf"(.*\.)?({key})$"),
// so the key must match the whole name or a part of it after a ".", up to
// the end.
func patternMatches(key, module string) bool {
	re, err := regexp.Compile(`^(?:.*\.)?(?:` + key + `)$`)
	return err == nil && re.MatchString(module)
}

// DefaultConfig returns PEFT's defaults for a causal language model: r 8,
// alpha 8, no dropout, alpha/r scaling, kaiming-uniform A and zero B. The
// caller sets TargetModules (and BaseModelNameOrPath).
func DefaultConfig() Config {
	return Config{
		PeftType:        "LORA",
		TaskType:        "CAUSAL_LM",
		R:               8,
		LoraAlpha:       8,
		Bias:            "none",
		InitLoraWeights: true,
	}
}

// Matches reports whether the adapter applies to module (a full module name
// such as "model.layers.0.self_attn.q_proj"), by PEFT's rules: not in
// exclude_modules, and in target_modules.
func (c Config) Matches(module string) bool {
	if c.ExcludeModules.Kind != TargetNone && c.ExcludeModules.match(module) {
		return false
	}
	return c.TargetModules.match(module)
}

// Rank is r for module: the value of the first rank_pattern key that
// matches it, or R.
func (c Config) Rank(module string) int {
	for _, p := range c.RankPattern {
		if patternMatches(p.Pattern, module) {
			return p.Rank
		}
	}
	return c.R
}

// Alpha is lora_alpha for module: the value of the first alpha_pattern key
// that matches it, or LoraAlpha.
func (c Config) Alpha(module string) float64 {
	for _, p := range c.AlphaPattern {
		if patternMatches(p.Pattern, module) {
			return p.Alpha
		}
	}
	return c.LoraAlpha
}

// Scaling is the factor of the adapter's output for module: alpha/r, or
// alpha/sqrt(r) with rsLoRA, with the module's own rank and alpha.
func (c Config) Scaling(module string) float64 {
	r := float64(c.Rank(module))
	if c.UseRslora {
		return c.Alpha(module) / math.Sqrt(r)
	}
	return c.Alpha(module) / r
}

// typedFields are the JSON names of the fields Config holds itself; the
// others go to Extra.
var typedFields = []string{
	"peft_type", "task_type", "base_model_name_or_path", "revision",
	"r", "lora_alpha", "lora_dropout", "use_rslora",
	"target_modules", "exclude_modules", "init_lora_weights",
	"rank_pattern", "alpha_pattern",
	"fan_in_fan_out", "bias", "modules_to_save", "use_dora",
}

// unsupported are fields of LoraConfig that, when set, ask for computations
// this package does not do. A field is set unless it is absent, null,
// false, or an empty list or object.
var unsupported = []struct{ field, what string }{
	{"lora_bias", "a trained bias on lora_B"},
	{"layers_to_transform", "adapting only some layers"},
	{"layers_pattern", "adapting only some layers"},
	{"layer_replication", "replicated layers"},
	{"target_parameters", "adapters on parameters rather than modules"},
	{"trainable_token_indices", "trainable token embeddings"},
	{"alora_invocation_tokens", "activated LoRA (aLoRA)"},
	{"use_qalora", "QALoRA"},
	{"arrow_config", "Arrow routing"},
	{"use_bdlora", "block-diagonal LoRA"},
	{"velora_config", "VeLoRA"},
	{"kasa_config", "KaSA"},
	{"monteclora_config", "MonteCLoRA"},
}

// baseChangingInits are the initialisations after which PEFT's adapter
// applies to modified base weights, not the published ones (PEFT writes
// init_lora_weights true once it has converted such an adapter back).
var baseChangingInits = []string{"pissa", "olora", "corda", "loftq", "lora_ga"}

// validate checks that c describes an adapter this package computes.
func (c Config) validate() error {
	if c.PeftType != "LORA" {
		return fmt.Errorf("peft_type is %q, want \"LORA\"", c.PeftType)
	}
	if c.TaskType != "" && c.TaskType != "CAUSAL_LM" {
		return fmt.Errorf("task_type is %q: compass adapts causal language models (\"CAUSAL_LM\")", c.TaskType)
	}
	if c.R <= 0 {
		return fmt.Errorf("r is %d, want a positive integer", c.R)
	}
	if math.IsNaN(c.LoraAlpha) || math.IsInf(c.LoraAlpha, 0) {
		return fmt.Errorf("lora_alpha is %v", c.LoraAlpha)
	}
	if !(c.LoraDropout >= 0 && c.LoraDropout <= 1) {
		return fmt.Errorf("lora_dropout is %v, want a probability in [0, 1]", c.LoraDropout)
	}
	if err := c.TargetModules.validate("target_modules"); err != nil {
		return err
	}
	if c.TargetModules.Kind == TargetNone {
		return fmt.Errorf("target_modules is null: name the modules to adapt (PEFT's defaults depend on the model type, see DefaultTargets)")
	}
	if c.ExcludeModules.Kind == TargetAllLinear {
		return fmt.Errorf("exclude_modules has the kind TargetAllLinear, which only target_modules has (PEFT reads %q there as a regular expression)", c.ExcludeModules.Regex)
	}
	if err := c.ExcludeModules.validate("exclude_modules"); err != nil {
		return err
	}
	switch init := c.InitLoraWeights.(type) {
	case bool:
	case string:
		for _, prefix := range baseChangingInits {
			if strings.HasPrefix(strings.ToLower(init), prefix) {
				return fmt.Errorf("init_lora_weights is %q: such an adapter applies to base weights that its initialisation changed; convert it with PEFT (save_pretrained with path_initial_model_for_weight_conversion) first", init)
			}
		}
	default:
		return fmt.Errorf("init_lora_weights is %v (%T), want true, false or a string", init, init)
	}
	seen := make(map[string]bool, len(c.RankPattern))
	for _, p := range c.RankPattern {
		if err := checkPatternKey("rank_pattern", p.Pattern, seen); err != nil {
			return err
		}
		if p.Rank <= 0 {
			return fmt.Errorf("rank_pattern[%q] is %d, want a positive integer", p.Pattern, p.Rank)
		}
	}
	clear(seen)
	for _, p := range c.AlphaPattern {
		if err := checkPatternKey("alpha_pattern", p.Pattern, seen); err != nil {
			return err
		}
		if math.IsNaN(p.Alpha) || math.IsInf(p.Alpha, 0) {
			return fmt.Errorf("alpha_pattern[%q] is %v", p.Pattern, p.Alpha)
		}
	}
	if c.FanInFanOut {
		return fmt.Errorf("fan_in_fan_out is true: the base models compass loads store linear weights [out, in]; it must be false")
	}
	if c.Bias != "none" {
		return fmt.Errorf("bias is %q: only \"none\" is supported (no base model bias is trained)", c.Bias)
	}
	if len(c.ModulesToSave) > 0 {
		return fmt.Errorf("modules_to_save is %q: training and saving whole modules beside the adapter is not supported", c.ModulesToSave)
	}
	if c.UseDora {
		return fmt.Errorf("use_dora is true: DoRA is not supported")
	}
	for _, name := range typedFields {
		if _, ok := c.Extra[name]; ok {
			return fmt.Errorf("the field %q is in Extra, but Config holds it", name)
		}
	}
	for _, u := range unsupported {
		if raw, ok := c.Extra[u.field]; ok && isSet(raw) {
			return fmt.Errorf("%s is %s: %s is not supported", u.field, raw, u.what)
		}
	}
	return nil
}

func (t Targets) validate(field string) error {
	switch t.Kind {
	case TargetNone, TargetList, TargetAllLinear:
		return nil
	case TargetRegex:
		if _, err := regexp.Compile(`^(?:` + t.Regex + `)$`); err != nil {
			return fmt.Errorf("%s: regular expression %q: %w", field, t.Regex, err)
		}
		return nil
	}
	return fmt.Errorf("%s: invalid kind %d", field, t.Kind)
}

// checkPatternKey checks that a key of rank_pattern or alpha_pattern
// compiles and is not among the keys seen before it.
func checkPatternKey(field, key string, seen map[string]bool) error {
	if _, err := regexp.Compile(`^(?:.*\.)?(?:` + key + `)$`); err != nil {
		return fmt.Errorf("%s: key %q: %w", field, key, err)
	}
	if seen[key] {
		return fmt.Errorf("%s: key %q appears twice", field, key)
	}
	seen[key] = true
	return nil
}

// isSet reports whether a JSON value differs from the "unset" values of
// LoraConfig's optional fields: null, false, [] and {}.
func isSet(raw json.RawMessage) bool {
	switch string(raw) {
	case "null", "false", "[]", "{}":
		return false
	}
	return true
}

// ReadConfig reads and checks an adapter_config.json.
func ReadConfig(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("lora: %w", err)
	}
	c, err := parseConfig(data)
	if err != nil {
		return Config{}, fmt.Errorf("lora: %s: %w", path, err)
	}
	if err := c.validate(); err != nil {
		return Config{}, fmt.Errorf("lora: %s: %w", path, err)
	}
	return c, nil
}

// parseConfig decodes the fields of adapter_config.json. Absent fields take
// PEFT's defaults.
func parseConfig(data []byte) (Config, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil {
		return Config{}, fmt.Errorf("want a JSON object: %w", err)
	}
	if fields == nil {
		return Config{}, fmt.Errorf("the config is null, want an object")
	}
	c := DefaultConfig()
	c.PeftType = ""
	c.TaskType = ""
	var err error
	decode := func(name string, parse func(json.RawMessage) error) {
		raw, ok := fields[name]
		if !ok || err != nil {
			return
		}
		if e := parse(raw); e != nil {
			err = fmt.Errorf("%s: %w", name, e)
		}
	}
	decode("peft_type", stringField(&c.PeftType))
	decode("task_type", stringField(&c.TaskType))
	decode("base_model_name_or_path", stringField(&c.BaseModelNameOrPath))
	decode("revision", stringField(&c.Revision))
	decode("r", func(raw json.RawMessage) error { return json.Unmarshal(raw, &c.R) })
	decode("lora_alpha", func(raw json.RawMessage) error { return json.Unmarshal(raw, &c.LoraAlpha) })
	decode("lora_dropout", func(raw json.RawMessage) error { return json.Unmarshal(raw, &c.LoraDropout) })
	decode("use_rslora", boolField(&c.UseRslora))
	decode("target_modules", targetsField(&c.TargetModules, true))
	decode("exclude_modules", targetsField(&c.ExcludeModules, false))
	decode("init_lora_weights", func(raw json.RawMessage) error {
		var v any
		if err := json.Unmarshal(raw, &v); err != nil {
			return err
		}
		switch v.(type) {
		case bool, string:
			c.InitLoraWeights = v
			return nil
		}
		return fmt.Errorf("%s: want true, false or a string", raw)
	})
	decode("rank_pattern", func(raw json.RawMessage) error {
		return decodeObject(raw, func(key string, value json.RawMessage) error {
			var r int
			if err := json.Unmarshal(value, &r); err != nil {
				return fmt.Errorf("key %q: %w", key, err)
			}
			c.RankPattern = append(c.RankPattern, RankOverride{key, r})
			return nil
		})
	})
	decode("alpha_pattern", func(raw json.RawMessage) error {
		return decodeObject(raw, func(key string, value json.RawMessage) error {
			var a float64
			if err := json.Unmarshal(value, &a); err != nil {
				return fmt.Errorf("key %q: %w", key, err)
			}
			c.AlphaPattern = append(c.AlphaPattern, AlphaOverride{key, a})
			return nil
		})
	})
	decode("fan_in_fan_out", boolField(&c.FanInFanOut))
	decode("bias", stringField(&c.Bias))
	decode("modules_to_save", func(raw json.RawMessage) error {
		var names []string
		if err := json.Unmarshal(raw, &names); err != nil {
			return err
		}
		c.ModulesToSave = nil // [] and null both mean none
		if len(names) > 0 {
			c.ModulesToSave = names
		}
		return nil
	})
	decode("use_dora", boolField(&c.UseDora))
	if err != nil {
		return Config{}, err
	}

	for name, raw := range fields {
		if slices.Contains(typedFields, name) || name == "runtime_config" {
			continue // runtime_config: PEFT drops it on reading, it is not saved
		}
		// Compact, so that equal configs compare equal whatever the
		// layout of the file they came from.
		var buf bytes.Buffer
		if err := json.Compact(&buf, raw); err != nil {
			return Config{}, fmt.Errorf("%s: %w", name, err)
		}
		if c.Extra == nil {
			c.Extra = make(map[string]json.RawMessage)
		}
		c.Extra[name] = buf.Bytes()
	}
	return c, nil
}

// stringField decodes a string or null ("").
func stringField(dst *string) func(json.RawMessage) error {
	return func(raw json.RawMessage) error {
		var s *string
		if err := json.Unmarshal(raw, &s); err != nil {
			return err
		}
		*dst = ""
		if s != nil {
			*dst = *s
		}
		return nil
	}
}

// boolField decodes a bool; null is false, as Python treats None.
func boolField(dst *bool) func(json.RawMessage) error {
	return func(raw json.RawMessage) error {
		var b *bool
		if err := json.Unmarshal(raw, &b); err != nil {
			return err
		}
		*dst = b != nil && *b
		return nil
	}
}

// targetsField decodes null, a string or a list of strings. "all-linear"
// is special in target_modules only: in exclude_modules PEFT reads it as a
// regular expression.
func targetsField(dst *Targets, allLinearOK bool) func(json.RawMessage) error {
	return func(raw json.RawMessage) error {
		var v any
		if err := json.Unmarshal(raw, &v); err != nil {
			return err
		}
		switch v := v.(type) {
		case nil:
			*dst = Targets{}
			return nil
		case string:
			*dst = TargetString(v)
			if !allLinearOK {
				*dst = Targets{Kind: TargetRegex, Regex: v}
			}
			return nil
		case []any:
			var names []string // nil when empty, as TargetNames() gives
			for _, e := range v {
				s, ok := e.(string)
				if !ok {
					return fmt.Errorf("%s: want a list of strings", raw)
				}
				names = append(names, s)
			}
			*dst = Targets{Kind: TargetList, Names: names}
			return nil
		}
		return fmt.Errorf("%s: want a string, a list of strings or null", raw)
	}
}

// decodeObject calls fn for each member of a JSON object, in order; null is
// an empty object.
func decodeObject(raw json.RawMessage, fn func(key string, value json.RawMessage) error) error {
	if string(bytes.TrimSpace(raw)) == "null" {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return fmt.Errorf("%s: want an object", raw)
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		key := tok.(string) // object keys are strings in valid JSON
		var value json.RawMessage
		if err := dec.Decode(&value); err != nil {
			return fmt.Errorf("key %q: %w", key, err)
		}
		if err := fn(key, value); err != nil {
			return err
		}
	}
	return nil
}

// peftDefaults are the fields PEFT (since 0.10) writes in every
// adapter_config.json that Config does not hold, with their default
// values; Encode writes them when Extra does not have them. Fields added by
// later versions (peft_version, lora_bias, ...) are left out, so that older
// PEFT versions load the file without warnings; their defaults are what
// this package computes.
var peftDefaults = map[string]string{
	"auto_mapping":        "null",
	"inference_mode":      "true",
	"layer_replication":   "null",
	"layers_pattern":      "null",
	"layers_to_transform": "null",
	"loftq_config":        "{}",
	"megatron_config":     "null",
	"megatron_core":       `"megatron.core"`,
}

// Encode returns the config as PEFT writes it: a JSON object with sorted
// keys, indented by two spaces, no final newline (json.dumps(indent=2,
// sort_keys=True) in PeftConfigMixin.save_pretrained). The order of
// rank_pattern and alpha_pattern is kept, since it decides which key wins.
func (c Config) Encode() ([]byte, error) {
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("lora: config: %w", err)
	}
	out := make(map[string]json.RawMessage, len(peftDefaults)+len(typedFields)+len(c.Extra))
	for name, value := range peftDefaults {
		out[name] = json.RawMessage(value)
	}
	for name, value := range c.Extra {
		out[name] = value
	}
	out["peft_type"] = jsonString(c.PeftType)
	out["task_type"] = jsonStringOrNull(c.TaskType)
	out["base_model_name_or_path"] = jsonStringOrNull(c.BaseModelNameOrPath)
	out["revision"] = jsonStringOrNull(c.Revision)
	out["r"] = json.RawMessage(strconv.Itoa(c.R))
	out["lora_alpha"] = jsonNumber(c.LoraAlpha)
	out["lora_dropout"] = jsonFloat(c.LoraDropout)
	out["use_rslora"] = jsonBool(c.UseRslora)
	out["target_modules"] = c.TargetModules.json()
	if c.ExcludeModules.Kind != TargetNone {
		out["exclude_modules"] = c.ExcludeModules.json()
	}
	out["init_lora_weights"] = jsonAny(c.InitLoraWeights)
	var rank bytes.Buffer
	rank.WriteByte('{')
	for i, p := range c.RankPattern {
		if i > 0 {
			rank.WriteByte(',')
		}
		fmt.Fprintf(&rank, "%s:%d", jsonString(p.Pattern), p.Rank)
	}
	rank.WriteByte('}')
	out["rank_pattern"] = rank.Bytes()
	var alpha bytes.Buffer
	alpha.WriteByte('{')
	for i, p := range c.AlphaPattern {
		if i > 0 {
			alpha.WriteByte(',')
		}
		fmt.Fprintf(&alpha, "%s:%s", jsonString(p.Pattern), jsonNumber(p.Alpha))
	}
	alpha.WriteByte('}')
	out["alpha_pattern"] = alpha.Bytes()
	out["fan_in_fan_out"] = jsonBool(c.FanInFanOut)
	out["bias"] = jsonString(c.Bias)
	out["modules_to_save"] = json.RawMessage("null")
	out["use_dora"] = jsonBool(c.UseDora)

	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(out); err != nil { // map keys are sorted
		return nil, fmt.Errorf("lora: config: %w", err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// Write writes the config to path atomically.
func (c Config) Write(path string) error {
	data, err := c.Encode()
	if err != nil {
		return fmt.Errorf("lora: write %s: %w", path, err)
	}
	if err := atomicfile.WriteBytes(path, data); err != nil {
		return fmt.Errorf("lora: write %s: %w", path, err)
	}
	return nil
}

func (t Targets) json() json.RawMessage {
	switch t.Kind {
	case TargetList:
		var buf bytes.Buffer
		buf.WriteByte('[')
		for i, name := range t.Names {
			if i > 0 {
				buf.WriteByte(',')
			}
			buf.Write(jsonString(name))
		}
		buf.WriteByte(']')
		return buf.Bytes()
	case TargetRegex, TargetAllLinear:
		return jsonString(t.Regex)
	}
	return json.RawMessage("null")
}

func jsonString(s string) json.RawMessage {
	b, _ := json.Marshal(s) // a string always encodes
	return b
}

func jsonStringOrNull(s string) json.RawMessage {
	if s == "" {
		return json.RawMessage("null")
	}
	return jsonString(s)
}

func jsonBool(b bool) json.RawMessage {
	return json.RawMessage(strconv.FormatBool(b))
}

func jsonAny(v any) json.RawMessage {
	b, _ := json.Marshal(v) // validate allowed only bools and strings
	return b
}

// jsonNumber writes an integral value as an integer, as PEFT writes an int
// field (lora_alpha 16, not 16.0), and other values in the shortest form
// that reads back the same.
func jsonNumber(f float64) json.RawMessage {
	if f == math.Trunc(f) && math.Abs(f) < 1<<53 {
		return json.RawMessage(strconv.FormatInt(int64(f), 10))
	}
	b, _ := json.Marshal(f) // validate refused NaN and infinities
	return b
}

// jsonFloat writes a float field as Python does: an integral value with
// ".0" (lora_dropout 0.0).
func jsonFloat(f float64) json.RawMessage {
	b, _ := json.Marshal(f) // validate refused NaN and infinities
	if !bytes.ContainsAny(b, ".eE") {
		b = append(b, ".0"...)
	}
	return b
}
