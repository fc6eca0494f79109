package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/compassml/compass/engine"
	"github.com/compassml/compass/internal/atomicfile"
	"github.com/compassml/compass/model"
	"github.com/compassml/compass/model/tokenizer"
	"github.com/urfave/cli/v3"
)

func generateCommand() *cli.Command {
	return &cli.Command{
		Name:  "generate",
		Usage: "continue prompts with the model (and an adapter), with a KV cache",
		Description: "--prompt TEXT streams one continuation to standard output. --input FILE.jsonl takes one\n" +
			"prompt per line, {\"text\": ...}, {\"ids\": [...]} or {\"messages\": [{\"role\", \"content\"}, ...]},\n" +
			"and writes one line per prompt, {\"line\", \"ids\", \"text\", \"finish_reason\"}, with the\n" +
			"continuation only. Generation stops at the checkpoint's end tokens (generation_config.json,\n" +
			"config.json, tokenizer_config.json), at a --stop string (cut before it) or after --max-tokens.\n" +
			"--temperature 0 (the default) is greedy.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "model", Required: true, Usage: "checkpoint directory (config.json, safetensors, tokenizer.json)"},
			&cli.StringFlag{Name: "adapter", Usage: "PEFT LoRA adapter directory, applied unmerged"},
			&cli.BoolFlag{Name: "chat", Usage: "render prompts with the checkpoint's chat template and the generation prompt"},
			&cli.StringFlag{Name: "chat-format", Usage: "a built-in chat template instead of the checkpoint's: " + fmt.Sprint(tokenizer.ChatFormats())},
			&cli.StringFlag{Name: "prompt", Usage: "one prompt text, streamed to standard output"},
			&cli.StringFlag{Name: "input", Usage: "JSONL file of prompts, or - for standard input"},
			&cli.StringFlag{Name: "output", Usage: "JSONL file to write (atomically); standard output when absent"},
			&cli.IntFlag{Name: "max-tokens", Value: 256, Usage: "new tokens at most per prompt"},
			&cli.FloatFlag{Name: "temperature", Usage: "sampling temperature; 0 is greedy"},
			&cli.IntFlag{Name: "top-k", Usage: "sample among the k most likely tokens (0: off)"},
			&cli.FloatFlag{Name: "top-p", Usage: "nucleus sampling: the smallest set of tokens with this probability (0 or 1: off)"},
			&cli.FloatFlag{Name: "min-p", Usage: "drop tokens less likely than min-p times the most likely (0: off)"},
			&cli.FloatFlag{Name: "repetition-penalty", Usage: "HF's repetition penalty on tokens already seen (0 or 1: off)"},
			&cli.Uint64Flag{Name: "seed", Usage: "sampling seed"},
			&cli.StringSliceFlag{Name: "stop", Usage: "stop string (repeat for several); the text is cut before it"},
			&cli.IntFlag{Name: "batch-size", Value: 16, Usage: "prompts generated together (one KV cache)"},
			deviceFlag(),
		},
		Action: func(ctx context.Context, cmd *cli.Command) error {
			if (cmd.String("prompt") == "") == (cmd.String("input") == "") {
				return fmt.Errorf("generate: give --prompt or --input (one of them)")
			}
			if b := cmd.Int("batch-size"); b < 1 {
				return fmt.Errorf("generate: --batch-size %d: at least 1", b)
			}
			if err := checkOutput("output", cmd.String("output"), "input", cmd.String("input")); err != nil {
				return fmt.Errorf("generate: %w", err)
			}
			be, release, err := openBackend(cmd)
			if err != nil {
				return err
			}
			defer release()
			dir := cmd.String("model")
			m, err := loadModel(dir, cmd.String("adapter"), be)
			if err != nil {
				return err
			}
			defer m.Close()
			tok, err := tokenizer.Load(dir)
			if err != nil {
				return err
			}
			p := engine.Prompter{Tok: tok}
			if cmd.Bool("chat") || cmd.String("chat-format") != "" {
				if p.Chat, err = tok.Chat(cmd.String("chat-format")); err != nil {
					return err
				}
			}
			ends, err := engine.EndTokens(dir, tok)
			if err != nil {
				return err
			}
			opts := engine.GenerateOptions{
				MaxTokens:         int(cmd.Int("max-tokens")),
				Temperature:       cmd.Float("temperature"),
				TopK:              int(cmd.Int("top-k")),
				TopP:              cmd.Float("top-p"),
				MinP:              cmd.Float("min-p"),
				RepetitionPenalty: cmd.Float("repetition-penalty"),
				Seed:              cmd.Uint64("seed"),
				StopIDs:           ends,
				Stop:              cmd.StringSlice("stop"),
			}
			if text := cmd.String("prompt"); text != "" {
				return generateOne(cmd, m, tok, p, text, opts)
			}
			var in io.Reader = os.Stdin
			if path := cmd.String("input"); path != "-" {
				f, err := os.Open(path)
				if err != nil {
					return fmt.Errorf("generate: %w", err)
				}
				defer f.Close()
				in = f
			}
			prompts, lines, err := engine.ReadPrompts(in, p)
			if err != nil {
				return err
			}
			batch := int(cmd.Int("batch-size"))
			path := cmd.String("output")
			if path == "" {
				_, err := engine.GenerateJSONL(ctx, m, tok, prompts, lines, opts, batch, cmd.Root().Writer)
				return err
			}
			// A signal stops it between batches and the output's temporary
			// file goes (the default end of the process would leave it).
			ctx, finish := stopOnSignal(ctx, cmd.Root().ErrWriter, "generate: interrupted: stopping after this batch; nothing is written to "+path)
			var n int
			err = atomicfile.Write(path, func(w io.Writer) error {
				var err error
				n, err = engine.GenerateJSONL(ctx, m, tok, prompts, lines, opts, batch, w)
				return err
			})
			if err = finish(err); err != nil {
				return err
			}
			fmt.Fprintf(cmd.Root().ErrWriter, "generated %d continuations into %s\n", n, path)
			return nil
		},
	}
}

// generateOne streams the continuation of one prompt to standard output
// and, with --output, writes its record there too.
func generateOne(cmd *cli.Command, m *model.Model, tok *tokenizer.Tokenizer, p engine.Prompter, text string, opts engine.GenerateOptions) error {
	ids, err := p.Text(text)
	if err != nil {
		return fmt.Errorf("generate: %w", err)
	}
	w := cmd.Root().Writer
	res, err := engine.Generate(m, tok, [][]int{ids}, opts, func(_ int, piece string) { fmt.Fprint(w, piece) })
	if err != nil {
		return err
	}
	fmt.Fprintln(w)
	fmt.Fprintf(cmd.Root().ErrWriter, "%d tokens, finish reason %s\n", len(res[0].IDs), res[0].FinishReason)
	path := cmd.String("output")
	if path == "" {
		return nil
	}
	return atomicfile.Write(path, func(w io.Writer) error {
		rec := engine.GenerateRecord{Line: 1, IDs: res[0].IDs, Text: res[0].Text, FinishReason: res[0].FinishReason}
		enc := json.NewEncoder(w)
		enc.SetEscapeHTML(false)
		return enc.Encode(rec)
	})
}
