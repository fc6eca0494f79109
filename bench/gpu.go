package bench

import (
	"bufio"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	"github.com/compassml/compass/cgo"
)

//go:embed torch_sdpa.py
var torchSDPAScript []byte

//go:embed hf_train_step.py
var hfTrainStepScript []byte

//go:embed torch_kmeans.py
var torchKMeansScript []byte

// runGPU runs the GPU suite (cgo.RunGPUBenchmarks: every kernel and product
// on Llama-3.1-8B's sizes against the copy bandwidth and cuBLAS's bf16 rate
// measured in the same run, a k-means iteration on 1M x 768 points and 1024
// centroids, and one LoRA training step of Llama-3.1-8B's shapes) on CUDA
// device 0, then the references on the same GPU: PyTorch's flash SDPA on
// the attention's shape, PyTorch's matmul + argmin and index_add_ on the
// k-means shape, and HF transformers + PEFT doing the same training step
// (--python's interpreter, with torch, transformers and peft); with
// o.GPUGroups, those groups only (the ceilings always), each reference
// with its group. Without a CUDA device it says so and records nothing. --quick runs
// the suite on small sizes without the step or the references. Once ctx is
// done it stops at its next measurement and starts no reference: what was
// measured comes back, with tables, and the error says what was not.
func runGPU(ctx context.Context, w io.Writer, o Options) ([]Result, error) {
	be, err := cgo.NewBackend(0)
	if errors.Is(err, cgo.ErrNoDevice) {
		fmt.Fprintf(w, "\nGPU suite: skipped (%v)\n", err)
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer be.Close()
	var config []byte
	configPath, err := findInRepository(filepath.Join("testdata", "configs", "llama-3.1-8b.json"))
	if err == nil {
		config, err = os.ReadFile(configPath)
	}
	if err != nil && !o.Quick {
		fmt.Fprintf(o.Log, "gpu: %v: the training step is skipped\n", err)
	}

	var results []Result
	device := be.DeviceName() // in every result's note: the machine line names the CPU
	byName := map[string]cgo.BenchRecord{}
	var order []string // the records' names, in the order they came
	var profile []cgo.BenchRecord
	want := func(group string) bool { return len(o.GPUGroups) == 0 || slices.Contains(o.GPUGroups, group) }
	groups := o.GPUGroups
	if len(groups) > 0 && !slices.Contains(groups, "ceilings") {
		groups = append([]string{"ceilings"}, groups...) // every ratio's denominators, in the results too
	}
	// A group that fails leaves the others' results, the references and
	// the tables; its error is returned at the end, with what was measured.
	suiteErr := cgo.RunGPUBenchmarks(ctx, be, groups, config, o.Quick, o.Log, func(r cgo.BenchRecord) {
		if r.Text["work"] != "" {
			profile = append(profile, r)
			results = append(results, Result{Suite: "gpu", Case: r.Name + ": " + r.Text["work"], Impl: "compass", Value: r.Metrics["ms"], Unit: "ms", Note: device})
			return
		}
		byName[r.Name] = r
		order = append(order, r.Name)
		// Each record in the log as it comes: if the run is cut short (a
		// time limit on a lent machine), what it measured is still there.
		line := "gpu: " + r.Name
		for _, unit := range slices.Sorted(maps.Keys(r.Metrics)) {
			v := r.Metrics[unit]
			results = append(results, Result{Suite: "gpu", Case: r.Name, Impl: "compass", Value: v, Unit: unit, Note: device})
			line += fmt.Sprintf(" %s=%.4g", unit, v)
		}
		fmt.Fprintln(o.Log, line)
	})

	// The device's memory goes back before the references run: the
	// allocator still caches the training step's 35 GiB, and HF + PEFT's
	// step peaks at 36.5 GiB, at the edge of an 80 GiB H100 with the two
	// CUDA contexts and PyTorch's cache.
	if err := be.Close(); err != nil {
		suiteErr = errors.Join(suiteErr, fmt.Errorf("cuda: closing the device: %w", err))
	}

	// The references, on the same GPU, each with its group; none starts
	// once ctx is done.
	var sdpa, km, hf []map[string]any
	var notRun []string
	reference := func(group, what string) bool {
		switch {
		case o.Quick || !want(group):
			return false
		case ctx.Err() != nil:
			notRun = append(notRun, what)
			return false
		}
		fmt.Fprintf(o.Log, "gpu: %s\n", what)
		return true
	}
	dir, err := os.MkdirTemp(o.TempDir, "compass-bench-gpu-")
	if err != nil {
		return results, err
	}
	defer os.RemoveAll(dir)
	if reference("kernels", "PyTorch SDPA (flash) on the attention's shape") {
		if sdpa, err = runPythonJSONL(o, dir, "torch_sdpa.py", torchSDPAScript); err != nil {
			fmt.Fprintf(o.Log, "gpu: PyTorch SDPA: %v\n", err)
		}
	}
	if reference("kmeans", "PyTorch matmul + argmin on the k-means shape") {
		if km, err = runPythonJSONL(o, dir, "torch_kmeans.py", torchKMeansScript); err != nil {
			fmt.Fprintf(o.Log, "gpu: PyTorch k-means: %v\n", err)
		}
	}
	if config != nil && reference("train-step", "HF transformers + PEFT, the same training step") {
		if hf, err = runPythonJSONL(o, dir, "hf_train_step.py", hfTrainStepScript, configPath); err != nil {
			fmt.Fprintf(o.Log, "gpu: HF transformers + PEFT: %v\n", err)
		}
	}
	if len(notRun) > 0 {
		suiteErr = errors.Join(suiteErr, fmt.Errorf("interrupted: not run: %s", strings.Join(notRun, "; ")))
	}
	for _, r := range sdpa {
		results = append(results, Result{Suite: "gpu", Case: fmt.Sprint(r["bench"]), Impl: "pytorch-sdpa-flash", Value: num(r["us"]), Unit: "us", Note: device})
	}
	for _, r := range km {
		results = append(results, Result{Suite: "gpu", Case: fmt.Sprint(r["bench"]), Impl: "pytorch", Value: num(r["us"]), Unit: "us", Note: device})
	}
	for _, r := range hf {
		results = append(results,
			Result{Suite: "gpu", Case: "train_step_llama31_8b_r16_seq2048", Impl: "hf-transformers+peft", Value: num(r["tokens_per_s"]), Unit: "tokens/s", Note: device},
			Result{Suite: "gpu", Case: "train_step_llama31_8b_r16_seq2048", Impl: "hf-transformers+peft", Value: num(r["peak_memory_bytes"]) / (1 << 30), Unit: "peak_GiB", Note: device})
	}

	// Tables: the ceilings, each kernel against its ceiling, attention
	// against SDPA, the step against HF + PEFT, and the step's profile.
	copyGBs, tflops := byName["copy_dtod"].Metrics["GB/s"], byName["cublas_bf16_gemm"].Metrics["TFLOP/s"]
	fmt.Fprintf(w, "\nGPU: %s\nceilings measured in this run: device-to-device copy %.0f GB/s, cuBLAS bf16 GEMM %.0f TFLOP/s\n",
		device, copyGBs, tflops)
	var rows [][]string
	for _, name := range order {
		r := byName[name]
		m := r.Metrics
		switch {
		case name == "copy_dtod" || name == "cublas_bf16_gemm": // the ceilings, above
		case m["GB/s"] > 0:
			rows = append(rows, []string{r.Name, fmt.Sprintf("%.1f", m["us"]), fmt.Sprintf("%.0f GB/s", m["GB/s"]), fmt.Sprintf("%.2f of copy", m["of_copy_bw"])})
		case m["of_bf16_gemm"] > 0:
			rows = append(rows, []string{r.Name, fmt.Sprintf("%.1f", m["us"]), fmt.Sprintf("%.1f TFLOP/s", m["TFLOP/s"]), fmt.Sprintf("%.2f of bf16 GEMM", m["of_bf16_gemm"])})
		}
	}
	sizes := "Llama-3.1-8B's sizes (2048 tokens)"
	if o.Quick {
		sizes = "small sizes (--quick: checks the suite, not a measurement)"
	}
	table(w, "Kernels and products on "+sizes+", against the ceilings",
		[]string{"case", "us", "rate", "of the ceiling"}, rows)
	rows = nil
	var products, splits [][]string
	for _, name := range order {
		m := byName[name].Metrics
		if m["before_us"] == 0 {
			continue
		}
		rows = append(rows, []string{name, fmt.Sprintf("%.1f", m["us"]), fmt.Sprintf("%.1f", m["cublas_us"]), ratio(m["cublas_us"], m["us"]),
			fmt.Sprintf("%.1f", m["before_us"]), ratio(m["before_us"], m["us"])})
		if f32, ok := byName[name+"_f32"]; ok {
			f := f32.Metrics
			rows = append(rows, []string{name + " (float32 activations)", fmt.Sprintf("%.1f", f["us"]), fmt.Sprintf("%.1f", f["cublas_us"]), ratio(f["cublas_us"], f["us"]), "-", "-"})
		}
		for _, k := range []string{"t", "y", "dt", "dB", "dA", "dx"} {
			products = append(products, []string{name + " " + k, fmt.Sprintf("%.1f", m[k+"_us"]), fmt.Sprintf("%.1f", m[k+"_cublas_us"]),
				ratio(m[k+"_cublas_us"], m[k+"_us"]), fmt.Sprintf("%.2f", m[k+"_of_copy_bw"])})
		}
		for _, k := range []string{"t", "dt", "dB", "dA"} {
			if m[k+"_splits"] == 0 {
				continue
			}
			row := []string{name + " " + k, fmt.Sprintf("%.0f", m[k+"_splits"])}
			for _, c := range []int{1, 4, 16} {
				cell := "-" // the sum has fewer stages than that
				if us, ok := m[fmt.Sprintf("%s_splits%d_us", k, c)]; ok {
					cell = fmt.Sprintf("%.1f", us)
				}
				row = append(row, cell)
			}
			splits = append(splits, row)
		}
	}
	if len(rows) > 0 {
		table(w, "LoRA products of each layer input as the model runs them (stacked by input, t = A x^T, on lora_narrow, lora_grad and lora_expand; bf16 inputs as the model's bf16 step has them, and float32 activations below each) against the same on cuBLAS and against one adapter at a time on cuBLAS with t = x A^T and float32 activations (ratios = speed-up)",
			[]string{"case", "us", "cuBLAS us", "ratio", "one at a time us", "ratio"}, rows)
		table(w, "The LoRA kernels' products alone against the same products on cuBLAS (ratio = speed-up; the large operand's bytes at the copy bandwidth)",
			[]string{"case", "kernel us", "cuBLAS us", "ratio", "of copy"}, products)
	}
	if len(splits) > 0 {
		table(w, "The LoRA kernels' split sums: each product's time with its sum in 1, 4 and 16 chunks, against the count the backend picks (dt and dB: the first adapter's)",
			[]string{"case", "picked", "1 chunk us", "4 chunks us", "16 chunks us"}, splits)
	}
	rows = nil
	for _, r := range sdpa {
		name := fmt.Sprint(r["bench"])
		ours := byName[name+"_tc"].Metrics["us"]
		rows = append(rows, []string{name, fmt.Sprintf("%.1f", ours), fmt.Sprintf("%.1f", num(r["us"])), ratio(num(r["us"]), ours)})
	}
	if len(rows) > 0 {
		table(w, "Attention, T 2048, 32/8 heads, D 128, causal, bf16, against PyTorch's flash SDPA (ratio = compass speed / PyTorch's)",
			[]string{"case", "compass us", "pytorch us", "ratio"}, rows)
	}
	if rows := kmeansRows(byName, km); len(rows) > 0 {
		shape := byName[rows[0][0]].Metrics // every k-means case runs on the same points (--quick: small ones)
		table(w, fmt.Sprintf("k-means iteration, %.0f points x %.0f, K %.0f, against PyTorch on the same GPU (ratio = PyTorch's time / compass's)", shape["N"], shape["D"], shape["K"]),
			[]string{"compass case", "us", "same as float32 FMA", "PyTorch case", "us", "same as float32", "ratio"}, rows)
	}
	if step, ok := byName["train_step_llama31_8b_r16_seq2048"]; ok {
		m := step.Metrics
		row := []string{"Llama-3.1-8B LoRA step, seq 2048, r 16, 7 projections", fmt.Sprintf("%.0f", m["tokens/s"]),
			fmt.Sprintf("%.1f", m["peak_GiB"]), fmt.Sprintf("%.3f", m["MFU_datasheet"])}
		if len(hf) > 0 {
			theirs := num(hf[0]["tokens_per_s"])
			row = append(row, fmt.Sprintf("%.0f", theirs), fmt.Sprintf("%.1f", num(hf[0]["peak_memory_bytes"])/(1<<30)), ratio(m["tokens/s"], theirs))
		} else {
			row = append(row, "-", "-", "-")
		}
		table(w, "Training step against HF transformers + PEFT on the same GPU (ratio = compass tokens/s / HF's)",
			[]string{"case", "compass tokens/s", "compass peak GiB", "MFU (989 TFLOP/s)", "HF tokens/s", "HF peak GiB", "ratio"}, [][]string{row})
		if c, ok := byName["train_step_llama31_8b_r16_seq2048_lora_on_cublas"]; ok {
			fmt.Fprintf(w, "The same step with the LoRA products on cuBLAS instead of the LoRA kernels: %.0f tokens/s (the kernels' speed-up: %.3fx)\n",
				c.Metrics["tokens/s"], c.Metrics["kernels_speedup"])
		}
	}
	if rows := targetRows(byName, order, sdpa, hf); len(rows) > 0 && !o.Quick { // --quick's small sizes measure nothing worth a target
		table(w, "Targets (docs/cuda-backend.md): attention's forward at half of flash SDPA's speed or more, the 8B LoRA step at 1.5x HF + PEFT's tokens/s or more at no more memory, memory-bound kernels at 0.70 of the copy bandwidth or more",
			[]string{"target", "measured", "goal", "met"}, rows)
	}
	if len(profile) > 0 {
		rows = nil
		for i, r := range profile {
			if i == 15 {
				break
			}
			rows = append(rows, []string{r.Text["work"], fmt.Sprintf("%.2f", r.Metrics["ms"]), fmt.Sprintf("%.1f%%", 100*r.Metrics["share"]), fmt.Sprint(r.Metrics["calls"])})
		}
		table(w, "Where one training step's device time goes (the largest 15)", []string{"work", "ms", "share", "calls"}, rows)
	}
	if suiteErr != nil {
		fmt.Fprintf(w, "\nGPU suite: not every group ran to the end: %v\n", suiteErr)
	}
	return results, suiteErr
}

// kmeansRows pairs compass's k-means cases with PyTorch's: each assignment
// against PyTorch's float32 matmul + argmin (the same precision class) and
// its bf16 one, the update against index_add_.
func kmeansRows(ours map[string]cgo.BenchRecord, torch []map[string]any) [][]string {
	theirs := map[string]map[string]any{}
	for _, r := range torch {
		theirs[fmt.Sprint(r["bench"])] = r
	}
	var rows [][]string
	for _, p := range [][2]string{
		{"kmeans_assign_tc_bf16", "kmeans_assign_bf16"}, {"kmeans_assign_tc_f32", "kmeans_assign_f32"},
		{"kmeans_assign_tc_f32", "kmeans_assign_tf32"}, {"kmeans_assign_tc_f32_prepared", "kmeans_assign_f32"},
		{"kmeans_assign_fma_f32", "kmeans_assign_f32"},
		{"kmeans_update_f32", "kmeans_update_f32"},
	} {
		r, ok := ours[p[0]]
		if !ok {
			continue
		}
		row := []string{p[0], fmt.Sprintf("%.0f", r.Metrics["us"]), "-", p[1], "-", "-", "-"}
		if same, ok := r.Metrics["same_as_fma"]; ok {
			row[2] = fmt.Sprintf("%.5f", same)
		}
		if t, ok := theirs[p[1]]; ok {
			row[4] = fmt.Sprintf("%.0f", num(t["us"]))
			if same, ok := t["same_as_f32"]; ok {
				row[5] = fmt.Sprintf("%.5f", num(same))
			}
			row[6] = ratio(num(t["us"]), r.Metrics["us"])
		}
		rows = append(rows, row)
	}
	return rows
}

// The GPU path's targets (docs/cuda-backend.md), checked by targetRows.
const (
	targetAttentionForward = 0.5  // attention's forward, of PyTorch's flash SDPA speed
	targetStepSpeedup      = 1.5  // the 8B LoRA step's tokens/s over HF + PEFT's, at no more peak memory
	targetOfCopy           = 0.70 // a memory-bound kernel's bandwidth, of the device-to-device copy's
)

// targetRows sets the run against the targets: attention's forward speed
// against PyTorch's flash SDPA (sdpa), the training step's tokens/s and
// peak memory against HF + PEFT's (hf), and each memory-bound kernel (a
// record with GB/s; not the "_then_" cases, two launches timed together
// to show what a fusion saves) against the copy bandwidth, in the order
// the records came. A target whose measurement is missing has no row.
func targetRows(byName map[string]cgo.BenchRecord, order []string, sdpa, hf []map[string]any) [][]string {
	met := func(ok bool) string {
		if ok {
			return "yes"
		}
		return "NO"
	}
	var rows [][]string
	for _, r := range sdpa {
		name := fmt.Sprint(r["bench"])
		ours, ok := byName[name+"_tc"]
		if !strings.Contains(name, "forward") || !ok || ours.Metrics["us"] <= 0 || num(r["us"]) <= 0 {
			continue
		}
		speed := num(r["us"]) / ours.Metrics["us"]
		rows = append(rows, []string{name + ", speed of flash SDPA's", fmt.Sprintf("%.2f", speed), fmt.Sprintf(">= %.2f", targetAttentionForward), met(speed >= targetAttentionForward)})
	}
	if step, ok := byName["train_step_llama31_8b_r16_seq2048"]; ok && len(hf) > 0 && num(hf[0]["tokens_per_s"]) > 0 {
		speedup := step.Metrics["tokens/s"] / num(hf[0]["tokens_per_s"])
		ours, theirs := step.Metrics["peak_GiB"], num(hf[0]["peak_memory_bytes"])/(1<<30)
		rows = append(rows,
			[]string{"8B LoRA step, tokens/s of HF + PEFT's", fmt.Sprintf("%.2fx", speedup), fmt.Sprintf(">= %.2fx", targetStepSpeedup), met(speedup >= targetStepSpeedup)},
			[]string{"8B LoRA step, peak GiB", fmt.Sprintf("%.1f", ours), fmt.Sprintf("<= %.1f (HF + PEFT's)", theirs), met(ours <= theirs)})
	}
	for _, name := range order {
		m := byName[name].Metrics
		if m["GB/s"] <= 0 || strings.Contains(name, "_then_") || name == "copy_dtod" {
			continue
		}
		rows = append(rows, []string{name + ", of the copy bandwidth", fmt.Sprintf("%.2f", m["of_copy_bw"]), fmt.Sprintf(">= %.2f", targetOfCopy), met(m["of_copy_bw"] >= targetOfCopy)})
	}
	return rows
}

// runPythonJSONL writes script to dir and runs it with --python's
// interpreter, the extra arguments and an output file, and returns the
// JSON lines it wrote there.
func runPythonJSONL(o Options, dir, name string, script []byte, args ...string) ([]map[string]any, error) {
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, script, 0o644); err != nil {
		return nil, err
	}
	out := filepath.Join(dir, strings.TrimSuffix(name, ".py")+".jsonl")
	cmd := exec.Command(o.Python, append(append([]string{path}, args...), out)...)
	cmd.Stdout, cmd.Stderr = o.Log, o.Log
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%s %s: %w", o.Python, name, err)
	}
	f, err := os.Open(out)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var lines []map[string]any
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			return nil, fmt.Errorf("%s: %w", out, err)
		}
		lines = append(lines, m)
	}
	return lines, sc.Err()
}

// findInRepository finds rel under the working directory or one of its
// parents (the repository's root, from anywhere inside it).
func findInRepository(rel string) (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		p := filepath.Join(dir, rel)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("%s not found from the working directory: run from the compass repository", rel)
		}
		dir = parent
	}
}

func num(v any) float64 {
	f, _ := v.(float64)
	return f
}
