package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"github.com/compassml/compass/sampling"
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
			&cli.StringFlag{Name: "k-range", Value: "80:120:10", Usage: "LO:HI[:STEP] for choosing K (the paper: 80-120)"},
			&cli.BoolFlag{Name: "spherical", Value: true, Usage: "cosine k-means (the embeddings are L2-normalised); --spherical=false for euclidean"},
			&cli.IntFlag{Name: "n-init", Value: 1, Usage: "k-means restarts"},
			&cli.IntFlag{Name: "max-iter", Value: 300, Usage: "Lloyd iterations per restart"},
			&cli.StringFlag{Name: "cluster", Value: string(sampling.ClusterAll), Usage: "what defines the clusters: all (E_t, D_t, D_aux) or usage+pool"},
			&cli.StringFlag{Name: "gap", Value: string(sampling.GapDiff), Usage: "diff: max(0, p_E - p_D); ratio: p_E / (p_D + eps); smoothed: diff of additively smoothed shares"},
			&cli.FloatFlag{Name: "epsilon", Value: 1e-3, Usage: "eps of --gap ratio"},
			&cli.FloatFlag{Name: "smoothing", Value: 1, Usage: "pseudo-count of --gap smoothed"},
			&cli.FloatFlag{Name: "temperature", Value: 1, Usage: "budget share of a cluster ~ gap^(1/temperature)"},
			&cli.StringFlag{Name: "within", Value: string(sampling.WithinNearest), Usage: "nearest (to the cluster's target items), centroid or random"},
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
	method := cmd.String("method")
	in := sampling.SelectInput{Target: cmd.String("target")}
	var langs *sampling.LanguageTable
	if path := cmd.String("languages"); path != "" {
		f, err := os.Open(path)
		if err != nil {
			return fmt.Errorf("select: %w", err)
		}
		langs, err = sampling.ReadLanguages(f)
		f.Close()
		if err != nil {
			return fmt.Errorf("select: %s: %w", path, err)
		}
	}
	load := func(flag string) (*sampling.Embeddings, error) {
		path := cmd.String(flag)
		if path == "" {
			return nil, nil
		}
		e, err := sampling.LoadEmbeddings(path, sampling.LoadOptions{})
		if err != nil {
			return nil, fmt.Errorf("select: --%s: %w", flag, err)
		}
		return e, nil
	}
	pool, err := load("pool")
	if err != nil {
		return err
	}
	if pool != nil {
		in.Pool = pool.Vectors
	}
	switch meta := cmd.String("pool-meta"); {
	case meta != "":
		if in.Items, err = readPoolMeta(meta); err != nil {
			return err
		}
	case pool != nil && pool.Rows != nil:
		for _, r := range pool.Rows {
			in.Items = append(in.Items, sampling.Item{ID: r.ID, Language: r.Language})
		}
	default:
		return fmt.Errorf("select: no pool items: give --pool-meta (JSONL with id and language per pool row)")
	}

	var sel *sampling.Selection
	switch method {
	case "compass":
		if cmd.String("target-usage") == "" || in.Pool == nil {
			return fmt.Errorf("select: --method compass needs --target-usage and --pool embeddings")
		}
		usage, err := load("target-usage")
		if err != nil {
			return err
		}
		in.Usage = usage.Vectors
		have, err := load("target-data")
		if err != nil {
			return err
		}
		if have != nil {
			in.Have = have.Vectors
		}
		o, err := selectOptions(cmd, langs)
		if err != nil {
			return err
		}
		b, release, err := openBackend(cmd)
		if err != nil {
			return err
		}
		defer release()
		o.KMeans.Backend, o.Silhouette.Backend = b, b
		if sel, err = sampling.Select(in, o); err != nil {
			return err
		}
	case "random", "langsim", "all":
		o := sampling.BaselineOptions{Budget: cmd.Int("budget"), LanguageCap: cmd.Int("language-cap"),
			LanguageShare: cmd.Float("language-share"), IncludeTarget: cmd.Bool("include-target"),
			TopK: cmd.Int("top-k"), Languages: langs, Seed: cmd.Uint64("seed")}
		run := map[string]func(sampling.SelectInput, sampling.BaselineOptions) (*sampling.Selection, error){
			"random": sampling.Random, "langsim": sampling.LangSim, "all": sampling.AllData}[method]
		if sel, err = run(in, o); err != nil {
			return err
		}
	default:
		return fmt.Errorf("select: unknown --method %q (compass, random, langsim, all)", method)
	}

	if err := sampling.WriteManifest(cmd.String("output"), sel.Picks); err != nil {
		return fmt.Errorf("select: %w", err)
	}
	if dir := cmd.String("report-dir"); dir != "" {
		if err := sampling.WriteReport(dir, sel.Report); err != nil {
			return fmt.Errorf("select: report: %w", err)
		}
	}
	r := sel.Report
	w := cmd.Root().Writer
	fmt.Fprintf(w, "%s for %s: selected %d of a budget of %d from %d eligible pool items", r.Method, r.Target, r.Selected, r.Budget, r.Eligible)
	if r.Method == "compass" {
		fmt.Fprintf(w, " (K = %d, silhouette %.4f)", r.K, r.Silhouette)
	}
	fmt.Fprintf(w, "\nmanifest: %s\n", cmd.String("output"))
	for _, n := range r.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
	return nil
}

// selectOptions builds COMPASS's options from the flags.
func selectOptions(cmd *cli.Command, langs *sampling.LanguageTable) (sampling.SelectOptions, error) {
	o := sampling.DefaultSelectOptions(cmd.Int("budget"))
	o.K = cmd.Int("k")
	if o.K == 0 {
		ks, err := parseKRange(cmd.String("k-range"))
		if err != nil {
			return o, err
		}
		o.KMin, o.KMax = ks[0], ks[len(ks)-1]
		if len(ks) > 1 {
			o.KStep = ks[1] - ks[0]
		}
	}
	o.KMeans.Spherical = cmd.Bool("spherical")
	o.KMeans.NInit = cmd.Int("n-init")
	o.KMeans.MaxIter = cmd.Int("max-iter")
	o.Cluster = sampling.ClusterSet(cmd.String("cluster"))
	o.Gap = sampling.GapKind(cmd.String("gap"))
	o.Epsilon = cmd.Float("epsilon")
	o.Smoothing = cmd.Float("smoothing")
	o.Temperature = cmd.Float("temperature")
	o.Within = sampling.WithinKind(cmd.String("within"))
	o.LanguageCap = cmd.Int("language-cap")
	o.LanguageShare = cmd.Float("language-share")
	o.IncludeTarget = cmd.Bool("include-target")
	o.Languages = langs
	o.Seed = cmd.Uint64("seed")
	if !cmd.Bool("quiet") {
		o.Progress = cmd.Root().ErrWriter
	}
	return o, nil
}

// readPoolMeta reads one {"id", "language"} object per line; line i
// describes pool row i. Blank lines are not allowed: they would shift rows.
func readPoolMeta(path string) ([]sampling.Item, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("select: %w", err)
	}
	defer f.Close()
	var items []sampling.Item
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<26)
	for line := 1; sc.Scan(); line++ {
		var rec struct {
			ID       json.RawMessage `json:"id"`
			Language string          `json:"language"`
		}
		if err := json.Unmarshal([]byte(strings.TrimSpace(sc.Text())), &rec); err != nil {
			return nil, fmt.Errorf("select: %s line %d: %v", path, line, err)
		}
		// IDs may be strings or numbers (the Aya Dataset numbers its rows).
		it := sampling.Item{ID: string(rec.ID), Language: rec.Language}
		var s string
		if json.Unmarshal(rec.ID, &s) == nil {
			it.ID = s
		}
		if it.ID == "" || it.ID == "null" || it.Language == "" {
			return nil, fmt.Errorf("select: %s line %d: want {\"id\": ..., \"language\": ...}", path, line)
		}
		items = append(items, it)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("select: %s: %w", path, err)
	}
	return items, nil
}
