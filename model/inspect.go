package model

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"

	"github.com/compassml/compass/tensor/safetensors"
)

// Inspection describes a checkpoint directory: its config and how the
// safetensors it holds match what the config says they should be.
type Inspection struct {
	Path       string  `json:"path"`
	Config     *Config `json:"config"`
	Parameters int64   `json:"parameters"` // derived from the config

	HasWeights  bool             `json:"has_weights"` // false for a bare config.json
	Files       []string         `json:"files,omitempty"`
	BytesOnDisk int64            `json:"bytes_on_disk,omitempty"`
	StoredByDT  map[string]int64 `json:"stored_parameters_by_dtype,omitempty"` // elements per safetensors dtype

	Missing    []string `json:"missing,omitempty"`    // expected by the config, absent
	Unexpected []string `json:"unexpected,omitempty"` // present, not expected
	Mismatched []string `json:"mismatched,omitempty"` // "name: shape [a b], want [c d]"
}

// Inspect reads path, either a checkpoint directory (config.json and, if
// present, model.safetensors or a sharded index) or a config.json file, and
// compares the stored tensors with the ones the config implies. A checkpoint
// that does not match is not an error: the differences are listed.
func Inspect(path string) (*Inspection, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("inspect: %w", err)
	}
	configPath, dir := path, ""
	if st.IsDir() {
		configPath, dir = filepath.Join(path, "config.json"), path
	}
	cfg, err := LoadConfig(configPath)
	if err != nil {
		return nil, err
	}
	in := &Inspection{Path: path, Config: cfg, Parameters: cfg.NumParameters()}
	if dir == "" {
		return in, nil
	}
	if !exists(filepath.Join(dir, safetensors.IndexFileName)) && !exists(filepath.Join(dir, safetensors.SingleFileName)) {
		return in, nil // a directory with only config.json
	}
	ckpt, err := safetensors.OpenDir(dir)
	if err != nil {
		return nil, err
	}
	defer ckpt.Close()
	in.HasWeights = true
	in.Files = ckpt.Files()
	in.BytesOnDisk = ckpt.SizeOnDisk()
	in.StoredByDT = map[string]int64{}

	expected := map[string][]int{}
	for _, t := range cfg.Tensors() {
		expected[t.Name] = t.Shape
	}
	for _, name := range ckpt.Names() {
		info, _ := ckpt.Info(name)
		n := int64(1)
		for _, d := range info.Shape {
			n *= int64(d)
		}
		in.StoredByDT[info.DType.String()] += n
		want, ok := expected[name]
		switch {
		case !ok:
			in.Unexpected = append(in.Unexpected, name)
		case !slices.Equal(want, info.Shape):
			in.Mismatched = append(in.Mismatched, fmt.Sprintf("%s: shape %v, want %v", name, info.Shape, want))
		}
		delete(expected, name)
	}
	for name := range expected {
		in.Missing = append(in.Missing, name)
	}
	sort.Strings(in.Missing)
	return in, nil
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
