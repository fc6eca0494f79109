package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/compassml/compass/engine"
	"github.com/urfave/cli/v3"
)

func evalCommand() *cli.Command {
	return &cli.Command{
		Name:  "eval",
		Usage: "benchmark accuracy per language of the base model and adapters (Global-MMLU, MMLU-ProX, ...)",
		Description: "Runs each task on the base model and on every --adapter, on the same items, and writes\n" +
			"results.json (every request, its tokens and log-likelihoods, prediction and gold), report.md\n" +
			"(accuracy per language and category with standard errors, paired differences with bootstrap\n" +
			"intervals and McNemar's p) and a PNG chart per task into --output-dir. Tasks: " + strings.Join(engine.EvalTaskNames(), ", ") + ".",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "model", Required: true, Usage: "checkpoint directory (config.json, safetensors, tokenizer.json)"},
			&cli.StringSliceFlag{Name: "adapter", Usage: "PEFT LoRA adapter directory; repeat to compare several"},
			&cli.StringSliceFlag{Name: "task", Required: true, Usage: "task name; repeat or separate with commas"},
			&cli.StringFlag{Name: "data", Required: true, Usage: "benchmark data: a directory laid out as the hub (<lang>/test-*.parquet, <lang>/dev-*.parquet) or a test file"},
			&cli.StringSliceFlag{Name: "lang", Required: true, Usage: "languages, e.g. sw,yo"},
			&cli.IntFlag{Name: "shots", Value: -1, HideDefault: true, Usage: "examples before each question (default: the task's, 0 or 5)"},
			&cli.IntFlag{Name: "limit", Usage: "at most this many questions per task and language (the first ones)"},
			&cli.StringSliceFlag{Name: "task-param", Usage: "key=value settings of a task (e.g. a long-context task's lengths)"},
			&cli.IntFlag{Name: "max-new-tokens", Usage: "cap on generated tokens for generative tasks (default: the task's)"},
			&cli.IntFlag{Name: "batch-tokens", Value: 4096, Usage: "rows x length of one forward pass"},
			&cli.Uint64Flag{Name: "seed", Value: 1, Usage: "seed of the bootstrap"},
			&cli.StringFlag{Name: "output-dir", Usage: "where results.json, report.md and the charts go"},
			&cli.BoolFlag{Name: "quiet", Usage: "no progress bar on stderr"},
			deviceFlag(),
		},
		Action: func(ctx context.Context, cmd *cli.Command) error {
			params, err := parseTaskParams(cmd.StringSlice("task-param"))
			if err != nil {
				return err
			}
			if err := intFlagsAtLeast(cmd, "eval", "batch-tokens", 1); err != nil {
				return err
			}
			be, release, err := openBackend(cmd)
			if err != nil {
				return err
			}
			defer release()
			o := engine.EvalOptions{
				ModelDir: cmd.String("model"), Adapters: cmd.StringSlice("adapter"), Tasks: splitList(cmd.StringSlice("task")),
				Data: cmd.String("data"), Langs: splitList(cmd.StringSlice("lang")), Shots: int(cmd.Int("shots")),
				Limit: int(cmd.Int("limit")), Params: params, OutputDir: cmd.String("output-dir"), Backend: be,
				BatchTokens: int(cmd.Int("batch-tokens")), MaxNewTokens: int(cmd.Int("max-new-tokens")), Seed: cmd.Uint64("seed"),
			}
			errw := cmd.Root().ErrWriter
			if !cmd.Bool("quiet") && embedIsTerminal(errw) {
				o.Progress = errw
			}
			res, err := engine.Eval(ctx, o)
			if res != nil {
				fmt.Fprint(cmd.Root().Writer, engine.EvalReport(res, nil)) // even when its files could not be written
			}
			if err != nil {
				return err
			}
			if o.OutputDir != "" {
				fmt.Fprintf(errw, "wrote results.json, report.md and charts into %s (%.0fs)\n", o.OutputDir, res.Seconds)
			}
			return nil
		},
	}
}

// parseTaskParams reads --task-param key=value settings. The flag's values
// arrive split at commas: a piece without "=" continues the list of the key
// before it (length=8192,32768).
func parseTaskParams(pieces []string) (map[string]string, error) {
	params := map[string]string{}
	last := ""
	for _, kv := range pieces {
		k, v, ok := strings.Cut(kv, "=")
		switch {
		case ok && k != "":
			params[k], last = v, k
		case !ok && last != "":
			params[last] += "," + kv
		default:
			return nil, fmt.Errorf("eval: --task-param %q: want key=value", kv)
		}
	}
	return params, nil
}
