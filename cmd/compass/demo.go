package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/compassml/compass/engine"
	"github.com/compassml/compass/tensor"
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
			&cli.BoolFlag{Name: "continual", Usage: "run compass continual on the demo's shifting stream instead, then the drift monitor and an update (COMPASS-ECDA)"},
			&cli.BoolFlag{Name: "quiet", Usage: "no progress display on stderr"},
			deviceFlag(),
		},
		Action: func(ctx context.Context, cmd *cli.Command) (err error) {
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
			ctx, finish := stopOnSignal(ctx, cmd.Root().ErrWriter, stepsStopping("demo"))
			defer func() { err = finish(err) }()
			errw, out := cmd.Root().ErrWriter, cmd.Root().Writer
			if cmd.Bool("continual") {
				cfg, err := engine.ReadContinualConfig(config)
				if err != nil {
					return err
				}
				cfg.WorkDir, cfg.ReportDir = work, filepath.Join(work, "report")
				// The update's pipeline, read now so that a bad adapt.yaml
				// stops the demo before its minutes of training.
				upd, err := engine.ReadAdaptConfig(filepath.Join(assets, "adapt.yaml"))
				if err != nil {
					return err
				}
				if err := upd.Validate(); err != nil {
					return err
				}
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
				return demoECDA(ctx, cmd, upd, cfg, be)
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

// demoECDA is the second half of compass demo --continual: the first
// period's adapter registered, the monitor on texts that stay in that period
// and then move to the next, and the update its drift starts (the demo's
// adapt.yaml gives the update's pipeline).
func demoECDA(ctx context.Context, cmd *cli.Command, upd *engine.AdaptConfig, cont *engine.ContinualConfig, be tensor.Backend) error {
	out := cmd.Root().Writer
	work := filepath.Join(cont.WorkDir, "ecda")
	upd.WorkDir = filepath.Join(work, "update")
	p1, p2 := cont.Periods[0], cont.Periods[1]
	fmt.Fprintf(out, "\n# COMPASS-ECDA: detection and update\n\n"+
		"v1 = the adapter of period 1 (%s); the monitor's reference = period 1's training texts in %d clusters;\n"+
		"the stream = period 1's evaluation texts, then period 2's (%s) training texts, in windows of %d.\n\n",
		p1.Name, demoECDAClusters, p2.Name, demoECDAWindow)
	res, err := engine.ECDADemo(ctx, engine.ECDADemoOptions{
		Update: upd, AdapterV1: filepath.Join(cont.WorkDir, "period-1"), Name: "demo",
		Reference: p1.Data[0], K: demoECDAClusters, Stream: []string{p1.Eval, p2.Data[0]}, Window: demoECDAWindow,
		WorkDir: work, Backend: be, Version: versionString(), Out: out, Log: cmd.Root().ErrWriter,
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "\nregistry: %s (compass registry list --registry %s --adapter demo)\n", res.Registry, res.Registry)
	return nil
}

// The demo's monitor: 4 clusters and windows of 40 texts (the period's 40
// evaluation texts are the one stationary window).
const demoECDAClusters, demoECDAWindow = 4, 40
