package main

import (
	"context"
	"fmt"

	"github.com/compassml/compass/engine"
	"github.com/compassml/compass/sampling/cluster"
	"github.com/urfave/cli/v3"
)

func clusterCommand() *cli.Command {
	return &cli.Command{
		Name:  "cluster",
		Usage: "k-means over embeddings: assignments, centroids, inertia, silhouette",
		Description: "Reads embeddings (.npy, .safetensors or .parquet, one row per item) and clusters them\n" +
			"with k-means++ seeding and Lloyd iterations (or mini-batch k-means), K fixed with --k or\n" +
			"chosen by silhouette over --k-range. Writes into --output-dir: assignments.jsonl (row, id,\n" +
			"cluster), centroids.npy (float32 [K, d]) and clusters.json (K, inertia, silhouette,\n" +
			"iterations, sizes, and the silhouette of every K tried).",
		Flags: []cli.Flag{
			&cli.StringSliceFlag{Name: "input", Required: true, Usage: "embeddings file (.npy, .safetensors, .parquet); repeat it to cluster several files' rows together (one embedder)"},
			&cli.IntFlag{Name: "k", Usage: "number of clusters (0: choose by silhouette over --k-range)"},
			&cli.StringFlag{Name: "k-range", Value: "80:120:10", Usage: "LO:HI[:STEP] for choosing K by silhouette (STEP default 10)"},
			&cli.BoolFlag{Name: "spherical", Usage: "cosine k-means: unit rows, re-normalised centroids, cosine silhouette"},
			&cli.Uint64Flag{Name: "seed", Usage: "random seed"},
			&cli.IntFlag{Name: "max-iter", Value: 300, Usage: "Lloyd iterations per restart (epochs with --mini-batch)"},
			&cli.IntFlag{Name: "n-init", Value: 1, Usage: "restarts from independent k-means++ seedings; the lowest inertia wins"},
			&cli.FloatFlag{Name: "tol", Value: 1e-4, Usage: "stop when the centroid shift is below tol x the mean feature variance"},
			&cli.IntFlag{Name: "mini-batch", Usage: "mini-batch k-means with this batch size (0: full Lloyd)"},
			&cli.IntFlag{Name: "silhouette-sample", Value: 10000, Usage: "rows the silhouette is computed on (-1: all)"},
			&cli.StringFlag{Name: "output-dir", Required: true, Usage: "directory for assignments.jsonl, centroids.npy, clusters.json"},
			deviceFlag(),
			&cli.BoolFlag{Name: "quiet", Usage: "no progress lines on stderr"},
		},
		Action: func(ctx context.Context, cmd *cli.Command) error {
			if err := intFlagsAtLeast(cmd, "cluster", "k", 0, "max-iter", 1, "n-init", 1, "mini-batch", 0); err != nil {
				return err
			}
			if v := cmd.Int("silhouette-sample"); v == 0 || v < -1 {
				return fmt.Errorf("cluster: --silhouette-sample %d: want a number of rows, or -1 for all", v)
			}
			if v := cmd.Float("tol"); !(v >= 0) {
				return fmt.Errorf("cluster: --tol %v: want 0 or more", v)
			}
			o := engine.ClusterOptions{
				Inputs: cmd.StringSlice("input"),
				K:      int(cmd.Int("k")),
				KMeans: cluster.KMeansOptions{Spherical: cmd.Bool("spherical"), Seed: cmd.Uint64("seed"),
					MaxIter: int(cmd.Int("max-iter")), NInit: int(cmd.Int("n-init")), Tol: cmd.Float("tol")},
				SilhouetteSample: int(cmd.Int("silhouette-sample")),
				OutputDir:        cmd.String("output-dir"),
			}
			if o.K == 0 {
				ks, err := kRangeFlag(cmd.String("k-range"))
				if err != nil {
					return fmt.Errorf("cluster: %w", err)
				}
				o.KRange = ks
			}
			if !cmd.Bool("quiet") {
				o.KMeans.Progress = cmd.Root().ErrWriter
			}
			if n := cmd.Int("mini-batch"); n > 0 {
				o.KMeans.MiniBatch = &cluster.MiniBatchOptions{BatchSize: int(n)}
			}
			be, release, err := openBackend(cmd)
			if err != nil {
				return err
			}
			defer release()
			o.Backend = be
			sum, err := engine.Cluster(o)
			if err != nil {
				return err
			}
			w := cmd.Root().Writer
			fmt.Fprintf(w, "%d rows of dimension %d in %d clusters: inertia %.6g after %d iterations", sum.Rows, sum.Dim, sum.K, sum.Inertia, sum.Iterations)
			if sum.Silhouette != nil {
				fmt.Fprintf(w, ", silhouette %.4f", *sum.Silhouette)
			}
			fmt.Fprintf(w, "\nwritten to %s\n", o.OutputDir)
			return nil
		},
	}
}

// intFlagsAtLeast checks integer flags against their least meaningful
// values, given as name, least, name, least, ...: the library reads 0 as
// "the default" (--max-iter 0 ran 300 iterations), where on the command
// line it is a mistake to name, not to replace.
func intFlagsAtLeast(cmd *cli.Command, command string, pairs ...any) error {
	for i := 0; i < len(pairs); i += 2 {
		name, least := pairs[i].(string), pairs[i+1].(int)
		if v := cmd.Int(name); v < least {
			return fmt.Errorf("%s: --%s %d: want %d or more", command, name, v, least)
		}
	}
	return nil
}

// kRangeFlag reads --k-range, naming the flag in its error the way the
// other flag errors do: "--k-range 5:2: need 2 <= LO <= HI ...".
func kRangeFlag(s string) ([]int, error) {
	ks, err := cluster.ParseKRange(s)
	if e, ok := err.(*cluster.KRangeError); ok {
		return nil, fmt.Errorf("--k-range %s: %s", s, e.Reason)
	}
	return ks, err
}
