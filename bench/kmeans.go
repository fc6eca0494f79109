package bench

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"time"

	"github.com/compassml/compass/sampling"
	"github.com/compassml/compass/tensor"
)

//go:embed sklearn_kmeans.py
var sklearnKMeansScript []byte

// kmeansCase is one benchmark size: N rows of dimension D into K clusters,
// Iters Lloyd iterations from the same initial centroids on both sides.
type kmeansCase struct {
	N, D, K, Iters int
}

func (c kmeansCase) String() string {
	return fmt.Sprintf("N=%d d=%d K=%d, %d iterations", c.N, c.D, c.K, c.Iters)
}

// runKMeans times Lloyd k-means, compass against scikit-learn's
// KMeans(algorithm="lloyd") on the same float32 data from the same initial
// centroids, with tol = 0 and n_init = 1 so that both run exactly Iters
// iterations, at each thread count. The data are 100 overlapping Gaussian
// blobs, so that assignments keep changing for all the iterations.
func runKMeans(w io.Writer, o Options) ([]Result, error) {
	c := kmeansCase{N: 200000, D: 768, K: 100, Iters: 20}
	if o.Quick {
		c = kmeansCase{N: 5000, D: 64, K: 20, Iters: 5}
	}
	dir, err := os.MkdirTemp(o.TempDir, "compass-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	fmt.Fprintf(o.Log, "kmeans: generating %s\n", c)
	x, init := kmeansData(c)
	xPath, initPath := filepath.Join(dir, "x.npy"), filepath.Join(dir, "init.npy")
	if err := sampling.WriteNPY(xPath, x); err != nil {
		return nil, err
	}
	if err := sampling.WriteNPY(initPath, init); err != nil {
		return nil, err
	}

	var results []Result
	var rows [][]string
	for _, threads := range o.Threads {
		fmt.Fprintf(o.Log, "kmeans: compass, %d thread(s)\n", threads)
		ours, err := compassKMeans(o, threads, c, x, init)
		if err != nil {
			return nil, err
		}
		results = append(results, Result{Suite: "kmeans", Case: c.String(), Impl: "compass", Threads: threads,
			Value: float64(ours.iters) / ours.seconds, Unit: "iterations/s",
			Note: fmt.Sprintf("%d iterations in %.3f s, kernel %s", ours.iters, ours.seconds, tensor.GEMMKernel())})
		row := []string{c.String(), fmt.Sprint(threads), fmt.Sprintf("%.2f", ours.seconds)}

		fmt.Fprintf(o.Log, "kmeans: scikit-learn, %d thread(s)\n", threads)
		theirs, err := sklearnKMeans(o, threads, xPath, initPath, c.Iters)
		if err != nil {
			fmt.Fprintf(o.Log, "scikit-learn: %v\n", err)
			rows = append(rows, append(row, "-", "-", fmt.Sprint(ours.iters), "-"))
			continue
		}
		results = append(results, Result{Suite: "kmeans", Case: c.String(), Impl: "scikit-learn", Threads: threads,
			Value: float64(theirs.NIter) / theirs.Seconds, Unit: "iterations/s",
			Note: fmt.Sprintf("%d iterations in %.3f s, scikit-learn %s", theirs.NIter, theirs.Seconds, theirs.Version)})
		rel := math.Abs(ours.inertia-theirs.Inertia) / theirs.Inertia
		rows = append(rows, append(row, fmt.Sprintf("%.2f", theirs.Seconds), ratio(theirs.Seconds, ours.seconds),
			fmt.Sprintf("%d / %d", ours.iters, theirs.NIter), fmt.Sprintf("%.1e", rel)))
	}
	table(w, "Lloyd k-means, seconds for the whole fit (median; speed-up = scikit-learn / compass)",
		[]string{"case", "threads", "compass s", "scikit-learn s", "speed-up", "iterations", "inertia rel. diff"}, rows)
	return results, nil
}

// kmeansData draws c.N rows around c.K/2 random centres (unit variance
// centres, noise of standard deviation 1.5: heavily overlapping) and takes
// every (N/K)-th row as the initial centroids.
func kmeansData(c kmeansCase) (x, init *tensor.Tensor) {
	rng := rand.New(rand.NewPCG(1, 2))
	blobs := max(1, c.K/2)
	centres := make([]float32, blobs*c.D)
	for i := range centres {
		centres[i] = float32(rng.NormFloat64())
	}
	x = tensor.New(tensor.F32, c.N, c.D)
	v := x.F32()
	for i := 0; i < c.N; i++ {
		b := rng.IntN(blobs)
		for j := 0; j < c.D; j++ {
			v[i*c.D+j] = centres[b*c.D+j] + float32(1.5*rng.NormFloat64())
		}
	}
	init = tensor.New(tensor.F32, c.K, c.D)
	for k := 0; k < c.K; k++ {
		r := k * (c.N / c.K)
		copy(init.F32()[k*c.D:(k+1)*c.D], v[r*c.D:(r+1)*c.D])
	}
	return x, init
}

type kmeansRun struct {
	seconds float64
	iters   int
	inertia float64
}

func compassKMeans(o Options, threads int, c kmeansCase, x, init *tensor.Tensor) (kmeansRun, error) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(threads))
	var res *sampling.KMeansResult
	d, err := measure(o.MinTime, func() error {
		var err error
		res, err = sampling.KMeans(x, sampling.KMeansOptions{K: c.K, Init: init, NInit: 1, MaxIter: c.Iters, Tol: 0})
		return err
	})
	if err != nil {
		return kmeansRun{}, err
	}
	return kmeansRun{seconds: d.Seconds(), iters: res.Iterations, inertia: res.Inertia}, nil
}

type sklearnRun struct {
	Seconds float64 `json:"seconds"`
	NIter   int     `json:"n_iter"`
	Inertia float64 `json:"inertia"`
	Version string  `json:"sklearn"`
}

// sklearnKMeans runs the scikit-learn script in its own process, so that
// its OpenMP and BLAS thread counts are set before they start.
func sklearnKMeans(o Options, threads int, xPath, initPath string, iters int) (sklearnRun, error) {
	script := filepath.Join(filepath.Dir(xPath), "sklearn_kmeans.py")
	if err := os.WriteFile(script, sklearnKMeansScript, 0o644); err != nil {
		return sklearnRun{}, err
	}
	cmd := exec.Command(o.Python, script, fmt.Sprint(threads), fmt.Sprint(o.MinTime.Seconds()), xPath, initPath, fmt.Sprint(iters))
	cmd.Stderr = o.Log
	t0 := time.Now()
	out, err := cmd.Output()
	if err != nil {
		return sklearnRun{}, fmt.Errorf("%s %s: %w (is python3-sklearn installed?)", o.Python, script, err)
	}
	var r sklearnRun
	if err := json.Unmarshal(out, &r); err != nil {
		return sklearnRun{}, fmt.Errorf("scikit-learn output %q: %w", out, err)
	}
	fmt.Fprintf(o.Log, "kmeans: scikit-learn took %s in all\n", time.Since(t0).Round(time.Second))
	return r, nil
}
