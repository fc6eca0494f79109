package cluster

import (
	"encoding/json"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/compassml/compass/sampling/embed"
	"github.com/compassml/compass/sampling/internal/matrix"
	"github.com/compassml/compass/tensor"
)

// sklearnScript runs scikit-learn's KMeans on the data the test wrote:
// Lloyd from the given centroids for max_iter iterations with tol = 0, and
// from its own k-means++ with n_init restarts, for several random states. Data are float32 on disk and
// fitted as float64, so scikit-learn is the more exact of the two.
const sklearnScript = `
import json, sys
import numpy as np
from sklearn.cluster import KMeans
X = np.load(sys.argv[1]).astype(np.float64)
C = np.load(sys.argv[2]).astype(np.float64)
p = json.loads(sys.argv[3])
km = KMeans(n_clusters=C.shape[0], init=C, n_init=1, max_iter=p["max_iter"], tol=0, algorithm="lloyd").fit(X)
best = [KMeans(n_clusters=C.shape[0], n_init=p["n_init"], random_state=s, algorithm="lloyd").fit(X).inertia_
        for s in range(p["seeds"])]
print(json.dumps({"labels": km.labels_.tolist(), "inertia": float(km.inertia_), "n_iter": int(km.n_iter_),
                  "centers": km.cluster_centers_.ravel().tolist(), "best_inertia": best}))
`

// python returns the interpreter with scikit-learn: COMPASS_PYTHON or
// Debian's /usr/bin/python3. Without scikit-learn the test fails, saying
// what to install.
func python(t *testing.T) string {
	t.Helper()
	py := os.Getenv("COMPASS_PYTHON")
	if py == "" {
		py = "/usr/bin/python3"
	}
	if out, err := exec.Command(py, "-c", "import sklearn, numpy").CombinedOutput(); err != nil {
		t.Fatalf("%s cannot import scikit-learn (%v: %s); install it with: apt-get install python3-sklearn", py, err, out)
	}
	return py
}

// pythonCommand runs a script single-threaded: the results do not depend on
// it, and OpenMP threads spinning on a busy machine cost many seconds.
func pythonCommand(py string, args ...string) *exec.Cmd {
	cmd := exec.Command(py, args...)
	cmd.Env = append(os.Environ(), "OMP_NUM_THREADS=1", "OPENBLAS_NUM_THREADS=1")
	cmd.Stderr = os.Stderr
	return cmd
}

type sklearnResult struct {
	Labels      []int32   `json:"labels"`
	Inertia     float64   `json:"inertia"`
	NIter       int       `json:"n_iter"`
	Centers     []float64 `json:"centers"`
	BestInertia []float64 `json:"best_inertia"`
}

func TestKMeansAgainstScikitLearn(t *testing.T) {
	py := python(t)
	const seeds = 5
	for _, tc := range []struct {
		name          string
		n, d, k, kgen int
		sep           float64
		maxIter       int
		nInit         int
	}{
		{"overlapping blobs", 2000, 16, 10, 12, 1.5, 10, 4},
		{"uniform-like", 3000, 8, 20, 200, 0.5, 15, 3},
		{"many clusters", 4000, 32, 30, 25, 2, 8, 2},
		{"converges early", 1500, 4, 5, 5, 8, 100, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x, _ := blobs(uint64(tc.n), tc.n, tc.d, tc.kgen, tc.sep)
			// Start from rows spread through the data (every n/k-th row).
			init := tensor.New(tensor.F32, tc.k, tc.d)
			for j := 0; j < tc.k; j++ {
				r := j * (tc.n / tc.k)
				copy(init.F32()[j*tc.d:(j+1)*tc.d], x.F32()[r*tc.d:(r+1)*tc.d])
			}
			dir := t.TempDir()
			if err := embed.WriteNPY(filepath.Join(dir, "x.npy"), x); err != nil {
				t.Fatal(err)
			}
			if err := embed.WriteNPY(filepath.Join(dir, "c.npy"), init); err != nil {
				t.Fatal(err)
			}
			script := filepath.Join(dir, "km.py")
			if err := os.WriteFile(script, []byte(sklearnScript), 0o644); err != nil {
				t.Fatal(err)
			}
			params, _ := json.Marshal(map[string]int{"max_iter": tc.maxIter, "n_init": tc.nInit, "seeds": seeds})
			out, err := pythonCommand(py, script, filepath.Join(dir, "x.npy"), filepath.Join(dir, "c.npy"), string(params)).Output()
			if err != nil {
				t.Fatalf("scikit-learn: %v", err)
			}
			var sk sklearnResult
			if err := json.Unmarshal(out, &sk); err != nil {
				t.Fatal(err)
			}

			// Same start, same iterations: identical assignments. On these
			// data sets every row's second-nearest final centroid is at
			// least 1.9e-4 of (|x|^2 + 1) farther than its nearest, far
			// beyond float32 rounding, so no difference is a tie: any
			// fails, and the message says how close it was.
			ours, err := KMeans(x, KMeansOptions{K: tc.k, Init: init, MaxIter: tc.maxIter, Tol: 0})
			if err != nil {
				t.Fatal(err)
			}
			if ours.Iterations != sk.NIter {
				t.Errorf("iterations: ours %d, scikit-learn %d", ours.Iterations, sk.NIter)
			}
			differ := 0
			xv := x.F32()
			for i, l := range ours.Labels {
				if l == sk.Labels[i] {
					continue
				}
				if differ++; differ > 5 {
					continue
				}
				row := xv[i*tc.d : (i+1)*tc.d]
				da := sqDist64(row, sk.Centers[int(l)*tc.d:int(l+1)*tc.d])
				db := sqDist64(row, sk.Centers[int(sk.Labels[i])*tc.d:int(sk.Labels[i]+1)*tc.d])
				t.Errorf("row %d: ours %d (squared distance to scikit-learn's centroid %v), scikit-learn %d (%v; relative gap %.2g)",
					i, l, da, sk.Labels[i], db, (da-db)/(matrix.Norm2(row)+1))
			}
			if differ > 0 {
				t.Errorf("%d of %d assignments differ from scikit-learn's", differ, tc.n)
			}
			// Largest relative difference seen: 5.4e-11 (float32 data and
			// centroids on our side, float64 in scikit-learn).
			if rel := math.Abs(ours.Inertia-sk.Inertia) / sk.Inertia; rel > 1e-9 {
				t.Errorf("inertia: ours %v, scikit-learn %v (relative %.2g)", ours.Inertia, sk.Inertia, rel)
			}

			// From our own seeding: the best of n_init restarts is no worse
			// than scikit-learn's best of as many. Which single seed wins
			// is luck on data with many local minima, so the test compares
			// the mean over several seeds on each side.
			var ourMean, skMean float64
			for s := 0; s < seeds; s++ {
				best, err := KMeans(x, KMeansOptions{K: tc.k, NInit: tc.nInit, Seed: uint64(s), MaxIter: 300, Tol: 1e-4})
				if err != nil {
					t.Fatal(err)
				}
				ourMean += best.Inertia / seeds
				skMean += sk.BestInertia[s] / seeds
			}
			if ourMean > skMean*(1+1e-3) {
				t.Errorf("best of %d, mean over %d seeds: ours %v, scikit-learn %v", tc.nInit, seeds, ourMean, skMean)
			}
			t.Logf("same start: %d iterations, %d labels differ, inertia %.10g vs %.10g (relative %.2g); best of %d (mean of %d seeds): %.8g vs %.8g",
				ours.Iterations, differ, ours.Inertia, sk.Inertia, math.Abs(ours.Inertia-sk.Inertia)/sk.Inertia, tc.nInit, seeds, ourMean, skMean)
		})
	}
}

func sqDist64(x []float32, c []float64) float64 {
	var s float64
	for j, v := range x {
		e := float64(v) - c[j]
		s += e * e
	}
	return s
}

const sklearnSilhouette = `
import sys, json
import numpy as np
from sklearn.metrics import silhouette_score
X = np.load(sys.argv[1]).astype(np.float64)
labels = np.array(json.loads(sys.argv[2]))
print(json.dumps([silhouette_score(X, labels, metric="euclidean"), silhouette_score(X, labels, metric="cosine")]))
`

func TestSilhouetteAgainstScikitLearn(t *testing.T) {
	py := python(t)
	x, _ := blobs(21, 700, 12, 5, 2)
	res, err := KMeans(x, KMeansOptions{K: 6, Seed: 2})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := embed.WriteNPY(filepath.Join(dir, "x.npy"), x); err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(dir, "s.py")
	if err := os.WriteFile(script, []byte(sklearnSilhouette), 0o644); err != nil {
		t.Fatal(err)
	}
	labels, _ := json.Marshal(res.Labels)
	out, err := pythonCommand(py, script, filepath.Join(dir, "x.npy"), string(labels)).Output()
	if err != nil {
		t.Fatalf("scikit-learn: %v", err)
	}
	var want [2]float64
	if err := json.Unmarshal(out, &want); err != nil {
		t.Fatal(err)
	}
	for i, cosine := range []bool{false, true} {
		got, err := Silhouette(x, res.Labels, SilhouetteOptions{Cosine: cosine})
		if err != nil {
			t.Fatal(err)
		}
		if math.Abs(got-want[i]) > 1e-5 {
			t.Errorf("cosine %v: ours %v, scikit-learn %v", cosine, got, want[i])
		}
	}
}
