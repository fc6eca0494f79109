package engine

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/compassml/compass/internal/atomicfile"
	"github.com/compassml/compass/sampling/cluster"
	"github.com/compassml/compass/sampling/embed"
	"github.com/compassml/compass/tensor"
)

// ClusterOptions say what `compass cluster` runs: k-means over the rows of
// one or more embedding files, K fixed or chosen by silhouette.
type ClusterOptions struct {
	// Inputs are embedding files (.npy, .safetensors, .parquet) whose rows
	// are clustered together, in order (files without rows add none).
	Inputs []string
	// K is the number of clusters; 0 chooses K by silhouette among KRange.
	K      int
	KRange []int
	// KMeans holds Spherical, Seed, MaxIter, NInit, Tol, MiniBatch and
	// Progress; K and Backend are set by Cluster.
	KMeans cluster.KMeansOptions
	// SilhouetteSample is how many rows the silhouette is computed on: 0
	// means 10,000, negative all. Its distance follows KMeans.Spherical
	// and its sample KMeans.Seed.
	SilhouetteSample int
	Backend          tensor.Backend // nil: the CPU
	// OutputDir receives assignments.jsonl, centroids.npy and clusters.json.
	OutputDir string
}

// ClusterSummary is clusters.json.
type ClusterSummary struct {
	Inputs     []string         `json:"inputs"`
	Rows       int              `json:"rows"`
	Dim        int              `json:"dim"`
	K          int              `json:"k"`
	Spherical  bool             `json:"spherical"`
	Seed       uint64           `json:"seed"`
	Inertia    float64          `json:"inertia"`
	Silhouette *float64         `json:"silhouette,omitempty"` // absent when it cannot be computed (K = 1, say)
	Iterations int              `json:"iterations"`
	Converged  bool             `json:"converged"`
	Sizes      []int            `json:"sizes"`
	KScores    []cluster.KScore `json:"k_scores,omitempty"` // every K tried, when K was chosen
}

// ClustersFile is the name of the summary in a Cluster output directory.
const ClustersFile = "clusters.json"

// Cluster clusters the rows of o.Inputs and writes the assignments, the
// centroids and the summary into o.OutputDir, each atomically.
func Cluster(o ClusterOptions) (*ClusterSummary, error) {
	if o.OutputDir == "" {
		return nil, fmt.Errorf("cluster: no output directory")
	}
	if len(o.Inputs) == 0 {
		return nil, fmt.Errorf("cluster: no input embeddings")
	}
	st, err := loadEmbeddingRows(o.Inputs)
	if err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	x, rows := st.X, st.Rows
	if x == nil {
		return nil, fmt.Errorf("cluster: %v hold no rows", o.Inputs)
	}
	km := o.KMeans
	km.K, km.Backend = o.K, o.Backend
	so := cluster.SilhouetteOptions{Cosine: km.Spherical, SampleSize: o.SilhouetteSample, Seed: km.Seed, Backend: o.Backend}
	sum := &ClusterSummary{Inputs: o.Inputs, Rows: x.Dim(0), Dim: x.Dim(1), Spherical: km.Spherical, Seed: km.Seed}
	var res *cluster.KMeansResult
	if o.K > 0 {
		if res, err = cluster.KMeans(x, km); err != nil {
			return nil, err
		}
		// A silhouette needs 2 <= K < rows; without it the rest stands.
		if s, err := cluster.Silhouette(x, res.Labels, so); err == nil {
			sum.Silhouette = &s
		}
	} else {
		if res, sum.KScores, err = cluster.ChooseK(x, o.KRange, km, so); err != nil {
			return nil, err
		}
		for _, s := range sum.KScores {
			if s.K == len(res.Sizes) {
				sum.Silhouette = &s.Silhouette
			}
		}
	}
	sum.K, sum.Inertia, sum.Iterations, sum.Converged, sum.Sizes = len(res.Sizes), res.Inertia, res.Iterations, res.Converged, res.Sizes
	if err := writeClusters(o.OutputDir, rows, res, sum); err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	return sum, nil
}

// ReadClusterSummary reads the clusters.json of a Cluster output directory.
func ReadClusterSummary(dir string) (*ClusterSummary, error) {
	var sum ClusterSummary
	if err := readJSONFile(filepath.Join(dir, ClustersFile), &sum); err != nil {
		return nil, err
	}
	return &sum, nil
}

// stackedEmbeddings are embedding files stacked by loadEmbeddingRows.
type stackedEmbeddings struct {
	X        *tensor.Tensor // every file's vectors, in order; nil when they hold no rows at all
	Rows     []embed.Row    // their rows, nil unless every file has them
	Embedder string         // the first that a file names
	Counts   []int          // how many rows each file holds
}

// loadEmbeddingRows stacks the vectors of embedding files, and their rows
// where every file has them. The files are read into one matrix
// (embed.LoadStacked): a pool's vectors are not held twice.
func loadEmbeddingRows(paths []string) (*stackedEmbeddings, error) {
	x, es, err := embed.LoadStacked(paths, embed.LoadOptions{})
	if err != nil {
		return nil, err
	}
	st := &stackedEmbeddings{}
	haveRows := true
	from := "" // the first file that names its embedder
	for i, e := range es {
		if err := embed.SameEmbedder(from, st.Embedder, paths[i], e.Embedder); err != nil {
			return nil, err
		}
		if st.Embedder == "" {
			st.Embedder, from = e.Embedder, paths[i]
		}
		st.Counts = append(st.Counts, e.Vectors.Dim(0))
		if e.Vectors.Dim(0) > 0 {
			haveRows = haveRows && e.Rows != nil
			st.Rows = append(st.Rows, e.Rows...)
		}
	}
	if x.Dim(0) == 0 {
		return st, nil // X nil: no rows at all
	}
	st.X = x
	if !haveRows {
		st.Rows = nil
	}
	return st, nil
}

// clusterOutputs are the files writeClusters writes, in the order it
// writes them: ClustersFile, the summary that names the set, last.
var clusterOutputs = []string{"assignments.jsonl", "centroids.npy", ClustersFile}

// clusterHook is called after each file writeClusters writes; a test
// stops it there, as a kill would.
var clusterHook = func(file string) {}

// writeClusters writes the three output files, each atomically. An earlier
// run's files (and the temporary files of one killed while writing) are
// removed first, summary first: a run stopped midway leaves some of its
// own files, never a mix of two runs' (K = 9 labels beside 6 centroids).
func writeClusters(dir string, rows []embed.Row, res *cluster.KMeansResult, sum *ClusterSummary) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := removeOutputs(dir, ClustersFile, "centroids.npy", "assignments.jsonl"); err != nil { // the summary first
		return err
	}
	// Streamed into the file, not built in memory first: a line per row
	// of the pool.
	err := atomicfile.Write(filepath.Join(dir, clusterOutputs[0]), func(w io.Writer) error {
		enc := json.NewEncoder(w)
		for i, l := range res.Labels {
			a := struct {
				Row     int    `json:"row"`
				ID      string `json:"id,omitempty"`
				Cluster int32  `json:"cluster"`
			}{Row: i, Cluster: l}
			if rows != nil {
				a.ID = rows[i].ID
			}
			if err := enc.Encode(a); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	clusterHook(clusterOutputs[0])
	if err := embed.WriteNPY(filepath.Join(dir, clusterOutputs[1]), res.Centroids); err != nil {
		return err
	}
	clusterHook(clusterOutputs[1])
	return writeJSONFile(filepath.Join(dir, clusterOutputs[2]), sum)
}
