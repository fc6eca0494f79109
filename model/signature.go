package model

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/compassml/compass/tensor/safetensors"
)

// CheckpointHash names a Hugging Face checkpoint directory by its content,
// as a hex SHA-256: config.json, the tokenizer files (the chat template
// too), the safetensors index, and of each weight file its name, size,
// header and, of every tensor, hashWindow bytes at its start, middle and
// end. A tensor rewritten in place (a fine-tune or a merged adapter saved
// over the base) differs everywhere, so its windows see it, even where the
// change is one projection of many; a copy of the checkpoint elsewhere,
// with new modification times, has the same hash; and the windows are a
// few MiB for an 8B model, nothing next to loading its weights. Embedding
// caches (embed.ModelSignature), adapt's step addresses and a training
// run's identity (what --resume checks) key on it.
func CheckpointHash(dir string) (string, error) {
	h := sha256.New()
	for _, name := range []string{"config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"} {
		if err := hashFile(h, filepath.Join(dir, name), name != "config.json"); err != nil {
			return "", fmt.Errorf("model: checkpoint hash: %w", err)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "", fmt.Errorf("model: checkpoint hash: %w", err)
	}
	for _, e := range entries { // sorted by name
		var err error
		switch {
		case strings.HasSuffix(e.Name(), ".safetensors.index.json"):
			err = hashFile(h, filepath.Join(dir, e.Name()), false)
		case strings.HasSuffix(e.Name(), ".safetensors"):
			err = hashWeights(h, filepath.Join(dir, e.Name()))
		}
		if err != nil {
			return "", fmt.Errorf("model: checkpoint hash: %w", err)
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// hashWindow is how many bytes CheckpointHash reads at each of a tensor's
// three places (all of a tensor of up to three windows).
const hashWindow = 4 << 10

// hashFile writes a file's name and content into h; a missing file is
// skipped when optional.
func hashFile(h io.Writer, path string, optional bool) error {
	f, err := os.Open(path)
	if optional && os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	fmt.Fprintf(h, "%s\x00", filepath.Base(path))
	_, err = io.Copy(h, f)
	return err
}

// hashWeights writes a safetensors file's name, size and header into h,
// then each tensor's windows, in the header's order.
func hashWeights(h io.Writer, path string) error {
	f, err := safetensors.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	header, err := f.Header()
	if err != nil {
		return err
	}
	fmt.Fprintf(h, "%s\x00%d\x00", filepath.Base(path), f.Size())
	h.Write(header)
	for _, name := range f.Names() {
		b, err := f.Bytes(name)
		if err != nil {
			return err
		}
		if len(b) <= 3*hashWindow {
			h.Write(b)
			continue
		}
		mid := len(b)/2 - hashWindow/2
		h.Write(b[:hashWindow])
		h.Write(b[mid : mid+hashWindow])
		h.Write(b[len(b)-hashWindow:])
	}
	return nil
}
