package main

import (
	"context"
	"fmt"

	"github.com/compassml/compass/engine"
	"github.com/compassml/compass/sampling/selection"
	"github.com/urfave/cli/v3"
)

func selectCommand() *cli.Command {
	return &cli.Command{
		Name:  "select",
		Usage: "choose auxiliary training data for a target language: COMPASS or a baseline",
		Description: "COMPASS clusters the embeddings of the target usage (--target-usage, E_t), the data the\n" +
			"target already has (--target-data, D_t) and the auxiliary pool (--pool, D_aux), and spends the\n" +
			"budget on pool items in the clusters where E_t is under-served by D_t. The baselines spend the\n" +
			"same budget at random, on the linguistically nearest languages (langsim), or take the whole\n" +
			"pool (all). --pool-meta is JSONL, one {\"id\", \"language\"} per pool row (default: the rows\n" +
			"file beside the pool embeddings). Writes the manifest (JSONL: id, language, cluster, score,\n" +
			"reason) and, in --report-dir, report.md, report.json and a PNG chart.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "target", Required: true, Usage: "target language (ISO 639-1/639-3 code or name)"},
			&cli.IntFlag{Name: "budget", Usage: "how many pool items to select (ignored by --method all)"},
			&cli.StringFlag{Name: "method", Value: "compass", Usage: "compass, random, langsim or all"},
			&cli.StringFlag{Name: "target-usage", Usage: "embeddings of the target usage set E_t (compass)"},
			&cli.StringFlag{Name: "target-data", Usage: "embeddings of the data the target has, D_t (compass; none when absent)"},
			&cli.StringFlag{Name: "pool", Usage: "embeddings of the auxiliary pool D_aux (compass; optional for the baselines)"},
			&cli.StringFlag{Name: "pool-meta", Usage: "JSONL with the id and language of every pool row"},
			&cli.IntFlag{Name: "k", Usage: "clusters (0: choose by silhouette over --k-range)"},
			&cli.StringFlag{Name: "k-range", Value: "80:120:10", Usage: "LO:HI[:STEP] for choosing K (the paper: 80-120; STEP default 10)"},
			&cli.BoolFlag{Name: "spherical", Value: true, Usage: "cosine k-means (the embeddings are L2-normalised); --spherical=false for euclidean"},
			&cli.IntFlag{Name: "n-init", Value: 1, Usage: "k-means restarts"},
			&cli.IntFlag{Name: "max-iter", Value: 300, Usage: "Lloyd iterations per restart"},
			&cli.StringFlag{Name: "cluster", Value: string(selection.ClusterAll), Usage: "what defines the clusters: all (E_t, D_t, D_aux) or usage+pool"},
			&cli.StringFlag{Name: "gap", Value: string(selection.GapDiff), Usage: "diff: max(0, p_E - p_D); ratio: p_E / (p_D + eps); smoothed: diff of additively smoothed shares"},
			&cli.FloatFlag{Name: "epsilon", Value: 1e-3, Usage: "eps of --gap ratio"},
			&cli.FloatFlag{Name: "smoothing", Value: 1, Usage: "pseudo-count of --gap smoothed"},
			&cli.FloatFlag{Name: "temperature", Value: 1, Usage: "budget share of a cluster ~ gap^(1/temperature)"},
			&cli.StringFlag{Name: "within", Value: string(selection.WithinNearest), Usage: "nearest (to the cluster's target items), centroid or random"},
			&cli.IntFlag{Name: "language-cap", Usage: "at most this many items per source language (0: no cap)"},
			&cli.FloatFlag{Name: "language-share", Usage: "at most this share of the budget per source language (0: no cap)"},
			&cli.BoolFlag{Name: "include-target", Usage: "allow pool items in the target language itself"},
			&cli.IntFlag{Name: "top-k", Value: 3, Usage: "langsim: draw from at least this many nearest languages"},
			&cli.StringFlag{Name: "languages", Usage: "language table TSV (default: the built-in copy of testdata/languages/languages.tsv)"},
			&cli.Uint64Flag{Name: "seed", Usage: "random seed"},
			&cli.StringFlag{Name: "output", Required: true, Usage: "manifest to write (JSONL)"},
			&cli.StringFlag{Name: "report-dir", Usage: "directory for report.md, report.json and the chart"},
			deviceFlag(),
			&cli.BoolFlag{Name: "quiet", Usage: "no progress lines on stderr"},
		},
		Action: runSelect,
	}
}

func runSelect(ctx context.Context, cmd *cli.Command) error {
	o := engine.SelectOptions{
		Method:    cmd.String("method"),
		Target:    cmd.String("target"),
		Usage:     cmd.String("target-usage"),
		Pool:      cmd.String("pool"),
		PoolMeta:  cmd.String("pool-meta"),
		Languages: cmd.String("languages"),
		Baseline: selection.BaselineOptions{Budget: int(cmd.Int("budget")), LanguageCap: int(cmd.Int("language-cap")),
			LanguageShare: cmd.Float("language-share"), IncludeTarget: cmd.Bool("include-target"),
			TopK: int(cmd.Int("top-k")), Seed: cmd.Uint64("seed")},
		Output:    cmd.String("output"),
		ReportDir: cmd.String("report-dir"),
	}
	if d := cmd.String("target-data"); d != "" {
		o.Data = []string{d}
	}
	if err := checkOutput("output", o.Output, "target-usage", o.Usage, "target-data", cmd.String("target-data"),
		"pool", o.Pool, "pool-meta", o.PoolMeta); err != nil {
		return fmt.Errorf("select: %w", err)
	}
	switch o.Method {
	case "random", "langsim", "all":
	case "compass":
		if o.Usage == "" || o.Pool == "" {
			return fmt.Errorf("select: --method compass needs --target-usage and --pool embeddings")
		}
		var err error
		if o.Options, err = selectOptions(cmd); err != nil {
			return err
		}
		be, release, err := openBackend(cmd)
		if err != nil {
			return err
		}
		defer release()
		o.Backend = be
	default:
		return fmt.Errorf("select: unknown --method %q (compass, random, langsim, all)", o.Method)
	}
	sel, err := engine.Select(o)
	if err != nil {
		return err
	}
	r := sel.Report
	w := cmd.Root().Writer
	fmt.Fprintf(w, "%s for %s: selected %d of a budget of %d from %d eligible pool items", r.Method, r.Target, r.Selected, r.Budget, r.Eligible)
	if r.Method == "compass" {
		fmt.Fprintf(w, " (K = %d, silhouette %.4f)", r.K, r.Silhouette)
	}
	fmt.Fprintf(w, "\nmanifest: %s\n", o.Output)
	for _, n := range r.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
	return nil
}

// selectOptions builds COMPASS's options from the flags.
func selectOptions(cmd *cli.Command) (selection.Options, error) {
	if err := intFlagsAtLeast(cmd, "select", "k", 0, "n-init", 1, "max-iter", 1); err != nil {
		return selection.Options{}, err
	}
	o := selection.DefaultOptions(int(cmd.Int("budget")))
	o.K = int(cmd.Int("k"))
	if o.K == 0 {
		ks, err := kRangeFlag(cmd.String("k-range"))
		if err != nil {
			return o, fmt.Errorf("select: %w", err)
		}
		o.KMin, o.KMax = ks[0], ks[len(ks)-1]
		if len(ks) > 1 {
			o.KStep = ks[1] - ks[0]
		}
	}
	o.KMeans.Spherical = cmd.Bool("spherical")
	o.KMeans.NInit = int(cmd.Int("n-init"))
	o.KMeans.MaxIter = int(cmd.Int("max-iter"))
	o.Cluster = selection.ClusterSet(cmd.String("cluster"))
	o.Gap = selection.GapKind(cmd.String("gap"))
	o.Epsilon = cmd.Float("epsilon")
	o.Smoothing = cmd.Float("smoothing")
	o.Temperature = cmd.Float("temperature")
	o.Within = selection.WithinKind(cmd.String("within"))
	o.LanguageCap = int(cmd.Int("language-cap"))
	o.LanguageShare = cmd.Float("language-share")
	o.IncludeTarget = cmd.Bool("include-target")
	o.Seed = cmd.Uint64("seed")
	if !cmd.Bool("quiet") {
		o.Progress = cmd.Root().ErrWriter
	}
	return o, nil
}
