// Command tinymodel writes a small demonstration checkpoint: a random
// two-layer llama-family decoder (float32) over a byte-level vocabulary,
// with a real tokenizer.json and tokenizer_config.json, so that every
// compass command runs on it in seconds, as it does on a published
// checkpoint:
//
//	go run ./tools/tinymodel DIR
package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/compassml/compass/internal/tinymodel"
	"github.com/compassml/compass/model"
	"github.com/compassml/compass/tensor"
)

func main() {
	// A lone "-h" or "--help" is a request for help, not a directory name.
	if len(os.Args) != 2 || strings.HasPrefix(os.Args[1], "-") {
		fmt.Fprintln(os.Stderr, "usage: go run ./tools/tinymodel DIR")
		os.Exit(2)
	}
	dir := os.Args[1]
	if _, err := model.WriteRandomCheckpoint(dir, []byte(tinymodel.Config), tensor.F32, 1); err != nil {
		fmt.Fprintln(os.Stderr, "tinymodel:", err)
		os.Exit(1)
	}
	if err := tinymodel.WriteTokenizer(dir); err != nil {
		fmt.Fprintln(os.Stderr, "tinymodel:", err)
		os.Exit(1)
	}
	fmt.Println("wrote", dir)
}
