package main

import (
	"github.com/compassml/compass/engine"
	"github.com/compassml/compass/lora"
	"github.com/compassml/compass/model"
)

// attachAdapter loads the PEFT adapter in dir onto m.
func attachAdapter(m *model.Model, dir string) error {
	a, err := lora.Load(dir, m.LinearModules())
	if err != nil {
		return err
	}
	return m.AttachAdapter(a)
}

// loadEncoder returns the tokenizer of the model directory, or nil when it
// has none (then only {"ids": ...} input works).
func loadEncoder(dir string) (engine.Encoder, error) {
	return nil, nil
}
