// Package bench measures compass side by side with the tools people use
// today, in one run on one machine, and prints the ratios. Nothing here
// asserts a speed: results are printed, and recorded as JSONL (with the
// machine and the date) for bench/results/.
package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/compassml/compass/cgo"
	"github.com/compassml/compass/internal/atomicfile"
)

// Options select and size the benchmarks.
type Options struct {
	Only    []string      // suite names to run; all when empty
	Python  string        // interpreter with torch and scikit-learn (Debian's is /usr/bin/python3)
	Threads []int         // thread counts to compare at; default 1 and GOMAXPROCS
	MinTime time.Duration // how long to repeat each measurement (at least one run after a warm-up)
	Quick   bool          // smaller sizes, for a smoke run
	// GPUGroups are the GPU suite's groups to run (cgo.GPUBenchGroups), all
	// when empty; each reference runs with its group only.
	GPUGroups []string
	TempDir   string    // where scratch files go; os.TempDir() when empty
	Log       io.Writer // progress lines; nil for none
}

// Result is one measurement.
type Result struct {
	Suite   string  `json:"suite"`
	Case    string  `json:"case"`
	Impl    string  `json:"impl"` // "compass", "pytorch", "gonum", "read(2)", ...
	Threads int     `json:"threads,omitempty"`
	Value   float64 `json:"value"`
	Unit    string  `json:"unit"` // higher is better, except for times (us, ms, s/step) and memory (peak_GiB)
	Note    string  `json:"note,omitempty"`
}

// Machine identifies where results were measured.
type Machine struct {
	Date      string `json:"date"`
	CPU       string `json:"cpu"`
	Cores     int    `json:"cores"`
	GoVersion string `json:"go"`
	OS        string `json:"os"`
}

// Suites lists the suite names in the order they run.
var Suites = []string{"safetensors", "matmul", "train", "train-run", "generate", "encode", "kmeans", "tokenize", "gpu"}

// Run runs the selected suites, printing a table for each to w. It goes
// on past a suite that fails and returns every result measured with the
// failures joined: one missing reference must not cost the others. Once
// ctx is done no further suite starts (the one running finishes, but for
// the GPU suite, which stops at its next measurement): the results so far
// come back with an error naming what was not run.
func Run(ctx context.Context, w io.Writer, o Options) ([]Result, error) {
	if o.Python == "" {
		o.Python = "/usr/bin/python3"
	}
	for _, n := range o.Threads {
		if n < 1 {
			return nil, fmt.Errorf("bench: --threads %d: at least 1", n)
		}
	}
	if len(o.Threads) == 0 {
		o.Threads = []int{1}
		if n := runtime.GOMAXPROCS(0); n > 1 {
			o.Threads = append(o.Threads, n)
		}
	}
	if o.MinTime == 0 {
		o.MinTime = 2 * time.Second
	}
	if o.TempDir == "" {
		o.TempDir = os.TempDir()
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	for _, s := range o.Only {
		if !slices.Contains(Suites, s) {
			return nil, fmt.Errorf("bench: unknown suite %q (have %s)", s, strings.Join(Suites, ", "))
		}
	}
	for _, g := range o.GPUGroups {
		if !slices.Contains(cgo.GPUBenchGroups, g) {
			return nil, fmt.Errorf("bench: unknown GPU group %q (have %s)", g, strings.Join(cgo.GPUBenchGroups, ", "))
		}
	}
	var all []Result
	var errs []error
	for i, s := range Suites {
		if len(o.Only) > 0 && !slices.Contains(o.Only, s) {
			continue
		}
		if ctx.Err() != nil {
			var left []string
			for _, l := range Suites[i:] {
				if len(o.Only) == 0 || slices.Contains(o.Only, l) {
					left = append(left, l)
				}
			}
			errs = append(errs, fmt.Errorf("bench: interrupted: %s not run", strings.Join(left, ", ")))
			break
		}
		var rs []Result
		var err error
		switch s {
		case "safetensors":
			rs, err = runSafetensors(w, o)
		case "matmul":
			rs, err = runMatMul(w, o)
		case "train":
			rs, err = runTrain(w, o)
		case "train-run":
			rs, err = runTrainRun(w, o)
		case "generate":
			rs, err = runGenerate(w, o)
		case "encode":
			rs, err = runEncode(w, o)
		case "kmeans":
			rs, err = runKMeans(w, o)
		case "tokenize":
			rs, err = runTokenize(w, o)
		case "gpu":
			rs, err = runGPU(ctx, w, o)
		}
		all = append(all, rs...) // a suite that fails may have measured some
		if err != nil {
			fmt.Fprintf(o.Log, "bench: %s failed: %v; going on\n", s, err)
			errs = append(errs, fmt.Errorf("bench %s: %w", s, err))
		}
	}
	return all, errors.Join(errs...)
}

// ThisMachine describes the machine the benchmarks run on.
func ThisMachine() Machine {
	m := Machine{
		Date:      time.Now().UTC().Format("2006-01-02"),
		Cores:     runtime.NumCPU(),
		GoVersion: runtime.Version(),
		OS:        runtime.GOOS + "/" + runtime.GOARCH,
		CPU:       "unknown",
	}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	return m
}

// WriteResults writes the machine line and the results as JSONL to
// dir/DATE-NAME.jsonl, atomically, and returns the path. runErr is the
// run's failure, if any: the first line then carries it as "failed", so
// that a partial run does not read as a whole one.
func WriteResults(dir, name string, m Machine, rs []Result, runErr error) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	path := filepath.Join(dir, m.Date+"-"+name+".jsonl")
	return path, atomicfile.Write(path, func(w io.Writer) error {
		enc := json.NewEncoder(w)
		head := map[string]any{"machine": m}
		if runErr != nil {
			head["failed"] = runErr.Error()
		}
		if err := enc.Encode(head); err != nil {
			return err
		}
		for _, r := range rs {
			if err := enc.Encode(r); err != nil {
				return err
			}
		}
		return nil
	})
}

// measure runs fn once to warm up, then repeatedly until minTime has passed
// (at most 20 runs), and returns the median duration.
func measure(minTime time.Duration, fn func() error) (time.Duration, error) {
	if err := fn(); err != nil {
		return 0, err
	}
	var times []time.Duration
	start := time.Now()
	for len(times) == 0 || time.Since(start) < minTime && len(times) < 20 {
		t0 := time.Now()
		if err := fn(); err != nil {
			return 0, err
		}
		times = append(times, time.Since(t0))
	}
	sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
	return times[len(times)/2], nil
}

// table prints rows under a header with aligned columns.
func table(w io.Writer, title string, header []string, rows [][]string) {
	fmt.Fprintf(w, "\n%s\n", title)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, strings.Join(header, "\t")+"\t")
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t")+"\t")
	}
	tw.Flush()
}

func ratio(a, b float64) string {
	r := a / b
	if b == 0 || math.IsNaN(r) || math.IsInf(r, 0) {
		return "-" // a side that did not run, or measured no time
	}
	return fmt.Sprintf("%.2fx", r)
}
