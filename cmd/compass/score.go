package main

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/compassml/compass/engine"
	"github.com/compassml/compass/internal/atomicfile"
	"github.com/urfave/cli/v3"
)

func scoreCommand() *cli.Command {
	return &cli.Command{
		Name:  "score",
		Usage: "per-token log-probabilities, their sum and the perplexity of each input line",
		Description: "Each input line is {\"ids\": [...]} (token ids) or {\"text\": \"...\"} (tokenized with the\n" +
			"model directory's tokenizer.json). Each output line is {\"line\", \"tokens\", \"logprobs\",\n" +
			"\"sum\", \"perplexity\"}: logprobs[i] is log p(token i+1 | tokens 0..i).",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "model", Required: true, Usage: "checkpoint directory (config.json, safetensors)"},
			&cli.StringFlag{Name: "adapter", Usage: "PEFT LoRA adapter directory (adapter_config.json, adapter_model.safetensors)"},
			&cli.StringFlag{Name: "input", Required: true, Usage: "JSONL file, or - for standard input"},
			&cli.StringFlag{Name: "output", Usage: "JSONL file to write (atomically); standard output when absent"},
			deviceFlag(),
		},
		Action: func(ctx context.Context, cmd *cli.Command) error {
			if err := checkOutput("output", cmd.String("output"), "input", cmd.String("input")); err != nil {
				return fmt.Errorf("score: %w", err)
			}
			be, release, err := openBackend(cmd)
			if err != nil {
				return err
			}
			defer release()
			m, err := loadModel(cmd.String("model"), cmd.String("adapter"), be)
			if err != nil {
				return err
			}
			defer m.Close()
			enc, err := loadEncoder(cmd.String("model"))
			if err != nil {
				return err
			}
			var in io.Reader = os.Stdin
			if path := cmd.String("input"); path != "-" {
				f, err := os.Open(path)
				if err != nil {
					return fmt.Errorf("score: %w", err)
				}
				defer f.Close()
				in = f
			}
			path := cmd.String("output")
			if path == "" {
				_, err := engine.Score(ctx, m, enc, in, cmd.Root().Writer)
				return err
			}
			// Written next to the destination and renamed at the end, so that
			// a failure never leaves a partial output file; a signal stops
			// it between lines and the temporary file goes (the default end
			// of the process would leave it).
			ctx, finish := stopOnSignal(ctx, cmd.Root().ErrWriter, "score: interrupted: stopping after this line; nothing is written to "+path)
			var n int
			err = atomicfile.Write(path, func(w io.Writer) error {
				var err error
				n, err = engine.Score(ctx, m, enc, in, w)
				return err
			})
			if err = finish(err); err != nil {
				return err
			}
			fmt.Fprintf(cmd.Root().ErrWriter, "scored %d lines into %s\n", n, path)
			return nil
		},
	}
}
