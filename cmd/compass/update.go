package main

import (
	"context"
	"fmt"

	"github.com/compassml/compass/engine"
	"github.com/urfave/cli/v3"
)

// updateFlags are the flags `compass update` and `compass monitor --update`
// share.
func updateFlags() []cli.Flag {
	return []cli.Flag{
		&cli.FloatFlag{Name: "replay-share", Value: engine.DefaultReplayShare, Usage: "the replay buffer's share of all data the adapter's versions were trained on"},
		&cli.IntFlag{Name: "fisher-examples", Value: 64, Usage: "training examples the new version's Fisher (for the next update's EWC) is estimated on"},
		&cli.StringFlag{Name: "report-dir", Usage: "where the update's evaluation report goes (default: <work_dir>/update-reports/<adapter>-after-<version>; not compass adapt's report)"},
	}
}

// checkUpdateFlags checks updateFlags' values: each one given is used as
// given (the library reads 0 as its default).
func checkUpdateFlags(cmd *cli.Command, command string) error {
	if v := cmd.Float("replay-share"); !(v > 0 && v <= 1) {
		return fmt.Errorf("%s: --replay-share %v: want a share in (0, 1]", command, v)
	}
	if dir := cmd.String("report-dir"); dir != "" {
		if err := checkWritableDir(dir); err != nil {
			return fmt.Errorf("%s: --report-dir: %w", command, err)
		}
	}
	return intFlagsAtLeast(cmd, command, "fisher-examples", 1)
}

func updateCommand() *cli.Command {
	return &cli.Command{
		Name:  "update",
		Usage: "COMPASS-ECDA's update: select data for a drifted usage, continue the current adapter with replay and EWC, register the new version",
		Description: "--config is a compass adapt config: the model, the pool, the target language (its first target)\n" +
			"and its own data, the budget, K, the selection, training and evaluation settings. Its usage is\n" +
			"replaced by --usage (the drifted texts, e.g. the window compass monitor saved with a drift\n" +
			"record); COMPASS selects for it, the registry's current version of --adapter is continued on the\n" +
			"selection with its replay buffer and its Fisher (when it has them), and the result becomes the\n" +
			"new current version, with a new replay buffer and Fisher for the next update.",
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "config", Required: true, Usage: "compass adapt config (JSON or YAML)"},
			&cli.StringFlag{Name: "registry", Required: true, Usage: "adapter registry directory"},
			&cli.StringFlag{Name: "adapter", Required: true, Usage: "adapter name in the registry"},
			&cli.StringFlag{Name: "usage", Usage: "JSONL texts of the drifted usage (default: the --drift-record's window)"},
			&cli.StringFlag{Name: "drift-record", Usage: "the compass monitor drift record that triggered the update"},
			&cli.StringFlag{Name: "note", Usage: "a note for the new version"},
			deviceFlag(),
		}, updateFlags()...),
		Action: func(ctx context.Context, cmd *cli.Command) error {
			if cmd.NArg() != 0 {
				return fmt.Errorf("update: unexpected arguments %v", cmd.Args().Slice())
			}
			if err := checkUpdateFlags(cmd, "update"); err != nil {
				return err
			}
			cfg, err := engine.ReadAdaptConfig(cmd.String("config"))
			if err != nil {
				return err
			}
			usage := cmd.String("usage")
			if usage == "" && cmd.String("drift-record") != "" {
				if usage, err = engine.DriftRecordTexts(cmd.String("drift-record")); err != nil {
					return err
				}
			}
			if usage == "" {
				return fmt.Errorf("update: give --usage, or a --drift-record whose window was saved")
			}
			be, release, err := openBackend(cmd)
			if err != nil {
				return err
			}
			defer release()
			ctx, finish := stopOnSignal(ctx, cmd.Root().ErrWriter, stepsStopping("update"))
			res, err := engine.Update(ctx, cfg, engine.UpdateRequest{
				Registry: cmd.String("registry"), Adapter: cmd.String("adapter"), Usage: usage,
				DriftRecord: cmd.String("drift-record"), Note: cmd.String("note"),
				ReplayShare: cmd.Float("replay-share"), FisherExamples: int(cmd.Int("fisher-examples")),
			}, engine.AdaptEnv{Backend: be, Version: versionString(), Log: cmd.Root().ErrWriter, ReportDir: cmd.String("report-dir")})
			if err = finish(err); err != nil {
				return err
			}
			v := res.Version
			fmt.Fprintf(cmd.Root().Writer, "%s %s (parent %s, trigger %s): %d records selected, replay buffer %d of %d\n",
				cmd.String("adapter"), v.Version, v.Parent, v.Trigger.Kind, res.Selected, res.Replay, res.History)
			return nil
		},
	}
}
