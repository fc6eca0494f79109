package model

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/compassml/compass/tensor/safetensors"
)

// CheckpointHash changes with any one tensor rewritten in place (every
// tensor of the demonstration checkpoint, 11 MiB, in turn: the sign of
// each element flipped), with a chat template added, and with the config;
// a copy in another directory has the same hash.
func TestCheckpointHash(t *testing.T) {
	src := filepath.Join("..", "testdata", "demo", "model")
	dir := t.TempDir()
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, e.Name()), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	hash := func() string {
		t.Helper()
		h, err := CheckpointHash(dir)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	base := hash()
	if orig, err := CheckpointHash(src); err != nil || orig != base {
		t.Fatalf("a copy hashes to %s, the original to %s (%v)", base, orig, err)
	}

	weights := filepath.Join(dir, "model.safetensors")
	f, err := safetensors.Open(weights)
	if err != nil {
		t.Fatal(err)
	}
	var infos []safetensors.TensorInfo
	for _, name := range f.Names() {
		info, _ := f.Info(name)
		infos = append(infos, info)
	}
	f.Close()
	data, err := os.ReadFile(weights)
	if err != nil {
		t.Fatal(err)
	}
	flip := func(info safetensors.TensorInfo) {
		size := int64(info.DType.Bits() / 8)
		for at := info.Begin + size - 1; at < info.End; at += size {
			data[at] ^= 0x80 // little-endian: the sign is the last byte's top bit
		}
		if err := os.WriteFile(weights, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, info := range infos {
		flip(info)
		if hash() == base {
			t.Errorf("tensor %s %v rewritten in place: the hash is unchanged", info.Name, info.Shape)
		}
		flip(info)
	}
	if hash() != base {
		t.Fatal("the weights restored: another hash")
	}

	if err := os.WriteFile(filepath.Join(dir, "chat_template.jinja"), []byte("{{ messages }}"), 0o644); err != nil {
		t.Fatal(err)
	}
	withTemplate := hash()
	if withTemplate == base {
		t.Errorf("a chat template added: the hash is unchanged")
	}
	cfg := filepath.Join(dir, "config.json")
	b, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg, append(b, ' '), 0o644); err != nil {
		t.Fatal(err)
	}
	if hash() == withTemplate {
		t.Errorf("config.json changed: the hash is unchanged")
	}
	if _, err := CheckpointHash(filepath.Join(dir, "missing")); err == nil {
		t.Errorf("a directory without config.json has a hash")
	}
}
