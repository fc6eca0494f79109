package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/compassml/compass/engine"
	"github.com/compassml/compass/sampling/drift"
	"github.com/compassml/compass/sampling/embed"
	"github.com/urfave/cli/v3"
)

func monitorCommand() *cli.Command {
	d := drift.DefaultOptions()
	return &cli.Command{
		Name:  "monitor",
		Usage: "watch production texts for distribution drift against an adapter's clusters (COMPASS-ECDA)",
		Description: "Reads JSONL records {\"text\": ...} from stdin, or from the *.jsonl files that appear in\n" +
			"--watch (read once each, in name order), embeds them in windows of --window texts with --model,\n" +
			"and compares each window's cluster histogram with the reference in REGISTRY/ADAPTER/drift-reference.json:\n" +
			"Jensen-Shannon divergence against --threshold, a chi-square test at --alpha, new regions beyond the\n" +
			"reference's 99th-percentile distance. One line per window on stdout; when --k of the last --m windows\n" +
			"have shifted, drift is confirmed and a record is written to REGISTRY/ADAPTER/drift/.",
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "registry", Required: true, Usage: "adapter registry directory"},
			&cli.StringFlag{Name: "adapter", Required: true, Usage: "adapter name in the registry"},
			&cli.StringFlag{Name: "model", Required: true, Usage: "checkpoint directory of the embedder the adapter's clusters were built with"},
			&cli.IntFlag{Name: "window", Value: engine.DefaultMonitorWindow, Usage: "texts per window"},
			&cli.FloatFlag{Name: "threshold", Value: d.Threshold, Usage: "Jensen-Shannon divergence (bits) above which a window has shifted"},
			&cli.FloatFlag{Name: "alpha", Value: d.Alpha, Usage: "chi-square test level a shifted window must also pass; negative: JS alone"},
			&cli.IntFlag{Name: "k", Value: d.K, Usage: "shifted windows among the last --m that confirm drift"},
			&cli.IntFlag{Name: "m", Value: d.M, Usage: "windows the k-of-m rule looks back over"},
			&cli.StringFlag{Name: "reference", Usage: "usage embeddings (.safetensors, .npy, .parquet) to (re)build the adapter's reference from, with --centroids"},
			&cli.StringFlag{Name: "centroids", Usage: "the adapter's cluster centroids (compass cluster's centroids.npy), with --reference"},
			&cli.BoolFlag{Name: "spherical", Usage: "with --reference: the clusters are cosine (spherical) k-means"},
			&cli.StringFlag{Name: "watch", Usage: "directory of JSONL files to watch (default: read stdin)"},
			&cli.BoolFlag{Name: "once", Usage: "with --watch: read the files present and exit"},
			&cli.DurationFlag{Name: "poll", Value: 2 * time.Second, Usage: "with --watch: how often to look for new files"},
			&cli.IntFlag{Name: "batch-tokens", Value: embed.DefaultBatchTokens, Usage: "most tokens in one forward pass, padding included"},
			&cli.IntFlag{Name: "max-len", Value: embed.DefaultMaxLen, Usage: "truncate each text to this many tokens"},
			&cli.StringFlag{Name: "update", Usage: "a compass adapt config: on each confirmed drift, run compass update with it on the drifted window"},
			deviceFlag(),
		}, updateFlags()...),
		Action: func(ctx context.Context, cmd *cli.Command) error {
			if cmd.NArg() != 0 {
				return fmt.Errorf("monitor: unexpected arguments %v", cmd.Args().Slice())
			}
			// Every value is checked before any window is read: the library
			// reads 0 as its default, and a bad --update config found at
			// the first drift, days later, would end the watch.
			if err := intFlagsAtLeast(cmd, "monitor", "window", 2, "k", 1, "m", 1, "batch-tokens", 1, "max-len", 1); err != nil {
				return err
			}
			if v := cmd.Float("threshold"); !(v > 0 && v <= 1) {
				return fmt.Errorf("monitor: --threshold %v: want a divergence in (0, 1]", v)
			}
			if v := cmd.Float("alpha"); v == 0 || !(v < 1) {
				return fmt.Errorf("monitor: --alpha %v: want a test level in (0, 1), or a negative value for the divergence alone", v)
			}
			var updateCfg *engine.AdaptConfig
			if path := cmd.String("update"); path != "" {
				var err error
				if updateCfg, err = engine.ReadAdaptConfig(path); err != nil {
					return err
				}
				if err := updateCfg.Validate(); err != nil {
					return fmt.Errorf("monitor: --update %s: %w", path, err)
				}
				if err := checkUpdateFlags(cmd, "monitor"); err != nil {
					return err
				}
			}
			if (cmd.String("reference") == "") != (cmd.String("centroids") == "") {
				return fmt.Errorf("monitor: --reference and --centroids go together")
			}
			if cmd.String("reference") != "" {
				ref, err := engine.BuildDriftReference(cmd.String("reference"), cmd.String("centroids"), cmd.Bool("spherical"), 0)
				if err != nil {
					return err
				}
				path := engine.DriftReferencePath(cmd.String("registry"), cmd.String("adapter"))
				if err := engine.SaveDriftReference(path, ref); err != nil {
					return err
				}
				fmt.Fprintf(cmd.Root().ErrWriter, "monitor: reference of %d clusters saved to %s\n", len(ref.Counts), path)
				// Building the reference is a step of its own: with no texts
				// on the way (no --watch, standard input a terminal) there is
				// nothing to wait for.
				if cmd.String("watch") == "" && embedIsTerminal(os.Stdin) {
					return nil
				}
			}
			be, release, err := openBackend(cmd)
			if err != nil {
				return err
			}
			defer release()
			em, err := engine.LoadEmbedModel(cmd.String("model"), be)
			if err != nil {
				return err
			}
			defer em.Close()
			e, err := em.Embedder(embed.ModelOptions{BatchTokens: int(cmd.Int("batch-tokens")), MaxLen: int(cmd.Int("max-len"))})
			if err != nil {
				return err
			}
			var onDrift func(record, texts string) error
			if updateCfg != nil {
				onDrift = func(record, texts string) error {
					res, err := engine.Update(ctx, updateCfg, engine.UpdateRequest{
						Registry: cmd.String("registry"), Adapter: cmd.String("adapter"), Usage: texts, DriftRecord: record,
						ReplayShare: cmd.Float("replay-share"), FisherExamples: int(cmd.Int("fisher-examples")),
					}, engine.AdaptEnv{Backend: be, Version: versionString(), Log: cmd.Root().ErrWriter, ReportDir: cmd.String("report-dir")})
					if err != nil {
						return err
					}
					fmt.Fprintf(cmd.Root().Writer, "update: %s %s now serves (parent %s)\n", cmd.String("adapter"), res.Version.Version, res.Version.Parent)
					return nil
				}
			}
			res, err := engine.Monitor(ctx, engine.MonitorOptions{
				Registry: cmd.String("registry"),
				Adapter:  cmd.String("adapter"),
				Window:   int(cmd.Int("window")),
				Drift: drift.Options{
					Threshold: cmd.Float("threshold"), Alpha: cmd.Float("alpha"),
					K: int(cmd.Int("k")), M: int(cmd.Int("m")),
				},
				Embedder: e,
				Input:    os.Stdin,
				Watch:    cmd.String("watch"),
				Poll:     cmd.Duration("poll"),
				Once:     cmd.Bool("once"),
				Out:      cmd.Root().Writer,
				Version:  versionString(),
				OnDrift:  onDrift,
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.Root().ErrWriter, "monitor: %d windows, %d drift records, %d texts left over (less than a window)\n",
				res.Windows, len(res.Records), res.Leftover)
			return nil
		},
	}
}
