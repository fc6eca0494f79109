package encoder

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
)

// Family is the encoder family: it decides the position ids and the
// prefix of the weight names.
type Family string

const (
	FamilyXLMRoberta Family = "xlm-roberta" // XLMRobertaModel
	FamilyBert       Family = "bert"        // BertModel
)

// architectures maps the HF architectures compass loads to their family.
// The masked-LM heads are checkpoints of the same encoder plus an lm_head
// that is not read.
var architectures = map[string]Family{
	"XLMRobertaModel":       FamilyXLMRoberta,
	"XLMRobertaForMaskedLM": FamilyXLMRoberta,
	"BertModel":             FamilyBert,
	"BertForMaskedLM":       FamilyBert,
}

// Config is a parsed config.json of an XLM-R or BERT encoder. Absent keys
// hold the defaults of transformers' XLMRobertaConfig / BertConfig.
type Config struct {
	Architecture string // e.g. "XLMRobertaModel"; "" when the config lists none
	Family       Family // from model_type

	HiddenSize            int
	NumHiddenLayers       int
	NumAttentionHeads     int
	IntermediateSize      int
	VocabSize             int
	MaxPositionEmbeddings int
	TypeVocabSize         int
	LayerNormEps          float64
	PadTokenID            int
	HiddenAct             string // always "gelu" once parsed
	PositionEmbeddingType string // always "absolute" once parsed
	TorchDtype            string // "float32", ...; "" when absent
}

// rawConfig mirrors the keys read; pointers tell absent keys from zeros.
type rawConfig struct {
	Architectures         []string `json:"architectures"`
	ModelType             string   `json:"model_type"`
	HiddenSize            *int     `json:"hidden_size"`
	NumHiddenLayers       *int     `json:"num_hidden_layers"`
	NumAttentionHeads     *int     `json:"num_attention_heads"`
	IntermediateSize      *int     `json:"intermediate_size"`
	VocabSize             *int     `json:"vocab_size"`
	MaxPositionEmbeddings *int     `json:"max_position_embeddings"`
	TypeVocabSize         *int     `json:"type_vocab_size"`
	LayerNormEps          *float64 `json:"layer_norm_eps"`
	PadTokenID            *int     `json:"pad_token_id"`
	HiddenAct             *string  `json:"hidden_act"`
	PositionEmbeddingType *string  `json:"position_embedding_type"`
	TorchDtype            string   `json:"torch_dtype"`
	Dtype                 string   `json:"dtype"` // transformers 5's name of torch_dtype
}

// LoadConfig reads and parses the config.json at path; errors name it.
func LoadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("encoder: load config: %w", err)
	}
	c, err := ParseConfig(data)
	if err != nil {
		return nil, fmt.Errorf("encoder: %s: %w", path, err)
	}
	return c, nil
}

// ParseConfig parses the contents of a config.json.
func ParseConfig(data []byte) (*Config, error) {
	var raw rawConfig
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("parse config: %w", err)
	}
	c := &Config{Family: Family(raw.ModelType), TorchDtype: raw.TorchDtype}
	if c.TorchDtype == "" {
		c.TorchDtype = raw.Dtype
	}
	switch c.Family {
	case FamilyXLMRoberta, FamilyBert:
	case "":
		return nil, fmt.Errorf("no model_type: want %q or %q", FamilyXLMRoberta, FamilyBert)
	default:
		return nil, fmt.Errorf("model_type %q is not an encoder compass loads (%q or %q)", raw.ModelType, FamilyXLMRoberta, FamilyBert)
	}
	for _, a := range raw.Architectures {
		f, ok := architectures[a]
		if !ok || f != c.Family {
			continue
		}
		c.Architecture = a
		break
	}
	if len(raw.Architectures) > 0 && c.Architecture == "" {
		known := slices.Sorted(func(yield func(string) bool) {
			for a, f := range architectures {
				if f == c.Family && !yield(a) {
					return
				}
			}
		})
		return nil, fmt.Errorf("architectures %q: none is a %s encoder compass loads (%q)", raw.Architectures, c.Family, known)
	}

	// The sizes have class defaults (those of bert-base), but a config
	// without them describes some other model: require them.
	for _, r := range []struct {
		key string
		src *int
		dst *int
	}{
		{"hidden_size", raw.HiddenSize, &c.HiddenSize},
		{"num_hidden_layers", raw.NumHiddenLayers, &c.NumHiddenLayers},
		{"num_attention_heads", raw.NumAttentionHeads, &c.NumAttentionHeads},
		{"intermediate_size", raw.IntermediateSize, &c.IntermediateSize},
		{"vocab_size", raw.VocabSize, &c.VocabSize},
	} {
		if r.src == nil {
			return nil, fmt.Errorf("missing %q", r.key)
		}
		*r.dst = *r.src
	}
	// XLMRobertaConfig and BertConfig: max_position_embeddings 512,
	// type_vocab_size 2, layer_norm_eps 1e-12, pad_token_id 1 (XLM-R) or 0
	// (BERT), hidden_act "gelu", position_embedding_type "absolute".
	c.MaxPositionEmbeddings = intOr(raw.MaxPositionEmbeddings, 512)
	c.TypeVocabSize = intOr(raw.TypeVocabSize, 2)
	c.LayerNormEps = 1e-12
	if raw.LayerNormEps != nil {
		c.LayerNormEps = *raw.LayerNormEps
	}
	c.PadTokenID = intOr(raw.PadTokenID, map[Family]int{FamilyXLMRoberta: 1, FamilyBert: 0}[c.Family])
	c.HiddenAct = "gelu"
	if raw.HiddenAct != nil {
		c.HiddenAct = *raw.HiddenAct
	}
	if c.HiddenAct != "gelu" {
		return nil, fmt.Errorf("hidden_act %q is not supported (only \"gelu\", the exact erf form)", c.HiddenAct)
	}
	c.PositionEmbeddingType = "absolute"
	if raw.PositionEmbeddingType != nil {
		c.PositionEmbeddingType = *raw.PositionEmbeddingType
	}
	if c.PositionEmbeddingType != "absolute" {
		return nil, fmt.Errorf("position_embedding_type %q is not supported (only \"absolute\")", c.PositionEmbeddingType)
	}
	return c, c.validate()
}

func intOr(p *int, def int) int {
	if p == nil {
		return def
	}
	return *p
}

// The largest sizes and layer count a config may have (see validate).
const (
	maxConfigSize   = 1 << 20
	maxConfigLayers = 1 << 12
)

func (c *Config) validate() error {
	// The bounds are far above any published encoder, and low enough that
	// Tensors (one entry per layer) and NumParameters (products of these
	// in int64) neither take hours nor overflow.
	for _, v := range []struct {
		key string
		n   int
		max int
	}{
		{"hidden_size", c.HiddenSize, maxConfigSize}, {"num_hidden_layers", c.NumHiddenLayers, maxConfigLayers},
		{"num_attention_heads", c.NumAttentionHeads, maxConfigSize}, {"intermediate_size", c.IntermediateSize, maxConfigSize},
		{"vocab_size", c.VocabSize, maxConfigSize}, {"max_position_embeddings", c.MaxPositionEmbeddings, maxConfigSize},
		{"type_vocab_size", c.TypeVocabSize, maxConfigSize},
	} {
		if v.n <= 0 {
			return fmt.Errorf("%s must be positive, got %d", v.key, v.n)
		}
		if v.n > v.max {
			return fmt.Errorf("%s %d is beyond what compass loads (at most %d)", v.key, v.n, v.max)
		}
	}
	if c.HiddenSize%c.NumAttentionHeads != 0 {
		return fmt.Errorf("hidden_size %d is not a multiple of num_attention_heads %d", c.HiddenSize, c.NumAttentionHeads)
	}
	if !(c.LayerNormEps > 0) {
		return fmt.Errorf("layer_norm_eps must be positive, got %v", c.LayerNormEps)
	}
	if c.PadTokenID < 0 || c.PadTokenID >= c.VocabSize {
		return fmt.Errorf("pad_token_id %d is outside the vocabulary of %d", c.PadTokenID, c.VocabSize)
	}
	if c.Family == FamilyXLMRoberta && c.PadTokenID+1 >= c.MaxPositionEmbeddings {
		return fmt.Errorf("max_position_embeddings %d leaves no position after the padding index %d", c.MaxPositionEmbeddings, c.PadTokenID)
	}
	return nil
}

// HeadDim is the size of one attention head.
func (c *Config) HeadDim() int { return c.HiddenSize / c.NumAttentionHeads }

// MaxTokens is the longest sequence, special tokens included, the position
// embeddings cover: max_position_embeddings for BERT, and for XLM-R that
// less the padding index and one, since its positions start after the
// padding index (514 - 2 = 512 for xlm-roberta-base).
func (c *Config) MaxTokens() int {
	if c.Family == FamilyXLMRoberta {
		return c.MaxPositionEmbeddings - c.PadTokenID - 1
	}
	return c.MaxPositionEmbeddings
}

// TensorSpec is the name (without the "roberta."/"bert." prefix some
// checkpoints add) and shape of one tensor.
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

// PoolerTensors are the names of the pooler's tensors: HF's
// XLMRobertaModel and BertModel have one (add_pooling_layer=True), which
// the published checkpoints carry, but sentence embeddings do not use it,
// so a checkpoint without it loads too.
var PoolerTensors = []string{"pooler.dense.weight", "pooler.dense.bias"}

// Tensors lists the tensors of the model with HF's names and shapes, in
// HF's state_dict order: the embeddings, each layer, the pooler.
func (c *Config) Tensors() []TensorSpec {
	h, inter := c.HiddenSize, c.IntermediateSize
	specs := []TensorSpec{
		{"embeddings.word_embeddings.weight", []int{c.VocabSize, h}},
		{"embeddings.position_embeddings.weight", []int{c.MaxPositionEmbeddings, h}},
		{"embeddings.token_type_embeddings.weight", []int{c.TypeVocabSize, h}},
		{"embeddings.LayerNorm.weight", []int{h}},
		{"embeddings.LayerNorm.bias", []int{h}},
	}
	for i := 0; i < c.NumHiddenLayers; i++ {
		p := fmt.Sprintf("encoder.layer.%d.", i)
		for _, l := range []struct {
			name    string
			out, in int
		}{
			{"attention.self.query", h, h}, {"attention.self.key", h, h}, {"attention.self.value", h, h},
			{"attention.output.dense", h, h}, {"attention.output.LayerNorm", h, 0},
			{"intermediate.dense", inter, h},
			{"output.dense", h, inter}, {"output.LayerNorm", h, 0},
		} {
			if l.in == 0 { // a LayerNorm
				specs = append(specs, TensorSpec{p + l.name + ".weight", []int{l.out}})
			} else {
				specs = append(specs, TensorSpec{p + l.name + ".weight", []int{l.out, l.in}})
			}
			specs = append(specs, TensorSpec{p + l.name + ".bias", []int{l.out}})
		}
	}
	specs = append(specs,
		TensorSpec{PoolerTensors[0], []int{h, h}},
		TensorSpec{PoolerTensors[1], []int{h}})
	return specs
}

// NumParameters is the number of elements of all tensors of Tensors, the
// pooler included, as HF's num_parameters counts XLMRobertaModel and
// BertModel.
func (c *Config) NumParameters() int64 {
	var n int64
	for _, t := range c.Tensors() {
		n += t.Numel()
	}
	return n
}
