package kernels_test

// The kernels are tested through the GPU backend on the emulated device
// (cgo's `-tags cuda` tests against emu/device.cpp, which `make test`
// runs): the operations' own Go code packs the arguments and computes the
// launch shapes. What is left here is the emulator's check of its own
// primitives, which needs no launch sequence.

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// TestEmulatorSelfTest builds emu/selftest.cpp and runs it: shuffles of
// each kind and width, 64-bit shuffles, votes, atomics, barriers, the
// poisoning of dynamic shared memory, thread indices and the bf16/half
// types, against what CUDA documents; and the warps' and blocks' orders.
func TestEmulatorSelfTest(t *testing.T) {
	gxx, err := exec.LookPath("g++")
	if err != nil {
		t.Fatal("g++ not found: install g++ (Debian: apt-get install g++), which the kernel emulator needs")
	}
	// Reading the sources tells go test's cache that a change to any of
	// them changes the result (g++ reads them where it cannot see).
	var sources []string
	for _, pattern := range []string{"*.cuh", "emu/*.h", "emu/selftest.cpp"} {
		m, err := filepath.Glob(pattern)
		if err != nil {
			t.Fatal(err)
		}
		sources = append(sources, m...)
	}
	for _, f := range sources {
		if _, err := os.ReadFile(f); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(t.TempDir(), "selftest")
	args := []string{"-O2", "-fopenmp", "-std=c++17", "-ffp-contract=off", "-Wall", "-Wno-unknown-pragmas", "-o", bin, "emu/selftest.cpp"}
	out, err := exec.Command(gxx, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("building the emulator's self-test: %v\n%s", err, out)
	}
	if len(out) > 0 {
		t.Fatalf("building the emulator's self-test: warnings:\n%s", out)
	}
	// A primitive whose threads disagree on barriers can hang the emulator.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin)
	cmd.Env = append(os.Environ(), "OMP_WAIT_POLICY=PASSIVE")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("the emulator's self-test: %v\n%s", err, out)
	}
}
