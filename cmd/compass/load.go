package main

import (
	"os"
	"path/filepath"

	"github.com/compassml/compass/engine"
	"github.com/compassml/compass/lora"
	"github.com/compassml/compass/model"
	"github.com/compassml/compass/model/tokenizer"
	"github.com/compassml/compass/tensor"
)

// attachAdapter loads the PEFT adapter in dir onto m.
func attachAdapter(m *model.Model, dir string) error {
	a, err := lora.Load(dir, m.LinearModules())
	if err != nil {
		return err
	}
	return m.AttachAdapter(a)
}

// loadModel loads the checkpoint in dir on be and, when adapter is not
// "", attaches that PEFT adapter. The caller closes the model.
func loadModel(dir, adapter string, be tensor.Backend) (*model.Model, error) {
	m, err := model.Load(dir, be)
	if err != nil {
		return nil, err
	}
	if adapter != "" {
		if err := attachAdapter(m, adapter); err != nil {
			m.Close()
			return nil, err
		}
	}
	return m, nil
}

// loadEncoder returns the tokenizer of the model directory (its
// tokenizer.json), or nil when it has none: then only {"ids": ...} input
// works, and text input is an error that says so.
func loadEncoder(dir string) (engine.Encoder, error) {
	if _, err := os.Stat(filepath.Join(dir, "tokenizer.json")); err != nil {
		return nil, nil
	}
	tok, err := tokenizer.Load(dir)
	if err != nil {
		return nil, err
	}
	return textEncoder{tok}, nil
}

// textEncoder encodes text as the model saw it in training: with the
// tokenizer's special tokens (Llama-3's BOS).
type textEncoder struct{ tok *tokenizer.Tokenizer }

func (e textEncoder) Encode(text string) ([]int, error) { return e.tok.Encode(text, true) }
