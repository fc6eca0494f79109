package engine

import (
	"fmt"

	"github.com/compassml/compass/model/encoder"
	"github.com/compassml/compass/model/tokenizer"
	"github.com/compassml/compass/sampling/embed"
	"github.com/compassml/compass/tensor"
)

// EmbedEncoder is a sentence encoder (XLM-R or BERT, e.g.
// multilingual-e5) loaded for embedding: the model, its tokenizer, and its
// signature. Several Embed calls can share one.
type EmbedEncoder struct {
	Model     *encoder.Model
	Signature string // embed.ModelSignature of the directory
	tok       *tokenizer.Tokenizer
}

// LoadEmbedEncoder loads the encoder checkpoint in dir (config.json,
// safetensors, tokenizer.json) on be (nil: the CPU). The caller closes it.
func LoadEmbedEncoder(dir string, be tensor.Backend) (*EmbedEncoder, error) {
	sig, err := embed.ModelSignature(dir)
	if err != nil {
		return nil, err
	}
	tok, err := tokenizer.Load(dir)
	if err != nil {
		return nil, fmt.Errorf("embed: encoder %s: %w", dir, err)
	}
	m, err := encoder.Load(dir, be)
	if err != nil {
		return nil, err
	}
	return &EmbedEncoder{Model: m, Signature: sig, tok: tok}, nil
}

// Embedder returns an embedder over the encoder with options o.
func (m *EmbedEncoder) Embedder(o embed.EncoderOptions) (*embed.EncoderEmbedder, error) {
	return embed.NewEncoderEmbedder(m.Model, m.tok, m.Signature, o)
}

// Close releases the encoder.
func (m *EmbedEncoder) Close() { m.Model.Close() }
