package main

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/compassml/compass/engine"
	"github.com/urfave/cli/v3"
)

func continualCommand() *cli.Command {
	return &cli.Command{
		Name:  "continual",
		Usage: "COMPASS-ECDA's forgetting experiment: a stream of periods, one adapter per period and strategy, one report",
		Description: "Reads --config (JSON or YAML): the model, the periods (training data and evaluation text each),\n" +
			"the strategies (naive, replay, ewc, ecda, retrain), the replay share and weight, the EWC\n" +
			"lambda, and the training settings. Each strategy continues its own adapter period after\n" +
			"period; after each, every adapter is scored on every period's text. Finished steps are\n" +
			"reused on a re-run. Writes report.md, report.json and continual.png.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "config", Required: true, Usage: "JSON or YAML file"},
			&cli.StringFlag{Name: "work-dir", Usage: "work directory (default: the config's work_dir)"},
			&cli.StringFlag{Name: "report-dir", Usage: "where the report goes (default: <work-dir>/report)"},
			deviceFlag(),
		},
		Action: func(ctx context.Context, cmd *cli.Command) error {
			if cmd.NArg() != 0 {
				return fmt.Errorf("continual: unexpected arguments %v", cmd.Args().Slice())
			}
			cfg, err := engine.ReadContinualConfig(cmd.String("config"))
			if err != nil {
				return err
			}
			for flag, dst := range map[string]*string{"work-dir": &cfg.WorkDir, "report-dir": &cfg.ReportDir} {
				if v := cmd.String(flag); v != "" {
					// Relative to where the command runs, not to the config.
					if *dst, err = filepath.Abs(v); err != nil {
						return fmt.Errorf("continual: --%s: %w", flag, err)
					}
				}
			}
			be, release, err := openBackend(cmd)
			if err != nil {
				return err
			}
			defer release()
			ctx, finish := stopOnSignal(ctx, cmd.Root().ErrWriter, stepsStopping("continual"))
			rep, err := engine.Continual(ctx, cfg, engine.ContinualEnv{Backend: be, Version: versionString(), Log: cmd.Root().ErrWriter})
			if err = finish(err); err != nil {
				return err
			}
			rep.WriteMarkdown(cmd.Root().Writer)
			return nil
		},
	}
}
