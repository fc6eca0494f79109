package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/compassml/compass/engine"
	"github.com/compassml/compass/model"
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
			be, release, err := openBackend(cmd)
			if err != nil {
				return err
			}
			defer release()
			m, err := model.Load(cmd.String("model"), be)
			if err != nil {
				return err
			}
			defer m.Close()
			if dir := cmd.String("adapter"); dir != "" {
				if err := attachAdapter(m, dir); err != nil {
					return err
				}
			}
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
				_, err := engine.Score(m, enc, in, cmd.Root().Writer)
				return err
			}
			// Write next to the destination and rename at the end, so that a
			// failure never leaves a partial output file.
			tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
			if err != nil {
				return fmt.Errorf("score: %w", err)
			}
			defer os.Remove(tmp.Name())
			n, err := engine.Score(m, enc, in, tmp)
			if err != nil {
				tmp.Close()
				return err
			}
			if err := tmp.Sync(); err != nil {
				tmp.Close()
				return err
			}
			if err := tmp.Close(); err != nil {
				return err
			}
			if err := os.Rename(tmp.Name(), path); err != nil {
				return err
			}
			fmt.Fprintf(cmd.Root().ErrWriter, "scored %d lines into %s\n", n, path)
			return nil
		},
	}
}
