package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/compassml/compass/internal/atomicfile"
	"github.com/compassml/compass/sampling"
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
			&cli.StringFlag{Name: "input", Required: true, Usage: "embeddings file (.npy, .safetensors, .parquet)"},
			&cli.IntFlag{Name: "k", Usage: "number of clusters (0: choose by silhouette over --k-range)"},
			&cli.StringFlag{Name: "k-range", Value: "80:120:10", Usage: "LO:HI[:STEP] for choosing K by silhouette"},
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
			e, err := sampling.LoadEmbeddings(cmd.String("input"), sampling.LoadOptions{})
			if err != nil {
				return err
			}
			b, release, err := openBackend(cmd)
			if err != nil {
				return err
			}
			defer release()
			o := sampling.KMeansOptions{K: cmd.Int("k"), Spherical: cmd.Bool("spherical"), Seed: cmd.Uint64("seed"),
				MaxIter: cmd.Int("max-iter"), NInit: cmd.Int("n-init"), Tol: cmd.Float("tol"), Backend: b}
			if !cmd.Bool("quiet") {
				o.Progress = cmd.Root().ErrWriter
			}
			if n := cmd.Int("mini-batch"); n > 0 {
				o.MiniBatch = &sampling.MiniBatchOptions{BatchSize: n}
			}
			so := sampling.SilhouetteOptions{Cosine: o.Spherical, SampleSize: cmd.Int("silhouette-sample"), Seed: o.Seed, Backend: b}
			sum := clusterSummary{Input: cmd.String("input"), Rows: e.Vectors.Dim(0), Dim: e.Vectors.Dim(1), Spherical: o.Spherical, Seed: o.Seed}
			var res *sampling.KMeansResult
			if o.K > 0 {
				if res, err = sampling.KMeans(e.Vectors, o); err != nil {
					return err
				}
				// A silhouette needs 2 <= K < rows; without it the rest stands.
				if s, err := sampling.Silhouette(e.Vectors, res.Labels, so); err == nil {
					sum.Silhouette = &s
				}
			} else {
				ks, err := parseKRange(cmd.String("k-range"))
				if err != nil {
					return err
				}
				if res, sum.KScores, err = sampling.ChooseK(e.Vectors, ks, o, so); err != nil {
					return err
				}
				for _, s := range sum.KScores {
					if s.K == len(res.Sizes) {
						sum.Silhouette = &s.Silhouette
					}
				}
			}
			sum.K, sum.Inertia, sum.Iterations, sum.Converged, sum.Sizes = len(res.Sizes), res.Inertia, res.Iterations, res.Converged, res.Sizes
			if err := writeClusters(cmd.String("output-dir"), e, res, sum); err != nil {
				return err
			}
			w := cmd.Root().Writer
			fmt.Fprintf(w, "%d rows of dimension %d in %d clusters: inertia %.6g after %d iterations", sum.Rows, sum.Dim, sum.K, sum.Inertia, sum.Iterations)
			if sum.Silhouette != nil {
				fmt.Fprintf(w, ", silhouette %.4f", *sum.Silhouette)
			}
			fmt.Fprintf(w, "\nwritten to %s\n", cmd.String("output-dir"))
			return nil
		},
	}
}

// clusterSummary is clusters.json.
type clusterSummary struct {
	Input      string            `json:"input"`
	Rows       int               `json:"rows"`
	Dim        int               `json:"dim"`
	K          int               `json:"k"`
	Spherical  bool              `json:"spherical"`
	Seed       uint64            `json:"seed"`
	Inertia    float64           `json:"inertia"`
	Silhouette *float64          `json:"silhouette,omitempty"`
	Iterations int               `json:"iterations"`
	Converged  bool              `json:"converged"`
	Sizes      []int             `json:"sizes"`
	KScores    []sampling.KScore `json:"k_scores,omitempty"`
}

// parseKRange reads LO:HI or LO:HI:STEP (step 10 by default).
func parseKRange(s string) ([]int, error) {
	parts := strings.Split(s, ":")
	if len(parts) < 2 || len(parts) > 3 {
		return nil, fmt.Errorf("--k-range %q: want LO:HI or LO:HI:STEP", s)
	}
	v := []int{0, 0, 10}
	for i, p := range parts {
		n, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil {
			return nil, fmt.Errorf("--k-range %q: %q is not a number", s, p)
		}
		v[i] = n
	}
	return sampling.KRange(v[0], v[1], v[2])
}

// writeClusters writes the three output files, each atomically.
func writeClusters(dir string, e *sampling.Embeddings, res *sampling.KMeansResult, sum clusterSummary) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	for i, l := range res.Labels {
		a := struct {
			Row     int    `json:"row"`
			ID      string `json:"id,omitempty"`
			Cluster int32  `json:"cluster"`
		}{Row: i, Cluster: l}
		if e.Rows != nil {
			a.ID = e.Rows[i].ID
		}
		if err := enc.Encode(a); err != nil {
			return err
		}
	}
	if err := atomicfile.WriteBytes(filepath.Join(dir, "assignments.jsonl"), buf.Bytes()); err != nil {
		return err
	}
	if err := sampling.WriteNPY(filepath.Join(dir, "centroids.npy"), res.Centroids); err != nil {
		return err
	}
	js, err := json.MarshalIndent(sum, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteBytes(filepath.Join(dir, "clusters.json"), append(js, '\n'))
}
