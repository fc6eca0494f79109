package model

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/compassml/compass/tensor"
	"github.com/compassml/compass/tensor/safetensors"
)

const tinyQwen = `{"architectures":["Qwen2ForCausalLM"],"model_type":"qwen2","hidden_size":16,
	"intermediate_size":24,"num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,
	"vocab_size":50,"torch_dtype":"bfloat16"}`

// writeCheckpoint writes config.json and a model.safetensors holding the
// tensors the config implies, with edit applied to the list first.
func writeCheckpoint(t *testing.T, config string, edit func([]TensorSpec) []TensorSpec) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := ParseConfig([]byte(config))
	if err != nil {
		t.Fatal(err)
	}
	specs := cfg.Tensors()
	if edit != nil {
		specs = edit(specs)
	}
	var entries []safetensors.Entry
	for _, s := range specs {
		entries = append(entries, safetensors.EntryFromTensor(s.Name, tensor.New(tensor.BF16, s.Shape...)))
	}
	if err := safetensors.Write(filepath.Join(dir, "model.safetensors"), entries, map[string]string{"format": "pt"}); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestInspectCompleteCheckpoint(t *testing.T) {
	dir := writeCheckpoint(t, tinyQwen, nil)
	in, err := Inspect(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !in.HasWeights || len(in.Missing)+len(in.Unexpected)+len(in.Mismatched) != 0 {
		t.Fatalf("complete checkpoint reported as %+v", in)
	}
	if got := in.StoredByDT["BF16"]; got != in.Parameters {
		t.Errorf("stored BF16 elements %d != parameters %d", got, in.Parameters)
	}
	st, _ := os.Stat(filepath.Join(dir, "model.safetensors"))
	if in.BytesOnDisk != st.Size() {
		t.Errorf("bytes on disk %d, file is %d", in.BytesOnDisk, st.Size())
	}
}

func TestInspectReportsDifferences(t *testing.T) {
	dir := writeCheckpoint(t, tinyQwen, func(specs []TensorSpec) []TensorSpec {
		var out []TensorSpec
		for _, s := range specs {
			switch s.Name {
			case "model.layers.1.self_attn.k_proj.bias":
				continue // missing
			case "model.layers.0.mlp.up_proj.weight":
				s.Shape = []int{16, 24} // transposed
			}
			out = append(out, s)
		}
		return append(out, TensorSpec{Name: "model.layers.0.self_attn.rotary_emb.inv_freq", Shape: []int{2}})
	})
	in, err := Inspect(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(in.Missing, []string{"model.layers.1.self_attn.k_proj.bias"}) {
		t.Errorf("missing = %v", in.Missing)
	}
	if len(in.Mismatched) != 1 || !strings.Contains(in.Mismatched[0], "up_proj.weight: shape [16 24], want [24 16]") {
		t.Errorf("mismatched = %v", in.Mismatched)
	}
	if !slices.Equal(in.Unexpected, []string{"model.layers.0.self_attn.rotary_emb.inv_freq"}) {
		t.Errorf("unexpected = %v", in.Unexpected)
	}
}

func TestInspectConfigOnlyAndErrors(t *testing.T) {
	in, err := Inspect(filepath.Join("..", "testdata", "configs", "qwen2.5-7b.json"))
	if err != nil {
		t.Fatal(err)
	}
	if in.HasWeights || in.Parameters != 7_615_616_512 {
		t.Errorf("config only: has weights %v, parameters %d", in.HasWeights, in.Parameters)
	}
	dir := t.TempDir()
	if _, err := Inspect(dir); err == nil || !strings.Contains(err.Error(), "config.json") {
		t.Errorf("directory without config.json: err = %v", err)
	}
	if _, err := Inspect(filepath.Join(dir, "nope")); err == nil {
		t.Error("missing path: no error")
	}
	// A corrupt safetensors file is an error naming it, not a report.
	bad := writeCheckpoint(t, tinyQwen, nil)
	if err := os.WriteFile(filepath.Join(bad, "model.safetensors"), []byte("\x10\x00\x00\x00\x00\x00\x00\x00{not json}      "), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Inspect(bad); err == nil || !strings.Contains(err.Error(), "model.safetensors") {
		t.Errorf("corrupt safetensors: err = %v", err)
	}
}
