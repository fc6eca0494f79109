package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/compassml/compass/dataset"
	"github.com/compassml/compass/sampling"
	"github.com/urfave/cli/v3"
)

func embedCommand() *cli.Command {
	schemas := make([]string, 0, len(dataset.Schemas()))
	for _, s := range dataset.Schemas() {
		schemas = append(schemas, string(s))
	}
	return &cli.Command{
		Name:  "embed",
		Usage: "embed the records of a data set with a model: mean-pooled, unit-length last hidden states",
		Description: "Reads JSONL, CSV/TSV or Parquet (plain or .zst) with the schema of the Aya Dataset,\n" +
			"Global-MMLU, MMLU-ProX or a plain {\"text\", \"language\"}, and writes one vector per record to\n" +
			"--output (.safetensors: tensor \"embeddings\" F32 [N, hidden]; or .npy) and the records' id,\n" +
			"language and source, line i for row i, to the same name with .rows.jsonl. Vectors are cached\n" +
			"under --cache by model and text, so a re-run embeds only new texts.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "model", Required: true, Usage: "checkpoint directory (config.json, safetensors, tokenizer.json)"},
			&cli.StringFlag{Name: "input", Required: true, Usage: "data set file: .jsonl, .csv, .tsv or .parquet, optionally .zst"},
			&cli.StringFlag{Name: "schema", Value: string(dataset.SchemaAuto), Usage: strings.Join(schemas, ", ")},
			&cli.StringFlag{Name: "language", Usage: "the language of records whose data names none (e.g. sw for a Global-MMLU config)"},
			&cli.StringFlag{Name: "output", Value: "embeddings.safetensors", Usage: "matrix to write (atomically): .safetensors or .npy"},
			&cli.StringFlag{Name: "cache", Usage: "embedding cache directory (default: the user cache directory's compass/embeddings)"},
			&cli.BoolFlag{Name: "no-cache", Usage: "neither read nor write the embedding cache"},
			&cli.IntFlag{Name: "batch-tokens", Value: sampling.DefaultBatchTokens, Usage: "most tokens in one forward pass, padding included"},
			&cli.IntFlag{Name: "max-len", Value: sampling.DefaultMaxLen, Usage: "truncate each text to this many tokens"},
			&cli.BoolFlag{Name: "skip-bad", Usage: "skip rows that cannot be read and report how many, instead of stopping"},
			&cli.BoolFlag{Name: "quiet", Usage: "no progress line on stderr"},
			deviceFlag(),
		},
		Action: func(ctx context.Context, cmd *cli.Command) error {
			if cmd.NArg() != 0 {
				return fmt.Errorf("embed: unexpected arguments %v", cmd.Args().Slice())
			}
			schema, err := dataset.ParseSchema(cmd.String("schema"))
			if err != nil {
				return fmt.Errorf("embed: %w", err)
			}
			output := cmd.String("output")
			if ext := strings.ToLower(filepath.Ext(output)); ext != ".safetensors" && ext != ".npy" {
				return fmt.Errorf("embed: --output %s: want a .safetensors or .npy file", output)
			}
			errw := cmd.Root().ErrWriter

			// The data set first: a bad input fails before a model is loaded.
			r, err := dataset.Open(cmd.String("input"), dataset.Options{
				Schema:   schema,
				Language: cmd.String("language"),
				SkipBad:  cmd.Bool("skip-bad"),
			})
			if err != nil {
				return err
			}
			defer r.Close()
			var progress *sampling.EmbedProgress
			if !cmd.Bool("quiet") && embedIsTerminal(errw) {
				progress = sampling.NewEmbedProgress(errw, r.Progress)
			}

			be, release, err := openBackend(cmd)
			if err != nil {
				return err
			}
			defer release()
			m, err := loadModel(cmd.String("model"), "", be)
			if err != nil {
				return err
			}
			defer m.Close()
			me, err := modelEmbedder(cmd, m, progress)
			if err != nil {
				return err
			}
			var e sampling.Embedder = me
			var cached *sampling.CachedEmbedder
			if !cmd.Bool("no-cache") {
				cacheDir, err := embedCacheDir(cmd.String("cache"))
				if err != nil {
					return err
				}
				if cached, err = sampling.NewCachedEmbedder(me, cacheDir, errw); err != nil {
					return err
				}
				defer cached.Close()
				cached.Progress = progress
				e = cached
			}

			emb, err := sampling.EmbedRecords(r, e, me.Dim(), progress)
			progress.Finish()
			if err != nil {
				return err
			}
			if err := sampling.SaveEmbeddings(output, emb); err != nil {
				return err
			}
			n := emb.Vectors.Dim(0)
			fmt.Fprintf(errw, "embedded %d records (schema %s) into %s and %s", n, r.Schema(), output, sampling.RowsPath(output))
			if cached != nil {
				hits, misses := cached.Stats()
				fmt.Fprintf(errw, "; %d by the model, %d from the cache %s", misses, hits, cached.Cache().Path())
			}
			fmt.Fprintln(errw)
			if skipped, first := r.Skipped(); skipped > 0 {
				fmt.Fprintf(errw, "skipped %d bad rows; the first: %v\n", skipped, first)
			}
			return nil
		},
	}
}

// embedCacheDir returns the cache directory: the flag's, or compass/embeddings
// under the user's cache directory ($XDG_CACHE_HOME, ~/.cache).
func embedCacheDir(flag string) (string, error) {
	if flag != "" {
		return flag, nil
	}
	base, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("embed: no cache directory (%v): give --cache or --no-cache", err)
	}
	return filepath.Join(base, "compass", "embeddings"), nil
}

// embedIsTerminal reports whether w is a terminal, where a progress line that
// redraws itself belongs; not a file or a pipe.
func embedIsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
