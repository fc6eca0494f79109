package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/compassml/compass/engine"
	"github.com/urfave/cli/v3"
)

// demoCommand runs the demonstration shipped in testdata/demo: the
// pretrained demo model, its tokenizer and the demo task, through compass
// adapt (or, with --continual, compass continual on the shifting stream).
// Nothing is downloaded; the assets are files of the repository.
func demoCommand() *cli.Command {
	return &cli.Command{
		Name:  "demo",
		Usage: "run the toy-scale demonstration: compass adapt (or compass continual) on the shipped demo model and task",
		Description: "Runs the whole COMPASS pipeline on the demo task of testdata/demo (a 5-20M parameter model\n" +
			"pretrained by tools/demo/pretrain.py, a target language whose usage lies in a domain its own\n" +
			"data lacks, an auxiliary pool of other languages): embed, cluster, select, train one adapter per\n" +
			"method and seed, evaluate, report. A toy-scale illustration, not the paper's results.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "assets", Value: filepath.Join("testdata", "demo"), Usage: "the demo's directory (adapt.yaml, continual.yaml, model/)"},
			&cli.StringFlag{Name: "work-dir", Value: "demo-work", Usage: "where the steps and the report go"},
			&cli.BoolFlag{Name: "continual", Usage: "run compass continual on the demo's shifting stream instead"},
			&cli.BoolFlag{Name: "quiet", Usage: "no progress display on stderr"},
			deviceFlag(),
		},
		Action: func(ctx context.Context, cmd *cli.Command) error {
			if cmd.NArg() != 0 {
				return fmt.Errorf("demo: unexpected arguments %v", cmd.Args().Slice())
			}
			work, err := filepath.Abs(cmd.String("work-dir"))
			if err != nil {
				return fmt.Errorf("demo: --work-dir: %w", err)
			}
			assets := cmd.String("assets")
			name := "adapt.yaml"
			if cmd.Bool("continual") {
				name = "continual.yaml"
			}
			config := filepath.Join(assets, name)
			if _, err := os.Stat(config); err != nil {
				return fmt.Errorf("demo: %w (run it from the repository's root, or give --assets)", err)
			}
			ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
			defer stop()
			errw, out := cmd.Root().ErrWriter, cmd.Root().Writer
			if cmd.Bool("continual") {
				cfg, err := engine.ReadContinualConfig(config)
				if err != nil {
					return err
				}
				cfg.WorkDir, cfg.ReportDir = work, filepath.Join(work, "report")
				be, release, err := openBackend(cmd)
				if err != nil {
					return err
				}
				defer release()
				rep, err := engine.Continual(ctx, cfg, engine.ContinualEnv{Backend: be, Version: versionString(), Log: errw})
				if err != nil {
					return err
				}
				rep.WriteMarkdown(out)
				fmt.Fprintf(out, "\nreport: %s\n", cfg.ReportDir)
				return nil
			}
			cfg, err := engine.ReadAdaptConfig(config)
			if err != nil {
				return err
			}
			cfg.WorkDir = work
			if err := cfg.Validate(); err != nil {
				return err
			}
			be, release, err := openBackend(cmd)
			if err != nil {
				return err
			}
			defer release()
			env := engine.AdaptEnv{Backend: be, Version: versionString(), Log: errw}
			if !cmd.Bool("quiet") && embedIsTerminal(errw) {
				env.Progress = errw
			}
			res, err := engine.Adapt(ctx, cfg, env)
			if err != nil {
				return err
			}
			md, err := os.ReadFile(filepath.Join(res.ReportDir, "report.md"))
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "%s\nreport: %s\n", md, res.ReportDir)
			return nil
		},
	}
}
