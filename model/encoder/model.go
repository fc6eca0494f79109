package encoder

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"github.com/compassml/compass/tensor"
	"github.com/compassml/compass/tensor/safetensors"
)

// Model is an XLM-R or BERT encoder with its frozen weights (in their
// checkpoint dtype, views into the mapped safetensors on the CPU).
type Model struct {
	Config *Config
	be     tensor.Backend
	ckpt   *safetensors.Checkpoint // keeps the mapped weights alive; nil for in-memory models
	owned  []*tensor.Tensor        // backend copies of the weights, freed by Close

	wordEmb, posEmb *tensor.Tensor // [V, H], [P, H]
	typeEmb         *tensor.Tensor // [H]: row 0 of the token type embeddings (type 0 only)
	embNorm         layerNorm
	layers          []layer
}

type layerNorm struct{ w, b *tensor.Tensor }

// linear is y = x W^T + b with W [out, in].
type linear struct{ w, b *tensor.Tensor }

type layer struct {
	q, k, v, attnOut linear
	attnNorm         layerNorm
	inter, out       linear
	outNorm          layerNorm
}

// weightPrefixes are what checkpoints put before the encoder's tensor
// names: nothing (XLMRobertaModel, BertModel, e5), or the base model's
// attribute in the heads' checkpoints (XLMRobertaForMaskedLM's "roberta.").
var weightPrefixes = map[Family][]string{
	FamilyXLMRoberta: {"", "roberta."},
	FamilyBert:       {"", "bert."},
}

// Load opens a checkpoint directory (config.json and model.safetensors or a
// sharded index) and binds every weight, in its stored dtype. be runs the
// computation; nil means the CPU backend. A missing or mis-shaped tensor,
// or a vocabulary that does not match the embedding, is an error naming
// the file.
func Load(dir string, be tensor.Backend) (*Model, error) {
	cfg, err := LoadConfig(filepath.Join(dir, "config.json"))
	if err != nil {
		return nil, err
	}
	ckpt, err := safetensors.OpenDir(dir)
	if err != nil {
		if _, statErr := os.Stat(filepath.Join(dir, "pytorch_model.bin")); statErr == nil {
			return nil, fmt.Errorf("encoder: %s has pytorch_model.bin but no safetensors: compass reads only *.safetensors (pickle files can run code when loaded); convert it, e.g. with safetensors' convert script", dir)
		} else if !errors.Is(statErr, fs.ErrNotExist) {
			return nil, fmt.Errorf("encoder: %w", statErr)
		}
		return nil, fmt.Errorf("encoder: %w", err)
	}
	where := filepath.Join(dir, safetensors.SingleFileName)
	if files := ckpt.Files(); len(files) != 1 {
		where = filepath.Join(dir, safetensors.IndexFileName)
	}
	m, err := New(cfg, be, ckpt.Tensor)
	if err != nil {
		ckpt.Close()
		return nil, fmt.Errorf("encoder: %s: %w", where, err)
	}
	m.ckpt = ckpt
	return m, nil
}

// New builds a model from cfg, taking each tensor by its HF name from get
// (with or without the family's prefix; whichever the word embeddings are
// found under is used for all). The pooler is not needed.
func New(cfg *Config, be tensor.Backend, get func(name string) (*tensor.Tensor, error)) (*Model, error) {
	if be == nil {
		be = tensor.NewCPU()
	}
	m := &Model{Config: cfg, be: be}
	prefix, err := findPrefix(cfg, get)
	if err != nil {
		return nil, err
	}
	want := map[string][]int{}
	for _, s := range cfg.Tensors() {
		want[s.Name] = s.Shape
	}
	load := func(name string) (*tensor.Tensor, error) {
		t, err := get(prefix + name)
		if err != nil {
			return nil, err
		}
		if !t.DType().IsFloat() {
			return nil, fmt.Errorf("%s%s: dtype %s, want F32, BF16 or F16", prefix, name, t.DType())
		}
		if shape := want[name]; !slices.Equal(t.Shape(), shape) {
			if name == "embeddings.word_embeddings.weight" && len(shape) == 2 && t.Rank() == 2 && t.Dim(1) == shape[1] {
				return nil, fmt.Errorf("%s%s: %d rows, but config.json's vocab_size is %d", prefix, name, t.Dim(0), cfg.VocabSize)
			}
			return nil, fmt.Errorf("%s%s: shape %v != %v", prefix, name, t.Shape(), shape)
		}
		dev, err := be.ToDevice(t)
		if err != nil {
			return nil, fmt.Errorf("%s%s: %w", prefix, name, err)
		}
		if dev != t {
			m.owned = append(m.owned, dev)
		}
		return dev, nil
	}
	var errs []error
	get1 := func(dst **tensor.Tensor, name string) {
		t, err := load(name)
		errs = append(errs, err)
		*dst = t
	}
	getLinear := func(l *linear, name string) {
		get1(&l.w, name+".weight")
		get1(&l.b, name+".bias")
	}
	getNorm := func(n *layerNorm, name string) {
		get1(&n.w, name+".weight")
		get1(&n.b, name+".bias")
	}
	var types *tensor.Tensor
	get1(&m.wordEmb, "embeddings.word_embeddings.weight")
	get1(&m.posEmb, "embeddings.position_embeddings.weight")
	get1(&types, "embeddings.token_type_embeddings.weight")
	getNorm(&m.embNorm, "embeddings.LayerNorm")
	m.layers = make([]layer, cfg.NumHiddenLayers)
	for i := range m.layers {
		l, p := &m.layers[i], fmt.Sprintf("encoder.layer.%d.", i)
		getLinear(&l.q, p+"attention.self.query")
		getLinear(&l.k, p+"attention.self.key")
		getLinear(&l.v, p+"attention.self.value")
		getLinear(&l.attnOut, p+"attention.output.dense")
		getNorm(&l.attnNorm, p+"attention.output.LayerNorm")
		getLinear(&l.inter, p+"intermediate.dense")
		getLinear(&l.out, p+"output.dense")
		getNorm(&l.outNorm, p+"output.LayerNorm")
	}
	if err := errors.Join(errs...); err != nil {
		m.Close()
		return nil, err
	}
	// Every token has type 0 (one segment): its row is added to all.
	row, err := types.Slice(0, 1)
	if err == nil {
		m.typeEmb, err = row.Reshape(cfg.HiddenSize)
	}
	if err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}

// findPrefix returns the prefix under which get finds the word embeddings.
func findPrefix(cfg *Config, get func(string) (*tensor.Tensor, error)) (string, error) {
	const name = "embeddings.word_embeddings.weight"
	for _, p := range weightPrefixes[cfg.Family] {
		if _, err := get(p + name); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("no tensor %s (nor with a prefix %q): not a %s checkpoint", name, weightPrefixes[cfg.Family][1:], cfg.Family)
}

// Close frees the weights' device copies and releases the mapped
// checkpoint. The model must not be used after.
func (m *Model) Close() error {
	for _, t := range m.owned {
		m.be.Free(t)
	}
	m.owned = nil
	if m.ckpt == nil {
		return nil
	}
	err := m.ckpt.Close()
	m.ckpt = nil
	return err
}

// Backend returns the backend the model computes on.
func (m *Model) Backend() tensor.Backend { return m.be }
