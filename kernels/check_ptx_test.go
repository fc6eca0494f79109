package kernels_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/compassml/compass/kernels"
)

// TestPTXUpToDate regenerates the PTX with gen.sh (nvcc, then ptxas, which
// fails on register spills) into a temporary directory and fails on any
// difference with the committed ptx/. Without nvcc it skips, unless
// CI_REQUIRE_NVCC=1 says this machine must have it.
func TestPTXUpToDate(t *testing.T) {
	if _, err := exec.LookPath("nvcc"); err != nil {
		if os.Getenv("CI_REQUIRE_NVCC") == "1" {
			t.Fatal("nvcc not installed, and CI_REQUIRE_NVCC=1: install nvidia-cuda-toolkit (Debian contrib/non-free)")
		}
		t.Skip("nvcc not installed: `make kernels` regenerates the PTX")
	}
	// The committed PTX names the nvcc that made it; another release makes
	// other PTX, which is no sign of a stale file.
	version, err := exec.Command("nvcc", "--version").Output()
	if err != nil {
		t.Fatalf("nvcc --version: %v", err)
	}
	committedPTX, err := kernels.PTX(kernels.Sources[0], kernels.Architectures[0])
	if err != nil {
		t.Fatal(err)
	}
	release := regexp.MustCompile(`Cuda compilation tools, release [^\n]*`)
	want := release.Find(committedPTX)
	if have := release.Find(version); !bytes.Equal(have, want) {
		msg := fmt.Sprintf("ptx/ was made by %q, this nvcc is %q: compare with Debian's nvidia-cuda-toolkit", want, have)
		if os.Getenv("CI_REQUIRE_NVCC") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}

	dir := t.TempDir()
	out, err := exec.Command("bash", "gen.sh", dir).CombinedOutput()
	if err != nil {
		t.Fatalf("gen.sh: %v\n%s", err, out)
	}
	t.Logf("ptxas:\n%s", out)
	fresh, err := filepath.Glob(filepath.Join(dir, "*.ptx"))
	if err != nil {
		t.Fatal(err)
	}
	committed, err := filepath.Glob("ptx/*.ptx")
	if err != nil {
		t.Fatal(err)
	}
	names := func(paths []string) []string {
		var n []string
		for _, p := range paths {
			n = append(n, filepath.Base(p))
		}
		return n
	}
	if !slices.Equal(names(fresh), names(committed)) {
		t.Fatalf("gen.sh makes %v, ptx/ holds %v: run `make kernels`", names(fresh), names(committed))
	}
	for _, f := range fresh {
		want, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join("ptx", filepath.Base(f)))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("ptx/%s differs from what gen.sh generates (%s): run `make kernels`", filepath.Base(f), firstDiff(got, want))
		}
	}
}

// firstDiff names the first line where two files differ.
func firstDiff(a, b []byte) string {
	la, lb := strings.Split(string(a), "\n"), strings.Split(string(b), "\n")
	for i := 0; i < min(len(la), len(lb)); i++ {
		if la[i] != lb[i] {
			return fmt.Sprintf("line %d: %q, generated %q", i+1, la[i], lb[i])
		}
	}
	return fmt.Sprintf("%d lines, generated %d", len(la), len(lb))
}

// TestTableMatchesPTX checks, without nvcc, that every kernel of the Table
// is an entry point of its source's PTX for each architecture, and that
// every entry point of the PTX is in the Table.
func TestTableMatchesPTX(t *testing.T) {
	for _, k := range kernels.Table {
		if !slices.Contains(kernels.Sources, k.Source) {
			t.Errorf("kernel %s: source %q is not in Sources", k.Name, k.Source)
		}
	}
	entry := regexp.MustCompile(`(?m)^\.visible \.entry (\w+)\(`)
	for _, src := range kernels.Sources {
		for _, arch := range kernels.Architectures {
			ptx, err := kernels.PTX(src, arch)
			if err != nil {
				t.Fatal(err)
			}
			var inPTX []string
			for _, m := range entry.FindAllSubmatch(ptx, -1) {
				inPTX = append(inPTX, string(m[1]))
			}
			var inTable []string
			for _, k := range kernels.Table {
				if k.Source == src {
					inTable = append(inTable, k.Name)
				}
			}
			slices.Sort(inPTX)
			slices.Sort(inTable)
			if !slices.Equal(inPTX, inTable) {
				t.Errorf("%s %s: PTX entry points %v, Table %v", src, arch, inPTX, inTable)
			}
		}
	}
}

// TestAttentionTCUsesTensorCores checks, without nvcc, that every
// attention_tc_* entry point of attention_tc.cu (all but the GQA sum,
// attention_dkdv_sum, which multiplies nothing) does its products with
// mma.sync and loads its fragments with ldmatrix and its tiles with
// cp.async, for each architecture: a change that made nvcc fall back to
// scalar code, or left a kernel without them, fails here.
func TestAttentionTCUsesTensorCores(t *testing.T) {
	const source = "attention_tc"
	entry := regexp.MustCompile(`(?m)^\.visible \.entry (\w+)\(`)
	for _, arch := range kernels.Architectures {
		ptx, err := kernels.PTX(source, arch)
		if err != nil {
			t.Fatal(err)
		}
		text := string(ptx)
		locs := entry.FindAllStringSubmatchIndex(text, -1)
		if len(locs) == 0 {
			t.Fatalf("%s %s: no entry points", source, arch)
		}
		for i, loc := range locs {
			name, end := text[loc[2]:loc[3]], len(text)
			if i+1 < len(locs) {
				end = locs[i+1][0]
			}
			if !strings.HasPrefix(name, "attention_tc_") {
				continue
			}
			body := text[loc[0]:end]
			for _, instr := range []string{"mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32", "ldmatrix.sync.aligned.m8n8.x4", "cp.async.cg.shared.global"} {
				if !strings.Contains(body, instr) {
					t.Errorf("%s %s: %s has no %s", source, arch, name, instr)
				}
			}
		}
	}
}
