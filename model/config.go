package model

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"strings"
)

// Family is the decoder family a checkpoint belongs to. It decides the
// tensor layout, the biases and the defaults of absent config keys.
type Family string

const (
	FamilyLlama Family = "llama" // LlamaForCausalLM
	FamilyQwen2 Family = "qwen2" // Qwen2ForCausalLM
	FamilyPhi3  Family = "phi3"  // Phi3ForCausalLM
)

// architectures maps the supported HF architecture names to their family.
var architectures = map[string]Family{
	"LlamaForCausalLM": FamilyLlama,
	"Qwen2ForCausalLM": FamilyQwen2,
	"Phi3ForCausalLM":  FamilyPhi3,
}

// RopeType is the kind of rotary position embedding.
type RopeType string

const (
	RopeDefault  RopeType = "default"  // inv_freq_i = theta^(-2i/d)
	RopeLlama3   RopeType = "llama3"   // Llama 3.1 frequency-band rescaling
	RopeLongRope RopeType = "longrope" // Phi-3 LongRoPE: per-frequency factors
)

// RopeScaling holds the config.json "rope_scaling" object (or the
// transformers 5 "rope_parameters" object). Fields that do not apply to
// Type are zero.
type RopeScaling struct {
	Type RopeType

	// Factor is the context extension factor. llama3 requires it; for
	// longrope it is only used when the config has no top-level
	// original_max_position_embeddings (HF uses max/original then).
	Factor float64

	// llama3 only.
	LowFreqFactor                 float64
	HighFreqFactor                float64
	OriginalMaxPositionEmbeddings int

	// longrope only: one factor per rotary frequency (RotaryDims/2 each).
	// ShortFactor is used while the sequence fits the original context,
	// LongFactor beyond it.
	ShortFactor []float64
	LongFactor  []float64
	// AttentionFactor is the explicit "attention_factor"; 0 when absent, in
	// which case RopeAttentionFactor derives it.
	AttentionFactor float64
}

// Config is a parsed config.json: everything that changes the math of the
// decoder. Absent keys hold the value transformers uses for the family.
type Config struct {
	Architecture string // e.g. "LlamaForCausalLM"
	Family       Family

	HiddenSize        int
	IntermediateSize  int
	NumHiddenLayers   int
	NumAttentionHeads int
	NumKeyValueHeads  int
	HeadDim           int // the "head_dim" key when present, else HiddenSize/NumAttentionHeads
	VocabSize         int

	RMSNormEps float64
	RopeTheta  float64

	MaxPositionEmbeddings int
	// OriginalMaxPositionEmbeddings is the top-level key Phi-3 carries
	// (default 4096 for phi3); 0 when the config has none.
	OriginalMaxPositionEmbeddings int
	RopeScaling                   RopeScaling
	// PartialRotaryFactor is the share of each head's dimensions that
	// rotate (Phi-3); 1 elsewhere.
	PartialRotaryFactor float64

	QKVBias    bool // q, k and v projections have a bias (Qwen2 always, Llama with attention_bias)
	OutputBias bool // o_proj has a bias (Llama with attention_bias)
	MLPBias    bool // gate, up and down projections have a bias (Llama with mlp_bias)

	TieWordEmbeddings bool   // lm_head shares model.embed_tokens.weight
	TorchDtype        string // "bfloat16", ...; "" when absent
	HiddenAct         string // always "silu" once parsed

	BOSTokenID  *int  // nil when absent or null
	EOSTokenIDs []int // "eos_token_id" as a list; empty when absent or null

	// Sliding-window attention. Qwen2 checkpoints record a window but only
	// use it when UseSlidingWindow is true, which is rejected. Phi-3 applies
	// SlidingWindow (0: none) to every layer; it is a no-op when it is at
	// least MaxPositionEmbeddings, as in Phi-4-mini.
	UseSlidingWindow bool
	SlidingWindow    int
	MaxWindowLayers  int
}

// familyDefaults are the values of transformers' LlamaConfig, Qwen2Config
// and Phi3Config for keys a config.json may leave out.
type familyDefaults struct {
	rmsNormEps            float64
	maxPositionEmbeddings int
	// numKeyValueHeads is used when the key is absent; 0 means "same as
	// num_attention_heads". An explicit null always means the latter.
	numKeyValueHeads int
	// originalMaxPositionEmbeddings is Phi-3's top-level key; 0: none.
	originalMaxPositionEmbeddings int
	maxWindowLayers               int
}

var defaultsByFamily = map[Family]familyDefaults{
	// transformers LlamaConfig: rms_norm_eps 1e-6, max_position_embeddings
	// 2048, num_key_value_heads None -> num_attention_heads.
	FamilyLlama: {rmsNormEps: 1e-6, maxPositionEmbeddings: 2048},
	// Qwen2Config: rms_norm_eps 1e-6, max_position_embeddings 32768,
	// num_key_value_heads 32 (not None), max_window_layers 28.
	FamilyQwen2: {rmsNormEps: 1e-6, maxPositionEmbeddings: 32768, numKeyValueHeads: 32, maxWindowLayers: 28},
	// Phi3Config: rms_norm_eps 1e-5, max_position_embeddings 4096,
	// original_max_position_embeddings 4096, num_key_value_heads None.
	FamilyPhi3: {rmsNormEps: 1e-5, maxPositionEmbeddings: 4096, originalMaxPositionEmbeddings: 4096},
}

// All three families default rope_theta to 10000, hidden_act to "silu" and
// tie_word_embeddings to false.
const defaultRopeTheta = 10000.0

// rawConfig mirrors the config.json keys compass reads. Pointers tell an
// absent (or null) key from a zero value.
type rawConfig struct {
	Architectures []string `json:"architectures"`
	ModelType     string   `json:"model_type"`

	HiddenSize        *int            `json:"hidden_size"`
	IntermediateSize  *int            `json:"intermediate_size"`
	NumHiddenLayers   *int            `json:"num_hidden_layers"`
	NumAttentionHeads *int            `json:"num_attention_heads"`
	NumKeyValueHeads  json.RawMessage `json:"num_key_value_heads"`
	HeadDim           *int            `json:"head_dim"`
	VocabSize         *int            `json:"vocab_size"`

	RMSNormEps *float64 `json:"rms_norm_eps"`
	RopeTheta  *float64 `json:"rope_theta"`

	MaxPositionEmbeddings         *int            `json:"max_position_embeddings"`
	OriginalMaxPositionEmbeddings *int            `json:"original_max_position_embeddings"`
	RopeScaling                   json.RawMessage `json:"rope_scaling"`
	RopeParameters                json.RawMessage `json:"rope_parameters"`
	PartialRotaryFactor           *float64        `json:"partial_rotary_factor"`

	AttentionBias *bool `json:"attention_bias"`
	MLPBias       *bool `json:"mlp_bias"`

	TieWordEmbeddings *bool   `json:"tie_word_embeddings"`
	TorchDtype        string  `json:"torch_dtype"`
	Dtype             string  `json:"dtype"` // transformers 5 name of torch_dtype
	HiddenAct         *string `json:"hidden_act"`

	BOSTokenID *int            `json:"bos_token_id"`
	EOSTokenID json.RawMessage `json:"eos_token_id"`

	UseSlidingWindow *bool    `json:"use_sliding_window"`
	SlidingWindow    *int     `json:"sliding_window"`
	MaxWindowLayers  *int     `json:"max_window_layers"`
	LayerTypes       []string `json:"layer_types"`
}

// rawRope mirrors "rope_scaling" / "rope_parameters".
type rawRope struct {
	RopeType string `json:"rope_type"`
	Type     string `json:"type"` // the name before transformers 4.43

	Factor                        *float64  `json:"factor"`
	LowFreqFactor                 *float64  `json:"low_freq_factor"`
	HighFreqFactor                *float64  `json:"high_freq_factor"`
	OriginalMaxPositionEmbeddings *int      `json:"original_max_position_embeddings"`
	ShortFactor                   []float64 `json:"short_factor"`
	LongFactor                    []float64 `json:"long_factor"`
	AttentionFactor               *float64  `json:"attention_factor"`

	// transformers 5 moves these two into rope_parameters.
	RopeTheta           *float64 `json:"rope_theta"`
	PartialRotaryFactor *float64 `json:"partial_rotary_factor"`
}

// ParseConfig parses the contents of a config.json.
func ParseConfig(data []byte) (*Config, error) {
	c, err := parseConfig(data)
	if err != nil {
		return nil, fmt.Errorf("model: parse config: %w", err)
	}
	return c, nil
}

// LoadConfig reads and parses the config.json at path. Errors name the path.
func LoadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("model: load config: %w", err)
	}
	c, err := parseConfig(data)
	if err != nil {
		return nil, fmt.Errorf("model: load config %s: %w", path, err)
	}
	return c, nil
}

func parseConfig(data []byte) (*Config, error) {
	var raw rawConfig
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, err
	}
	arch, family, err := resolveArchitecture(raw.Architectures, raw.ModelType)
	if err != nil {
		return nil, err
	}
	def := defaultsByFamily[family]

	c := &Config{Architecture: arch, Family: family}

	// The sizes have class defaults in transformers (those of Llama-2-7B,
	// Qwen2-7B, Phi-3-mini), but a config.json without them describes
	// some other model: require them rather than guess.
	required := []struct {
		key string
		src *int
		dst *int
	}{
		{"hidden_size", raw.HiddenSize, &c.HiddenSize},
		{"intermediate_size", raw.IntermediateSize, &c.IntermediateSize},
		{"num_hidden_layers", raw.NumHiddenLayers, &c.NumHiddenLayers},
		{"num_attention_heads", raw.NumAttentionHeads, &c.NumAttentionHeads},
		{"vocab_size", raw.VocabSize, &c.VocabSize},
	}
	for _, r := range required {
		if r.src == nil {
			return nil, fmt.Errorf("missing %q", r.key)
		}
		*r.dst = *r.src
	}

	c.NumKeyValueHeads, err = parseKeyValueHeads(raw.NumKeyValueHeads, c.NumAttentionHeads, def.numKeyValueHeads)
	if err != nil {
		return nil, err
	}

	c.RMSNormEps = def.rmsNormEps
	if raw.RMSNormEps != nil {
		c.RMSNormEps = *raw.RMSNormEps
	}
	c.MaxPositionEmbeddings = def.maxPositionEmbeddings
	if raw.MaxPositionEmbeddings != nil {
		c.MaxPositionEmbeddings = *raw.MaxPositionEmbeddings
	}
	c.TieWordEmbeddings = raw.TieWordEmbeddings != nil && *raw.TieWordEmbeddings
	c.TorchDtype = raw.TorchDtype
	if c.TorchDtype == "" {
		c.TorchDtype = raw.Dtype
	}

	c.HiddenAct = "silu"
	if raw.HiddenAct != nil {
		c.HiddenAct = *raw.HiddenAct
	}
	if c.HiddenAct != "silu" {
		return nil, fmt.Errorf("hidden_act %q is not supported (only \"silu\")", c.HiddenAct)
	}

	c.BOSTokenID = raw.BOSTokenID
	if c.EOSTokenIDs, err = parseTokenIDs(raw.EOSTokenID); err != nil {
		return nil, fmt.Errorf("eos_token_id: %w", err)
	}

	switch family {
	case FamilyLlama:
		// LlamaAttention: bias=config.attention_bias on q, k, v and o;
		// LlamaMLP: bias=config.mlp_bias on gate, up and down.
		attnBias := raw.AttentionBias != nil && *raw.AttentionBias
		c.QKVBias, c.OutputBias = attnBias, attnBias
		c.MLPBias = raw.MLPBias != nil && *raw.MLPBias
	case FamilyQwen2:
		// Qwen2Attention: q, k, v bias=True, o_proj bias=False, whatever
		// the config says; Qwen2MLP has no bias.
		c.QKVBias = true
	case FamilyPhi3:
		// Phi3Attention and Phi3MLP: every Linear has bias=False; HF
		// ignores the attention_bias and mlp_bias keys Phi-4-mini carries.
	}

	if err := parseSlidingWindow(c, &raw, def); err != nil {
		return nil, err
	}
	if err := parseRope(c, &raw, def); err != nil {
		return nil, err
	}

	// head_dim: the explicit key (Llama 3.2, Qwen3-style configs) or
	// hidden/heads, as LlamaConfig and getattr(config, "head_dim", ...) in
	// the Qwen2 and Phi-3 attention modules do.
	if raw.HeadDim != nil {
		c.HeadDim = *raw.HeadDim
	} else if c.NumAttentionHeads > 0 {
		if c.HiddenSize%c.NumAttentionHeads != 0 {
			return nil, fmt.Errorf("hidden_size %d is not a multiple of num_attention_heads %d and there is no head_dim",
				c.HiddenSize, c.NumAttentionHeads)
		}
		c.HeadDim = c.HiddenSize / c.NumAttentionHeads
	}

	if err := c.validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// resolveArchitecture picks the supported architecture from the
// "architectures" list and checks it against "model_type", which is what
// transformers' AutoConfig actually dispatches on.
func resolveArchitecture(archs []string, modelType string) (string, Family, error) {
	var arch string
	for _, a := range archs {
		if _, ok := architectures[a]; ok {
			arch = a
			break
		}
	}
	if arch == "" && len(archs) > 0 {
		return "", "", fmt.Errorf("unsupported architecture %q (supported: LlamaForCausalLM, Qwen2ForCausalLM, Phi3ForCausalLM)",
			strings.Join(archs, ", "))
	}
	if arch == "" {
		// No "architectures": fall back on model_type.
		for a, f := range architectures {
			if string(f) == modelType {
				arch = a
			}
		}
		if arch == "" {
			return "", "", fmt.Errorf("no \"architectures\" and unsupported model_type %q (supported: llama, qwen2, phi3)", modelType)
		}
	}
	family := architectures[arch]
	if modelType != "" && modelType != string(family) {
		return "", "", fmt.Errorf("architecture %q does not match model_type %q (want %q)", arch, modelType, family)
	}
	return arch, family, nil
}

// parseKeyValueHeads reads num_key_value_heads: absent gives the family
// default, null gives num_attention_heads (as in every HF config class).
func parseKeyValueHeads(msg json.RawMessage, heads, familyDefault int) (int, error) {
	if len(msg) == 0 {
		if familyDefault != 0 {
			return familyDefault, nil
		}
		return heads, nil
	}
	if isNull(msg) {
		return heads, nil
	}
	var n int
	if err := json.Unmarshal(msg, &n); err != nil {
		return 0, fmt.Errorf("num_key_value_heads: %w", err)
	}
	return n, nil
}

// parseTokenIDs reads a token id that may be an int, a list of ints or null.
func parseTokenIDs(msg json.RawMessage) ([]int, error) {
	if len(msg) == 0 || isNull(msg) {
		return nil, nil
	}
	var one int
	if err := json.Unmarshal(msg, &one); err == nil {
		return []int{one}, nil
	}
	var many []int
	if err := json.Unmarshal(msg, &many); err != nil {
		return nil, fmt.Errorf("want an int or a list of ints, got %s", msg)
	}
	return many, nil
}

func isNull(msg json.RawMessage) bool {
	return bytes.Equal(bytes.TrimSpace(msg), []byte("null"))
}

func parseSlidingWindow(c *Config, raw *rawConfig, def familyDefaults) error {
	if raw.SlidingWindow != nil {
		c.SlidingWindow = *raw.SlidingWindow
	}
	switch c.Family {
	case FamilyQwen2:
		c.MaxWindowLayers = def.maxWindowLayers
		if raw.MaxWindowLayers != nil {
			c.MaxWindowLayers = *raw.MaxWindowLayers
		}
		c.UseSlidingWindow = raw.UseSlidingWindow != nil && *raw.UseSlidingWindow
		if c.UseSlidingWindow {
			return fmt.Errorf("use_sliding_window true (sliding_window %d, max_window_layers %d) is not supported",
				c.SlidingWindow, c.MaxWindowLayers)
		}
		// Qwen2Config ignores sliding_window unless use_sliding_window.
		c.SlidingWindow = 0
	case FamilyLlama:
		// LlamaAttention has no sliding window.
		c.SlidingWindow = 0
	}
	for i, t := range raw.LayerTypes {
		if t != "full_attention" {
			return fmt.Errorf("layer_types[%d] %q is not supported (only \"full_attention\")", i, t)
		}
	}
	return nil
}

// parseRope fills RopeTheta, PartialRotaryFactor, OriginalMaxPositionEmbeddings
// and RopeScaling.
func parseRope(c *Config, raw *rawConfig, def familyDefaults) error {
	ropeMsg, ropeKey := raw.RopeScaling, "rope_scaling"
	if len(ropeMsg) == 0 || isNull(ropeMsg) {
		ropeMsg, ropeKey = raw.RopeParameters, "rope_parameters"
	}
	var rope rawRope
	present := len(ropeMsg) > 0 && !isNull(ropeMsg)
	if present {
		if err := json.Unmarshal(ropeMsg, &rope); err != nil {
			return fmt.Errorf("%s: %w", ropeKey, err)
		}
	}

	c.RopeTheta = defaultRopeTheta
	switch {
	case raw.RopeTheta != nil:
		c.RopeTheta = *raw.RopeTheta
	case rope.RopeTheta != nil:
		c.RopeTheta = *rope.RopeTheta
	}

	c.PartialRotaryFactor = 1
	switch {
	case raw.PartialRotaryFactor != nil:
		c.PartialRotaryFactor = *raw.PartialRotaryFactor
	case rope.PartialRotaryFactor != nil:
		c.PartialRotaryFactor = *rope.PartialRotaryFactor
	}
	if c.Family != FamilyPhi3 && c.PartialRotaryFactor != 1 {
		// HF's llama and qwen2 attention rotate the whole head.
		return fmt.Errorf("partial_rotary_factor %v is not supported for %s", c.PartialRotaryFactor, c.Architecture)
	}

	c.OriginalMaxPositionEmbeddings = def.originalMaxPositionEmbeddings
	if raw.OriginalMaxPositionEmbeddings != nil {
		c.OriginalMaxPositionEmbeddings = *raw.OriginalMaxPositionEmbeddings
	}

	typ := rope.RopeType
	if typ == "" {
		typ = rope.Type
	}
	if c.Family == FamilyPhi3 && (typ == "su" || typ == "yarn") {
		// Phi3Config renames the types of early Phi-3 checkpoints.
		typ = string(RopeLongRope)
	}
	if typ == "" {
		// HF treats a rope object without a type as "default". Only allow
		// that when nothing in it would scale anything.
		if rope.Factor != nil || rope.LowFreqFactor != nil || rope.HighFreqFactor != nil ||
			rope.ShortFactor != nil || rope.LongFactor != nil || rope.AttentionFactor != nil {
			return fmt.Errorf("%s has scaling values but no \"rope_type\"", ropeKey)
		}
		typ = string(RopeDefault)
	}

	rs := RopeScaling{Type: RopeType(typ)}
	switch rs.Type {
	case RopeDefault:
	case RopeLlama3:
		if rope.Factor == nil || rope.LowFreqFactor == nil || rope.HighFreqFactor == nil || rope.OriginalMaxPositionEmbeddings == nil {
			return fmt.Errorf("%s: llama3 needs factor, low_freq_factor, high_freq_factor and original_max_position_embeddings", ropeKey)
		}
		rs.Factor = *rope.Factor
		rs.LowFreqFactor = *rope.LowFreqFactor
		rs.HighFreqFactor = *rope.HighFreqFactor
		rs.OriginalMaxPositionEmbeddings = *rope.OriginalMaxPositionEmbeddings
	case RopeLongRope:
		if rope.ShortFactor == nil || rope.LongFactor == nil {
			return fmt.Errorf("%s: longrope needs short_factor and long_factor", ropeKey)
		}
		rs.ShortFactor = rope.ShortFactor
		rs.LongFactor = rope.LongFactor
		if rope.Factor != nil {
			rs.Factor = *rope.Factor
		}
		if rope.AttentionFactor != nil {
			rs.AttentionFactor = *rope.AttentionFactor
		}
		if c.OriginalMaxPositionEmbeddings == 0 && rope.OriginalMaxPositionEmbeddings != nil {
			// transformers 5 keeps Phi-3's key inside rope_parameters.
			c.OriginalMaxPositionEmbeddings = *rope.OriginalMaxPositionEmbeddings
		}
		if c.OriginalMaxPositionEmbeddings == 0 && rope.Factor == nil {
			return fmt.Errorf("%s: longrope needs factor or a top-level original_max_position_embeddings", ropeKey)
		}
	default:
		return fmt.Errorf("%s: rope type %q is not supported (supported: default, llama3, longrope)", ropeKey, typ)
	}
	if c.Family == FamilyPhi3 && rs.Type == RopeLlama3 {
		// Phi3Config only accepts default and longrope.
		return fmt.Errorf("%s: rope type %q is not supported for %s", ropeKey, typ, c.Architecture)
	}
	c.RopeScaling = rs
	return nil
}

// The largest sizes and layer count a config may have (see validate).
const (
	maxConfigSize   = 1 << 20
	maxConfigLayers = 1 << 12
)

func (c *Config) validate() error {
	positive := []struct {
		key string
		v   int
	}{
		{"hidden_size", c.HiddenSize},
		{"intermediate_size", c.IntermediateSize},
		{"num_hidden_layers", c.NumHiddenLayers},
		{"num_attention_heads", c.NumAttentionHeads},
		{"num_key_value_heads", c.NumKeyValueHeads},
		{"head_dim", c.HeadDim},
		{"vocab_size", c.VocabSize},
		{"max_position_embeddings", c.MaxPositionEmbeddings},
	}
	for _, p := range positive {
		if p.v <= 0 {
			return fmt.Errorf("%s must be positive, got %d", p.key, p.v)
		}
	}
	// Far above any published model (hidden 16384, vocabulary 256k, 126
	// layers), and low enough that the tensor list and the parameter and
	// memory counts, products of these in int64, neither overflow nor
	// take a config with a typo in it hours and gigabytes to list.
	bounded := []struct {
		key string
		v   int
		max int
	}{
		{"hidden_size", c.HiddenSize, maxConfigSize},
		{"intermediate_size", c.IntermediateSize, maxConfigSize},
		{"num_hidden_layers", c.NumHiddenLayers, maxConfigLayers},
		{"num_attention_heads", c.NumAttentionHeads, maxConfigSize},
		{"head_dim", c.HeadDim, maxConfigSize},
		{"vocab_size", c.VocabSize, maxConfigSize},
	}
	for _, b := range bounded {
		if b.v > b.max {
			return fmt.Errorf("%s %d is beyond what compass loads (at most %d)", b.key, b.v, b.max)
		}
	}
	if q := c.NumAttentionHeads * c.HeadDim; q > maxConfigSize {
		return fmt.Errorf("num_attention_heads %d x head_dim %d = %d is beyond what compass loads (at most %d)",
			c.NumAttentionHeads, c.HeadDim, q, maxConfigSize)
	}
	if c.NumAttentionHeads%c.NumKeyValueHeads != 0 {
		return fmt.Errorf("num_attention_heads %d is not a multiple of num_key_value_heads %d",
			c.NumAttentionHeads, c.NumKeyValueHeads)
	}
	if !(c.RMSNormEps > 0) {
		return fmt.Errorf("rms_norm_eps must be positive, got %v", c.RMSNormEps)
	}
	if !(c.RopeTheta > 0) {
		return fmt.Errorf("rope_theta must be positive, got %v", c.RopeTheta)
	}
	if !(c.PartialRotaryFactor > 0 && c.PartialRotaryFactor <= 1) {
		return fmt.Errorf("partial_rotary_factor must be in (0, 1], got %v", c.PartialRotaryFactor)
	}
	rot := c.RotaryDims()
	if rot < 2 || rot%2 != 0 {
		return fmt.Errorf("rotary dims int(head_dim %d * partial_rotary_factor %v) = %d must be even and at least 2",
			c.HeadDim, c.PartialRotaryFactor, rot)
	}
	if c.OriginalMaxPositionEmbeddings < 0 {
		return fmt.Errorf("original_max_position_embeddings must not be negative, got %d", c.OriginalMaxPositionEmbeddings)
	}

	rs := c.RopeScaling
	switch rs.Type {
	case RopeLlama3:
		if !(rs.Factor > 0) || !(rs.LowFreqFactor > 0) || !(rs.HighFreqFactor > rs.LowFreqFactor) || rs.OriginalMaxPositionEmbeddings <= 0 {
			return fmt.Errorf("rope_scaling llama3: want factor > 0, 0 < low_freq_factor < high_freq_factor and original_max_position_embeddings > 0, got %v, %v, %v, %d",
				rs.Factor, rs.LowFreqFactor, rs.HighFreqFactor, rs.OriginalMaxPositionEmbeddings)
		}
	case RopeLongRope:
		for _, f := range []struct {
			key string
			v   []float64
		}{{"short_factor", rs.ShortFactor}, {"long_factor", rs.LongFactor}} {
			if len(f.v) != rot/2 {
				return fmt.Errorf("rope_scaling %s has %d values, want rotary dims / 2 = %d", f.key, len(f.v), rot/2)
			}
			for i, x := range f.v {
				if !(x > 0) {
					return fmt.Errorf("rope_scaling %s[%d] must be positive, got %v", f.key, i, x)
				}
			}
		}
		if rs.Factor < 0 || rs.AttentionFactor < 0 {
			return fmt.Errorf("rope_scaling longrope: factor %v and attention_factor %v must not be negative", rs.Factor, rs.AttentionFactor)
		}
	}
	return nil
}

// RotaryDims is the number of dimensions of each head that RoPE rotates:
// int(head_dim * partial_rotary_factor), as HF computes it (96 of 128 for
// Phi-4-mini). The rest pass through unchanged.
func (c *Config) RotaryDims() int {
	// Go's conversion truncates like Python's int(), on the same float64
	// product, so fractional factors give the same count as HF.
	return int(float64(c.HeadDim) * c.PartialRotaryFactor)
}

// RopeAttentionFactor is the factor HF multiplies cos and sin by. It is 1
// except for longrope, where it is the config's attention_factor when set
// and otherwise, as in transformers' _compute_longrope_parameters,
//
//	factor = max_position_embeddings / original_max_position_embeddings
//	         (rope_scaling.factor when the config has no original)
//	attention_factor = 1                                    if factor <= 1
//	                 = sqrt(1 + ln(factor) / ln(original))  otherwise
//
// with original = max_position_embeddings when the config has none.
// Phi-4-mini: sqrt(1 + ln(131072/4096) / ln(4096)) = sqrt(1 + ln 32 / ln 4096) ≈ 1.19024.
func (c *Config) RopeAttentionFactor() float64 {
	rs := c.RopeScaling
	if rs.Type != RopeLongRope {
		return 1
	}
	if rs.AttentionFactor > 0 {
		return rs.AttentionFactor
	}
	original := float64(c.OriginalMaxPositionEmbeddings)
	factor := rs.Factor
	if c.OriginalMaxPositionEmbeddings > 0 {
		factor = float64(c.MaxPositionEmbeddings) / original
	} else {
		original = float64(c.MaxPositionEmbeddings)
	}
	if factor <= 1 {
		return 1
	}
	return math.Sqrt(1 + math.Log(factor)/math.Log(original))
}

// TensorSpec is the name and shape of one tensor of a checkpoint. Linear
// weights are [out, in] (y = x W^T), biases and norm weights [n].
type TensorSpec struct {
	Name  string
	Shape []int
}

// Numel is the number of elements of the tensor.
func (t TensorSpec) Numel() int64 {
	n := int64(1)
	for _, d := range t.Shape {
		n *= int64(d)
	}
	return n
}

// Projection is one linear module of a decoder layer, named as in HF
// relative to "model.layers.{i}." (e.g. "self_attn.q_proj").
type Projection struct {
	Name string
	In   int
	Out  int
	Bias bool
}

// Projections lists the linear modules of one decoder layer in the order
// HF registers them. Phi-3 fuses q, k, v into self_attn.qkv_proj (q rows,
// then k, then v) and gate, up into mlp.gate_up_proj (gate rows, then up);
// Phi3Attention registers o_proj before qkv_proj.
func (c *Config) Projections() []Projection {
	h, inter := c.HiddenSize, c.IntermediateSize
	q := c.NumAttentionHeads * c.HeadDim
	kv := c.NumKeyValueHeads * c.HeadDim
	if c.Family == FamilyPhi3 {
		return []Projection{
			{"self_attn.o_proj", q, h, false},
			{"self_attn.qkv_proj", h, q + 2*kv, false},
			{"mlp.gate_up_proj", h, 2 * inter, false},
			{"mlp.down_proj", inter, h, false},
		}
	}
	return []Projection{
		{"self_attn.q_proj", h, q, c.QKVBias},
		{"self_attn.k_proj", h, kv, c.QKVBias},
		{"self_attn.v_proj", h, kv, c.QKVBias},
		{"self_attn.o_proj", q, h, c.OutputBias},
		{"mlp.gate_proj", h, inter, c.MLPBias},
		{"mlp.up_proj", h, inter, c.MLPBias},
		{"mlp.down_proj", inter, h, c.MLPBias},
	}
}

// Tensors lists the tensors of the checkpoint with the exact HF names and
// shapes, in HF's state_dict order: the embedding, each layer (its linear
// modules, weight before bias, then input_layernorm and
// post_attention_layernorm), the final norm, and lm_head unless the
// embeddings are tied.
func (c *Config) Tensors() []TensorSpec {
	h := c.HiddenSize
	specs := []TensorSpec{{"model.embed_tokens.weight", []int{c.VocabSize, h}}}
	projections := c.Projections()
	for i := 0; i < c.NumHiddenLayers; i++ {
		prefix := fmt.Sprintf("model.layers.%d.", i)
		for _, p := range projections {
			specs = append(specs, TensorSpec{prefix + p.Name + ".weight", []int{p.Out, p.In}})
			if p.Bias {
				specs = append(specs, TensorSpec{prefix + p.Name + ".bias", []int{p.Out}})
			}
		}
		specs = append(specs,
			TensorSpec{prefix + "input_layernorm.weight", []int{h}},
			TensorSpec{prefix + "post_attention_layernorm.weight", []int{h}},
		)
	}
	specs = append(specs, TensorSpec{"model.norm.weight", []int{h}})
	if !c.TieWordEmbeddings {
		specs = append(specs, TensorSpec{"lm_head.weight", []int{c.VocabSize, h}})
	}
	return specs
}

// NumParameters is the number of elements of all tensors of Tensors (a
// tied lm_head counts once, as in HF's num_parameters).
func (c *Config) NumParameters() int64 {
	var n int64
	for _, t := range c.Tensors() {
		n += t.Numel()
	}
	return n
}
