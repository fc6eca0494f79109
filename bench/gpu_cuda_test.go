//go:build cuda

package bench

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/compassml/compass/cgo"
)

// The GPU suite through bench.Run, on small sizes, one group: its cases
// and the ceilings come back (the ceilings though not asked for: every
// ratio needs them), no other group runs, and the kernels' table is
// printed. make test runs it on the emulated device
// (scripts/gpu-emu-test.sh).
func TestGPUSuiteGroups(t *testing.T) {
	be, err := cgo.NewBackend(0)
	if errors.Is(err, cgo.ErrNoDevice) {
		t.Skip("no CUDA device (make test runs this on the emulated one)")
	}
	if err != nil {
		t.Fatal(err)
	}
	be.Close()
	var out strings.Builder
	rs, err := Run(context.Background(), &out, Options{Only: []string{"gpu"}, GPUGroups: []string{"gemm"}, Quick: true, TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string]bool{}
	for _, r := range rs {
		cases[r.Case] = true
		if !strings.HasPrefix(r.Case, "gemm_") && r.Case != "copy_dtod" && r.Case != "cublas_bf16_gemm" {
			t.Errorf("a result of another group: %+v", r)
		}
	}
	for _, want := range []string{"copy_dtod", "cublas_bf16_gemm", "gemm_q_proj_bf16"} {
		if !cases[want] {
			t.Errorf("no %s among %v", want, cases)
		}
	}
	if !strings.Contains(out.String(), "against the ceilings") || !strings.Contains(out.String(), "gemm_q_proj_bf16") {
		t.Errorf("no kernels table:\n%s", out.String())
	}
}
