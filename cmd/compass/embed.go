package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/compassml/compass/dataset"
	"github.com/compassml/compass/engine"
	"github.com/compassml/compass/sampling/embed"
	"github.com/urfave/cli/v3"
)

func embedCommand() *cli.Command {
	schemas := make([]string, 0, len(dataset.Schemas()))
	for _, s := range dataset.Schemas() {
		schemas = append(schemas, string(s))
	}
	return &cli.Command{
		Name:  "embed",
		Usage: "embed the records of a data set with a model or a sentence encoder: mean-pooled, unit-length states",
		Description: "Reads JSONL, CSV/TSV or Parquet (plain or .zst) with the schema of the Aya Dataset,\n" +
			"Global-MMLU, MMLU-ProX or a plain {\"text\", \"language\"}, and writes one vector per record to\n" +
			"--output (.safetensors: tensor \"embeddings\" F32 [N, hidden]; or .npy) and the records' id,\n" +
			"language and source, line i for row i, to the same name with .rows.jsonl. Vectors are cached\n" +
			"under --cache by model and text, so a re-run embeds only new texts.\n\n" +
			"--model embeds with a decoder's last hidden states; --encoder DIR with a sentence encoder\n" +
			"(XLMRobertaModel or BertModel, e.g. intfloat/multilingual-e5-base), with --pooling and --prefix\n" +
			"(e5 wants \"query: \" on the usage set and \"passage: \" on the pool).",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "model", Usage: "decoder checkpoint directory (config.json, safetensors, tokenizer.json)"},
			&cli.StringFlag{Name: "encoder", Usage: "sentence encoder checkpoint directory (XLM-R or BERT: multilingual-e5), instead of --model"},
			&cli.StringFlag{Name: "pooling", Value: "mean", Usage: "with --encoder: mean (e5) or cls"},
			&cli.StringFlag{Name: "prefix", Usage: `with --encoder: put before every text, e.g. "query: " or "passage: " for e5`},
			&cli.StringFlag{Name: "input", Required: true, Usage: "data set file: .jsonl, .csv, .tsv or .parquet, optionally .zst"},
			&cli.StringFlag{Name: "schema", Value: string(dataset.SchemaAuto), Usage: strings.Join(schemas, ", ")},
			&cli.StringFlag{Name: "language", Usage: "the language of records whose data names none (e.g. sw for a Global-MMLU config)"},
			&cli.StringFlag{Name: "output", Value: "embeddings.safetensors", Usage: "matrix to write (atomically): .safetensors or .npy"},
			&cli.StringFlag{Name: "cache", Usage: "embedding cache directory (default: the user cache directory's compass/embeddings)"},
			&cli.BoolFlag{Name: "no-cache", Usage: "neither read nor write the embedding cache"},
			&cli.IntFlag{Name: "batch-tokens", Value: embed.DefaultBatchTokens, Usage: "most tokens in one forward pass, padding included"},
			&cli.IntFlag{Name: "max-len", HideDefault: true, Usage: fmt.Sprintf("truncate each text to this many tokens (default %d; an encoder's: what its positions cover)", embed.DefaultMaxLen)},
			&cli.BoolFlag{Name: "skip-bad", Usage: "skip rows that cannot be read and report how many, instead of stopping"},
			&cli.BoolFlag{Name: "quiet", Usage: "no progress line on stderr"},
			deviceFlag(),
		},
		Action: func(ctx context.Context, cmd *cli.Command) error {
			if cmd.NArg() != 0 {
				return fmt.Errorf("embed: unexpected arguments %v", cmd.Args().Slice())
			}
			if (cmd.String("model") == "") == (cmd.String("encoder") == "") {
				return fmt.Errorf("embed: give one of --model and --encoder")
			}
			if cmd.String("encoder") == "" && (cmd.IsSet("pooling") || cmd.IsSet("prefix")) {
				return fmt.Errorf("embed: --pooling and --prefix go with --encoder")
			}
			schema, err := dataset.ParseSchema(cmd.String("schema"))
			if err != nil {
				return fmt.Errorf("embed: %w", err)
			}
			if err := checkOutput("output", cmd.String("output"), "input", cmd.String("input")); err != nil {
				return fmt.Errorf("embed: %w", err)
			}
			if err := intFlagsAtLeast(cmd, "embed", "batch-tokens", 1); err != nil {
				return err
			}
			if cmd.IsSet("max-len") {
				if err := intFlagsAtLeast(cmd, "embed", "max-len", 1); err != nil {
					return err
				}
			}
			if l := cmd.String("language"); l != "" {
				if _, ok := dataset.NormalizeLanguage(l); !ok {
					return fmt.Errorf("embed: --language %q: not an ISO 639 code or language name", l)
				}
			}
			errw := cmd.Root().ErrWriter
			o := engine.EmbedOptions{
				ModelDir:    cmd.String("model"),
				EncoderDir:  cmd.String("encoder"),
				Pooling:     cmd.String("pooling"),
				Prefix:      cmd.String("prefix"),
				Input:       cmd.String("input"),
				Data:        dataset.Options{Schema: schema, Language: cmd.String("language"), SkipBad: cmd.Bool("skip-bad")},
				Output:      cmd.String("output"),
				CacheDir:    cmd.String("cache"),
				BatchTokens: int(cmd.Int("batch-tokens")),
				MaxLen:      int(cmd.Int("max-len")),
				Warn:        errw,
			}
			switch {
			case cmd.Bool("no-cache"):
				o.CacheDir = ""
			case o.CacheDir == "":
				if o.CacheDir, err = engine.DefaultEmbedCacheDir(); err != nil {
					return fmt.Errorf("%w: give --cache or --no-cache", err)
				}
			}
			if !cmd.Bool("quiet") && embedIsTerminal(errw) {
				o.Progress = errw
			}
			be, release, err := openBackend(cmd)
			if err != nil {
				return err
			}
			defer release()
			o.Backend = be
			// A signal stops the work between chunks of records, so that
			// the scratch files beside the output go (the default end of
			// the process would leave them) and the cache keeps what was
			// embedded for the next run.
			ctx, finish := stopOnSignal(ctx, errw, "embed: interrupted: stopping after this chunk of records; nothing is written to "+o.Output+" (the cache keeps what was embedded)")
			res, err := engine.Embed(ctx, o)
			if err = finish(err); err != nil {
				return err
			}
			fmt.Fprintf(errw, "embedded %d records (schema %s) into %s and %s", res.Records, res.Schema, o.Output, res.Rows)
			if res.CachePath != "" {
				fmt.Fprintf(errw, "; %d by the model, %d from the cache %s", res.Embedded, res.Cached, res.CachePath)
			}
			fmt.Fprintln(errw)
			if res.Skipped > 0 {
				fmt.Fprintf(errw, "skipped %d bad rows; the first: %v\n", res.Skipped, res.FirstSkipped)
			}
			return nil
		},
	}
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
