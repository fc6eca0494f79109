// Package demodata checks the files of the demonstration (testdata/demo:
// the pretrained model, its tokenizer and the demo task) against the
// SHA256SUMS committed beside them, so that an accidental change to a file
// that tools/demo built is caught.
package demodata

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// SumsFile lists "<sha256>  <path>" per file, as sha256sum writes it; the
// paths are relative to its directory.
const SumsFile = "SHA256SUMS"

// ReadSums reads dir's SumsFile: path (slash-separated, relative to dir) to
// hex digest.
func ReadSums(dir string) (map[string]string, error) {
	data, err := os.ReadFile(filepath.Join(dir, SumsFile))
	if err != nil {
		return nil, fmt.Errorf("demodata: %w", err)
	}
	sums := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if line == "" {
			continue
		}
		sum, path, ok := strings.Cut(line, "  ")
		if !ok || len(sum) != 64 || path == "" {
			return nil, fmt.Errorf("demodata: %s line %d: want \"<sha256>  <path>\"", SumsFile, n)
		}
		if _, dup := sums[path]; dup {
			return nil, fmt.Errorf("demodata: %s line %d: %s is listed twice", SumsFile, n, path)
		}
		sums[path] = sum
	}
	return sums, nil
}

// Verify checks every file listed in dir's SumsFile against its digest.
// The error names each file that is missing or differs. (Files not listed,
// such as PROVENANCE.md and the configs, which are edited by hand, are not
// checked.)
func Verify(dir string) error {
	sums, err := ReadSums(dir)
	if err != nil {
		return err
	}
	paths := make([]string, 0, len(sums))
	for p := range sums {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	var problems []string
	for _, p := range paths {
		got, err := fileSum(filepath.Join(dir, filepath.FromSlash(p)))
		switch {
		case errors.Is(err, fs.ErrNotExist):
			problems = append(problems, p+": listed in "+SumsFile+" but missing")
		case err != nil:
			return fmt.Errorf("demodata: %w", err)
		case got != sums[p]:
			problems = append(problems, p+": sha256 "+got+", "+SumsFile+" says "+sums[p])
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("demodata: %s: %d file(s) differ from %s (rebuilt on purpose? tools/demo/build.sh rewrites it):\n  %s",
			dir, len(problems), SumsFile, strings.Join(problems, "\n  "))
	}
	return nil
}

func fileSum(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("reading %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
