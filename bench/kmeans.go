package bench

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"time"

	"github.com/compassml/compass/sampling/cluster"
	"github.com/compassml/compass/sampling/embed"
	"github.com/compassml/compass/tensor"
	"github.com/compassml/compass/tensor/safetensors"
)

//go:embed sklearn_kmeans.py
var sklearnKMeansScript []byte

//go:embed faiss_kmeans.py
var faissKMeansScript []byte

// kmeansCase is one benchmark size: N rows of dimension D into K clusters,
// Iters Lloyd iterations from the same initial centroids on every side.
// Big cases run once, at the largest thread count only.
type kmeansCase struct {
	N, D, K, Iters int
	Big            bool
}

func (c kmeansCase) String() string {
	return fmt.Sprintf("N=%d d=%d K=%d, %d iterations", c.N, c.D, c.K, c.Iters)
}

// runKMeans times Lloyd k-means from the same initial centroids (tol 0, one
// init: exactly Iters iterations) for compass, scikit-learn's
// KMeans(algorithm="lloyd") and FAISS's CPU Kmeans (every point used), on
// the same float32 data, at each thread count, and compass's whole
// clustering run phase by phase (k-means++ seeding, the iterations, the
// silhouette on its default 10,000-row sample, writing centroids and
// labels). The data are overlapping Gaussian blobs, so that assignments
// keep changing for all the iterations. compass reads the input memory-
// mapped (safetensors), FAISS and scikit-learn through np.load (FAISS's
// memory-mapped, then copied: it needs contiguous memory).
func runKMeans(w io.Writer, o Options) ([]Result, error) {
	cases := []kmeansCase{{N: 60000, D: 256, K: 64, Iters: 20}, {N: 200000, D: 768, K: 100, Iters: 20},
		{N: 1000000, D: 256, K: 1024, Iters: 10, Big: true}}
	if o.Quick {
		cases = []kmeansCase{{N: 5000, D: 64, K: 20, Iters: 5}}
	}
	var results []Result
	var lloydRows, runRows [][]string
	for _, c := range cases {
		rs, lr, rr, err := runKMeansCase(o, c)
		if err != nil {
			return results, err
		}
		results, lloydRows, runRows = append(results, rs...), append(lloydRows, lr...), append(runRows, rr...)
	}
	table(w, "Lloyd k-means from the same initial centroids: ms per iteration (speed-up = theirs / compass; inertia relative to scikit-learn's)",
		[]string{"case", "threads", "compass", "scikit-learn", "faiss", "vs sklearn", "vs faiss", "inertia compass", "inertia faiss"}, lloydRows)
	table(w, "A whole clustering run, seconds: compass's phases, and FAISS's train + assignment",
		[]string{"case", "threads", "seeding", "iterations", "silhouette", "output", "compass total", "faiss total", "vs faiss"}, runRows)
	return results, nil
}

func runKMeansCase(o Options, c kmeansCase) (results []Result, lloydRows, runRows [][]string, err error) {
	dir, err := os.MkdirTemp(o.TempDir, "compass-bench-")
	if err != nil {
		return nil, nil, nil, err
	}
	defer os.RemoveAll(dir)
	fmt.Fprintf(o.Log, "kmeans: generating %s\n", c)
	xMem, init := kmeansData(c)
	xPath, initPath, stPath := filepath.Join(dir, "x.npy"), filepath.Join(dir, "init.npy"), filepath.Join(dir, "x.safetensors")
	if err := embed.WriteNPY(xPath, xMem); err != nil {
		return nil, nil, nil, err
	}
	if err := embed.WriteNPY(initPath, init); err != nil {
		return nil, nil, nil, err
	}
	if err := safetensors.Write(stPath, []safetensors.Entry{safetensors.EntryFromTensor("x", xMem)}, nil); err != nil {
		return nil, nil, nil, err
	}
	xMem = nil // from here on the data are read through the mapping
	f, err := safetensors.Open(stPath)
	if err != nil {
		return nil, nil, nil, err
	}
	defer f.Close()
	x, err := f.Tensor("x")
	if err != nil {
		return nil, nil, nil, err
	}
	threads := o.Threads
	if c.Big {
		threads = threads[len(threads)-1:]
	}
	for _, th := range threads {
		fmt.Fprintf(o.Log, "kmeans: %s: compass, %d thread(s)\n", c, th)
		ours, err := compassKMeans(o, th, c, x, init)
		if err != nil {
			return nil, nil, nil, err
		}
		results = append(results, Result{Suite: "kmeans", Case: c.String(), Impl: "compass", Threads: th,
			Value: float64(ours.iters) / ours.seconds, Unit: "iterations/s",
			Note: fmt.Sprintf("%d iterations in %.3f s, kernel %s", ours.iters, ours.seconds, tensor.GEMMKernel())})
		perIter := func(sec float64, n int) string { return fmt.Sprintf("%.1f", 1000*sec/float64(max(1, n))) }
		row := []string{c.String(), fmt.Sprint(th), perIter(ours.seconds, ours.iters)}

		fmt.Fprintf(o.Log, "kmeans: %s: scikit-learn, %d thread(s)\n", c, th)
		sk, skErr := sklearnKMeans(o, th, xPath, initPath, c.Iters, c.Big)
		fmt.Fprintf(o.Log, "kmeans: %s: faiss, %d thread(s)\n", c, th)
		fs, fsErr := faissKMeans(o, th, xPath, initPath, c.Iters)
		skCell, fsCell, skRatio, fsRatio, ourInertia, fsInertia := "-", "-", "-", "-", "-", "-"
		if skErr != nil {
			fmt.Fprintf(o.Log, "scikit-learn: %v\n", skErr)
		} else {
			results = append(results, Result{Suite: "kmeans", Case: c.String(), Impl: "scikit-learn", Threads: th,
				Value: float64(sk.NIter) / sk.Seconds, Unit: "iterations/s",
				Note: fmt.Sprintf("%d iterations in %.3f s, scikit-learn %s", sk.NIter, sk.Seconds, sk.Version)})
			skCell = perIter(sk.Seconds, sk.NIter)
			skRatio = ratio(sk.Seconds/float64(max(1, sk.NIter)), ours.seconds/float64(max(1, ours.iters)))
			ourInertia = fmt.Sprintf("%+.1e", (ours.inertia-sk.Inertia)/sk.Inertia)
		}
		if fsErr != nil {
			fmt.Fprintf(o.Log, "faiss: %v\n", fsErr)
		} else {
			results = append(results, Result{Suite: "kmeans", Case: c.String(), Impl: "faiss", Threads: th,
				Value: float64(fs.NIter) / fs.Train, Unit: "iterations/s",
				Note: fmt.Sprintf("%d iterations in %.3f s (+%.3f s assignment), faiss %s", fs.NIter, fs.Train, fs.Assign, fs.Version)})
			fsCell = perIter(fs.Train, fs.NIter)
			fsRatio = ratio(fs.Train/float64(max(1, fs.NIter)), ours.seconds/float64(max(1, ours.iters)))
			if skErr == nil {
				fsInertia = fmt.Sprintf("%+.1e", (fs.Inertia-sk.Inertia)/sk.Inertia)
			}
		}
		lloydRows = append(lloydRows, append(row, skCell, fsCell, skRatio, fsRatio, ourInertia, fsInertia))

		fmt.Fprintf(o.Log, "kmeans: %s: compass whole run, %d thread(s)\n", c, th)
		ph, err := compassWholeRun(th, c, x, dir)
		if err != nil {
			return nil, nil, nil, err
		}
		total := ph.seed + ph.iters + ph.silhouette + ph.output
		results = append(results, Result{Suite: "kmeans", Case: c.String() + ", whole run", Impl: "compass", Threads: th, Value: 1 / total, Unit: "runs/s",
			Note: fmt.Sprintf("seeding %.3f s, iterations %.3f s, silhouette %.3f s, output %.3f s", ph.seed, ph.iters, ph.silhouette, ph.output)})
		rr := []string{c.String(), fmt.Sprint(th), fmt.Sprintf("%.3f", ph.seed), fmt.Sprintf("%.3f", ph.iters),
			fmt.Sprintf("%.3f", ph.silhouette), fmt.Sprintf("%.3f", ph.output), fmt.Sprintf("%.3f", total), "-", "-"}
		if fsErr == nil {
			theirs := fs.Train + fs.Assign
			results = append(results, Result{Suite: "kmeans", Case: c.String() + ", whole run", Impl: "faiss", Threads: th, Value: 1 / theirs, Unit: "runs/s",
				Note: fmt.Sprintf("train %.3f s from the given centroids, assignment %.3f s; no silhouette", fs.Train, fs.Assign)})
			rr[7], rr[8] = fmt.Sprintf("%.3f", theirs), ratio(theirs, total)
		}
		runRows = append(runRows, rr)
	}
	return results, lloydRows, runRows, nil
}

// kmeansPhases are the times of compass's whole clustering run.
type kmeansPhases struct{ seed, iters, silhouette, output float64 }

// compassWholeRun clusters x as `compass cluster` does (k-means++ seeding
// on its default sample, Lloyd, the silhouette on a 10,000-row sample, the
// centroids and labels written out), with c.Iters iterations and tol 0.
func compassWholeRun(threads int, c kmeansCase, x *tensor.Tensor, dir string) (kmeansPhases, error) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(threads))
	var ph kmeansPhases
	res, err := cluster.KMeans(x, cluster.KMeansOptions{K: c.K, NInit: 1, MaxIter: c.Iters, Tol: 0, Seed: 1})
	if err != nil {
		return ph, err
	}
	ph.seed, ph.iters = res.SeedSeconds, res.LloydSeconds
	t0 := time.Now()
	if _, err := cluster.Silhouette(x, res.Labels, cluster.SilhouetteOptions{Seed: 1}); err != nil {
		return ph, err
	}
	ph.silhouette = time.Since(t0).Seconds()
	t0 = time.Now()
	labels, err := tensor.FromI32(res.Labels, len(res.Labels))
	if err == nil {
		err = safetensors.Write(filepath.Join(dir, "clusters.safetensors"),
			[]safetensors.Entry{safetensors.EntryFromTensor("centroids", res.Centroids), safetensors.EntryFromTensor("labels", labels)}, nil)
	}
	ph.output = time.Since(t0).Seconds()
	return ph, err
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
	var res *cluster.KMeansResult
	minTime := o.MinTime
	if c.Big {
		minTime = 0 // one warm-up and one timed run
	}
	d, err := measure(minTime, func() error {
		var err error
		res, err = cluster.KMeans(x, cluster.KMeansOptions{K: c.K, Init: init, NInit: 1, MaxIter: c.Iters, Tol: 0})
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
func sklearnKMeans(o Options, threads int, xPath, initPath string, iters int, big bool) (sklearnRun, error) {
	script := filepath.Join(filepath.Dir(xPath), "sklearn_kmeans.py")
	if err := os.WriteFile(script, sklearnKMeansScript, 0o644); err != nil {
		return sklearnRun{}, err
	}
	minTime := o.MinTime.Seconds()
	if big {
		minTime = 0
	}
	cmd := exec.Command(o.Python, script, fmt.Sprint(threads), fmt.Sprint(minTime), xPath, initPath, fmt.Sprint(iters))
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

type faissRun struct {
	Train   float64 `json:"train_seconds"`
	Assign  float64 `json:"assign_seconds"`
	NIter   int     `json:"n_iter"`
	Inertia float64 `json:"inertia"`
	Version string  `json:"faiss"`
}

// faissKMeans runs the FAISS script in its own process (its OpenMP thread
// count set there).
func faissKMeans(o Options, threads int, xPath, initPath string, iters int) (faissRun, error) {
	script := filepath.Join(filepath.Dir(xPath), "faiss_kmeans.py")
	if err := os.WriteFile(script, faissKMeansScript, 0o644); err != nil {
		return faissRun{}, err
	}
	cmd := exec.Command(o.Python, script, fmt.Sprint(threads), xPath, initPath, fmt.Sprint(iters))
	cmd.Stderr = o.Log
	out, err := cmd.Output()
	if err != nil {
		return faissRun{}, fmt.Errorf("%s %s: %w (is python3-faiss installed?)", o.Python, script, err)
	}
	var r faissRun
	if err := json.Unmarshal(out, &r); err != nil {
		return faissRun{}, fmt.Errorf("faiss output %q: %w", out, err)
	}
	return r, nil
}
