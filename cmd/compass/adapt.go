package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/compassml/compass/engine"
	"github.com/urfave/cli/v3"
)

func adaptCommand() *cli.Command {
	return &cli.Command{
		Name:  "adapt",
		Usage: "the COMPASS pipeline: embed, cluster, select, train and evaluate per language, method and seed; one report",
		Description: "Reads --config (JSON or YAML): the model, the auxiliary pool, each target language's usage set\n" +
			"and data, the budget, K or a K range, the selection options, the methods (compass, langsim,\n" +
			"random, all, none), the training and evaluation settings and the seeds. Every step's output goes\n" +
			"into the work directory under a hash of its inputs and settings, so a re-run reuses finished\n" +
			"steps and a stopped run resumes. Writes report.md, report.json and a chart per language.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "config", Required: true, Usage: "JSON or YAML file"},
			&cli.StringSliceFlag{Name: "force", Usage: "redo every step of this kind: " + strings.Join(engine.AdaptStepKinds, ", ")},
			&cli.StringFlag{Name: "work-dir", Usage: "work directory (default: the config's work_dir)"},
			&cli.StringFlag{Name: "report-dir", Usage: "where the report goes (default: <work-dir>/report)"},
			&cli.BoolFlag{Name: "quiet", Usage: "no progress display on stderr"},
			deviceFlag(),
		},
		Action: func(ctx context.Context, cmd *cli.Command) error {
			if cmd.NArg() != 0 {
				return fmt.Errorf("adapt: unexpected arguments %v", cmd.Args().Slice())
			}
			cfg, err := engine.ReadAdaptConfig(cmd.String("config"))
			if err != nil {
				return err
			}
			if w := cmd.String("work-dir"); w != "" {
				// Relative to where the command runs, not to the config.
				if cfg.WorkDir, err = filepath.Abs(w); err != nil {
					return fmt.Errorf("adapt: --work-dir: %w", err)
				}
			}
			// Bad input fails before a backend is opened.
			if err := cfg.Validate(); err != nil {
				return err
			}
			if dir := cmd.String("report-dir"); dir != "" {
				if err := checkWritableDir(dir); err != nil {
					return fmt.Errorf("adapt: --report-dir: %w", err) // not after the pipeline's hours
				}
			}
			be, release, err := openBackend(cmd)
			if err != nil {
				return err
			}
			defer release()
			errw := cmd.Root().ErrWriter
			env := engine.AdaptEnv{Backend: be, Version: versionString(), Log: errw,
				Force: splitList(cmd.StringSlice("force")), ReportDir: cmd.String("report-dir")}
			if !cmd.Bool("quiet") && embedIsTerminal(errw) {
				env.Progress = errw
			}
			ctx, finish := stopOnSignal(ctx, errw, stepsStopping("adapt"))
			res, err := engine.Adapt(ctx, cfg, env)
			if err = finish(err); err != nil {
				return err
			}
			fmt.Fprintf(cmd.Root().Writer, "report: %s\n", res.ReportDir)
			return nil
		},
	}
}
