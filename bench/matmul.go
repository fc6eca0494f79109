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
	"strings"

	"github.com/compassml/compass/tensor"
	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas32"
)

//go:embed torch_matmul.py
var torchMatMulScript []byte

type matmulCase struct {
	Name   string `json:"name"`
	M      int    `json:"m"`
	N      int    `json:"n"`
	K      int    `json:"k"`
	TransB bool   `json:"trans_b"`
	DType  string `json:"dtype"`
}

func matmulCases(quick bool) []matmulCase {
	shapes := []matmulCase{
		{Name: "square 1024", M: 1024, N: 1024, K: 1024},
		{Name: "square 2048", M: 2048, N: 2048, K: 2048},
		// y = x W^T for 2048 tokens through Llama-3.1-8B's q_proj and up_proj.
		{Name: "2048x4096x4096 (x W^T)", M: 2048, N: 4096, K: 4096, TransB: true},
		{Name: "2048x14336x4096 (x W^T)", M: 2048, N: 14336, K: 4096, TransB: true},
	}
	if quick {
		shapes = []matmulCase{{Name: "square 512", M: 512, N: 512, K: 512},
			{Name: "512x1024x1024 (x W^T)", M: 512, N: 1024, K: 1024, TransB: true}}
	}
	var cases []matmulCase
	for _, dt := range []string{"f32", "bf16"} {
		for _, s := range shapes {
			s.DType = dt
			cases = append(cases, s)
		}
	}
	return cases
}

func runMatMul(w io.Writer, o Options) ([]Result, error) {
	cases := matmulCases(o.Quick)
	var results []Result
	var rows [][]string
	for _, threads := range o.Threads {
		torchRes, torchErr := torchMatMul(o, threads, cases)
		if torchErr != nil {
			fmt.Fprintf(o.Log, "pytorch: %v\n", torchErr)
		}
		for _, c := range cases {
			fmt.Fprintf(o.Log, "matmul %s %s, %d thread(s)\n", c.Name, c.DType, threads)
			ours, err := compassMatMul(o, threads, c)
			if err != nil {
				return nil, err
			}
			r := Result{Suite: "matmul", Case: c.Name + " " + c.DType, Impl: "compass", Threads: threads,
				Value: ours, Unit: "GFLOP/s", Note: "kernel " + tensor.GEMMKernel()}
			results = append(results, r)
			row := []string{c.Name, c.DType, fmt.Sprint(threads), fmt.Sprintf("%.1f", ours)}
			theirs, ok := torchRes[c.Name+" "+c.DType]
			if ok {
				results = append(results, Result{Suite: "matmul", Case: r.Case, Impl: "pytorch", Threads: threads, Value: theirs, Unit: "GFLOP/s"})
				row = append(row, fmt.Sprintf("%.1f", theirs), ratio(ours, theirs))
			} else {
				row = append(row, "-", "-")
			}
			gon := "-"
			// gonum is slow; it runs on the smaller f32 shapes only, for context.
			if c.DType == "f32" && c.M*c.N*c.K <= 2048*2048*2048 {
				g, err := gonumMatMul(o, threads, c)
				if err != nil {
					return nil, err
				}
				results = append(results, Result{Suite: "matmul", Case: r.Case, Impl: "gonum", Threads: threads, Value: g, Unit: "GFLOP/s"})
				gon = fmt.Sprintf("%.1f", g)
			}
			rows = append(rows, append(row, gon))
		}
	}
	table(w, "CPU matmul, GFLOP/s (median of repeated runs; ratio = compass / pytorch)",
		[]string{"shape (MxNxK)", "inputs", "threads", "compass", "pytorch", "ratio", "gonum"}, rows)
	return results, nil
}

func randomF32(rng *rand.Rand, shape ...int) *tensor.Tensor {
	t := tensor.New(tensor.F32, shape...)
	for i := range t.F32() {
		t.F32()[i] = float32(rng.NormFloat64())
	}
	return t
}

func compassMatMul(o Options, threads int, c matmulCase) (float64, error) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(threads))
	rng := rand.New(rand.NewPCG(1, 2))
	cpu := tensor.NewCPU()
	a := randomF32(rng, c.M, c.K)
	b := randomF32(rng, c.K, c.N)
	if c.TransB {
		b = randomF32(rng, c.N, c.K)
	}
	if c.DType == "bf16" {
		ab, bb := tensor.New(tensor.BF16, a.Shape()...), tensor.New(tensor.BF16, b.Shape()...)
		if err := cpu.Copy(ab, a); err != nil {
			return 0, err
		}
		if err := cpu.Copy(bb, b); err != nil {
			return 0, err
		}
		a, b = ab, bb
	}
	out := tensor.New(tensor.F32, c.M, c.N) // f32 accumulate and output, as the decoder uses it
	d, err := measure(o.MinTime, func() error { return cpu.MatMul(out, a, b, false, c.TransB, 1, 0) })
	if err != nil {
		return 0, err
	}
	return 2 * float64(c.M) * float64(c.N) * float64(c.K) / d.Seconds() / 1e9, nil
}

func gonumMatMul(o Options, threads int, c matmulCase) (float64, error) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(threads))
	rng := rand.New(rand.NewPCG(1, 2))
	general := func(r, cols int) blas32.General {
		g := blas32.General{Rows: r, Cols: cols, Stride: cols, Data: make([]float32, r*cols)}
		for i := range g.Data {
			g.Data[i] = float32(rng.NormFloat64())
		}
		return g
	}
	a := general(c.M, c.K)
	b, tb := general(c.K, c.N), blas.NoTrans
	if c.TransB {
		b, tb = general(c.N, c.K), blas.Trans
	}
	out := general(c.M, c.N)
	d, err := measure(o.MinTime, func() error {
		blas32.Gemm(blas.NoTrans, tb, 1, a, b, 0, out)
		return nil
	})
	if err != nil {
		return 0, err
	}
	return 2 * float64(c.M) * float64(c.N) * float64(c.K) / d.Seconds() / 1e9, nil
}

// torchMatMul runs the PyTorch script in its own process (so its thread
// count is set before its BLAS starts) and returns GFLOP/s by case.
func torchMatMul(o Options, threads int, cases []matmulCase) (map[string]float64, error) {
	dir, err := os.MkdirTemp(o.TempDir, "compass-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	script := filepath.Join(dir, "torch_matmul.py")
	if err := os.WriteFile(script, torchMatMulScript, 0o644); err != nil {
		return nil, err
	}
	js, _ := json.Marshal(cases)
	cmd := exec.Command(o.Python, script, fmt.Sprint(threads), fmt.Sprint(o.MinTime.Seconds()), string(js))
	cmd.Stderr = o.Log
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w (is python3-torch installed?)", o.Python, script, err)
	}
	res := map[string]float64{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		var r struct {
			Name   string  `json:"name"`
			DType  string  `json:"dtype"`
			GFLOPS float64 `json:"gflops"`
		}
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			return nil, fmt.Errorf("pytorch output %q: %w", line, err)
		}
		res[r.Name+" "+r.DType] = r.GFLOPS
	}
	return res, nil
}
