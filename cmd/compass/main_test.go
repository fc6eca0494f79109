package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/compassml/compass/cgo"
)

// run runs the CLI with args and returns what it printed.
func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	app := newApp()
	app.Writer = &out
	app.ErrWriter = io.Discard // notes such as "computing on the CPU" are not output
	err := app.Run(context.Background(), append([]string{"compass"}, args...))
	return out.String(), err
}

func TestInspectRealConfigs(t *testing.T) {
	for file, params := range map[string]string{
		"llama-3.1-8b.json":        "8,030,261,248",
		"qwen2.5-7b.json":          "7,615,616,512",
		"phi-4-mini-instruct.json": "3,836,021,760",
	} {
		out, err := run(t, "inspect", "--seq-len", "1024", "--rank", "8", "../../testdata/configs/"+file)
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		for _, want := range []string{params, "seq 1024 x batch 1, rank 8", "total", "no safetensors"} {
			if !strings.Contains(out, want) {
				t.Errorf("%s: output lacks %q:\n%s", file, want, out)
			}
		}
	}
}

func TestInspectJSON(t *testing.T) {
	out, err := run(t, "inspect", "--json", "--recompute", "../../testdata/configs/llama-3.1-8b.json")
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		Parameters int64 `json:"parameters"`
		Memory     struct {
			Total, Weights, Activations int64
		} `json:"lora_training_memory"`
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	if v.Parameters != 8_030_261_248 || v.Memory.Weights != 2*8_030_261_248 || v.Memory.Total <= v.Memory.Weights+v.Memory.Activations {
		t.Errorf("json: %+v", v)
	}
}

func TestInspectErrors(t *testing.T) {
	for _, args := range [][]string{
		{"inspect"},
		{"inspect", "no/such/dir"},
		{"inspect", "--rank", "0", "../../testdata/configs/qwen2.5-7b.json"},
		{"inspect", "--targets", "q,nonsense", "../../testdata/configs/qwen2.5-7b.json"},
		{"inspect", "--seq-len", "200000000000000", "../../testdata/configs/qwen2.5-7b.json"}, // the byte counts would overflow
	} {
		if _, err := run(t, args...); err == nil {
			t.Errorf("%v: no error", args)
		}
	}
}

// A checkpoint whose tensors do not fit its config (the demo's weights
// under Qwen2.5-7B's config) is reported, and the command fails.
func TestInspectMismatchFails(t *testing.T) {
	dir := t.TempDir()
	weights, err := filepath.Abs("../../testdata/demo/model/model.safetensors")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(weights, filepath.Join(dir, "model.safetensors")); err != nil {
		t.Fatal(err)
	}
	cfg, err := os.ReadFile("../../testdata/configs/qwen2.5-7b.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"inspect", dir}, {"inspect", "--json", dir}} {
		out, err := run(t, args...)
		if err == nil || !strings.Contains(err.Error(), "does not match its config") {
			t.Errorf("%v: %v, want an error", args, err)
		}
		if !strings.Contains(out, "lm_head.weight") {
			t.Errorf("%v: the report does not list the missing tensors:\n%.500s", args, out)
		}
	}
	if _, err := run(t, "inspect", "../../testdata/demo/model"); err != nil {
		t.Errorf("the demo checkpoint: %v", err)
	}
}

func TestGPUAndVersion(t *testing.T) {
	out, err := run(t, "gpu")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "No NVIDIA driver") && !strings.Contains(out, "driver ") {
		t.Errorf("gpu printed %q", out)
	}
	out, err = run(t, "gpu", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var v map[string]any
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Errorf("gpu --json: %v: %q", err, out)
	}
	out, err = run(t, "version")
	if err != nil || !strings.HasPrefix(out, "compass ") {
		t.Errorf("version: %q, %v", out, err)
	}
}

// A suite that fails costs only itself: `compass bench --out` still writes
// what the other suites measured, its first line names the failure, and
// the command fails. The safetensors suite fails here (its scratch
// directory would go in $TMPDIR, a file); matmul needs none.
func TestBenchWritesWhatWasMeasured(t *testing.T) {
	notDir := t.TempDir() + "/file"
	if err := os.WriteFile(notDir, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	t.Setenv("TMPDIR", notDir)
	out, err := run(t, "bench", "--only", "safetensors,matmul", "--quick", "--quiet", "--python", "/nonexistent/python3",
		"--threads", "1", "--min-time", "1ms", "--out", dir, "--name", "partial")
	if err == nil || !strings.Contains(err.Error(), "bench safetensors") {
		t.Errorf("err = %v, want the safetensors suite's failure", err)
	}
	if !strings.Contains(out, "results written to") {
		t.Errorf("bench printed %q, want the results file", out)
	}
	files, _ := os.ReadDir(dir)
	if len(files) != 1 {
		t.Fatalf("--out holds %v, want one results file", files)
	}
	data, rerr := os.ReadFile(dir + "/" + files[0].Name())
	if rerr != nil {
		t.Fatal(rerr)
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	var head struct{ Failed string }
	if json.Unmarshal([]byte(lines[0]), &head) != nil || !strings.Contains(head.Failed, "bench safetensors") {
		t.Errorf("first line %s: want the failure", lines[0])
	}
	if len(lines) < 2 || !strings.Contains(string(data), `"suite":"matmul"`) {
		t.Errorf("no matmul results in:\n%s", data)
	}
}

// An --out that cannot hold the results is refused before any suite runs.
func TestBenchOutCheckedFirst(t *testing.T) {
	file := t.TempDir() + "/file"
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := run(t, "bench", "--only", "matmul", "--quick", "--quiet", "--python", "/nonexistent/python3",
		"--threads", "1", "--min-time", "1ms", "--out", file+"/results")
	if err == nil || !strings.HasPrefix(err.Error(), "bench: --out: ") || !strings.HasSuffix(err.Error(), "not a directory") {
		t.Errorf("err = %v, want one naming --out", err)
	}
	if strings.Contains(out, "GFLOP") || strings.Contains(out, "matmul") {
		t.Errorf("bench measured before failing:\n%s", out)
	}
}

// TestBenchGPUWithoutDevice runs `compass bench --only gpu --out DIR` where
// there is no CUDA device: the suite says it was skipped, and no results
// file appears (one with only the machine line would read as a run).
func TestBenchGPUWithoutDevice(t *testing.T) {
	be, err := cgo.NewBackend(0)
	if err == nil {
		be.Close()
		t.Skip("a CUDA device is present: the GPU suite would run in full")
	}
	if !errors.Is(err, cgo.ErrNoDevice) {
		t.Skipf("the CUDA backend does not start here (%v): the suite would fail, not skip", err)
	}
	dir := t.TempDir()
	out, err := run(t, "bench", "--only", "gpu", "--quiet", "--out", dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"GPU suite: skipped", "no results: nothing written to " + dir} {
		if !strings.Contains(out, want) {
			t.Errorf("bench printed %q, want %q in it", out, want)
		}
	}
	if entries, err := os.ReadDir(dir); err != nil || len(entries) != 0 {
		t.Errorf("--out holds %v (%v), want nothing", entries, err)
	}
}
