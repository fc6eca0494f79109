package model

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// CheckpointHash names a Hugging Face checkpoint directory by its content,
// as a hex SHA-256: config.json, the tokenizer files, the safetensors
// index, and of each weight file its name, size, header and
// hashSamples samples of hashSampleBytes spread evenly over it. Weights
// rewritten in place (a fine-tune saved over the base) differ everywhere,
// so a sample sees them; a copy of the checkpoint elsewhere, with new
// modification times, has the same hash; and reading a few MiB costs
// nothing next to loading the weights. Embedding caches
// (embed.ModelSignature) and a training run's identity (what --resume
// checks) both key on it.
func CheckpointHash(dir string) (string, error) {
	h := sha256.New()
	for _, name := range []string{"config.json", "tokenizer.json", "tokenizer_config.json"} {
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

// CheckpointHash's samples of each weight file.
const (
	hashSamples     = 16
	hashSampleBytes = 64 << 10
)

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

// hashWeights writes a safetensors file's name, size, header (its first
// 8 bytes give the header's length) and evenly spread samples into h.
func hashWeights(h io.Writer, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return err
	}
	size := info.Size()
	fmt.Fprintf(h, "%s\x00%d\x00", filepath.Base(path), size)
	var n [8]byte
	if _, err := io.ReadFull(f, n[:]); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	header := min(int64(binary.LittleEndian.Uint64(n[:])), size-8)
	if _, err := io.CopyN(h, f, header); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	buf := make([]byte, hashSampleBytes)
	for i := range int64(hashSamples) {
		off := i * max(size-hashSampleBytes, 0) / (hashSamples - 1)
		k, err := f.ReadAt(buf, off)
		if err != nil && err != io.EOF {
			return fmt.Errorf("%s: %w", path, err)
		}
		h.Write(buf[:k])
	}
	return nil
}
