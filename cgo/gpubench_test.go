package cgo

import (
	"errors"
	"strings"
	"testing"
)

// A failing group of the GPU suite costs only its own results: the groups
// after it still run, and the error names the one that failed (a device
// run is minutes of scarce time; one bad kernel check must not lose the
// training step's numbers).
func TestBenchStepsGoOnPastAFailure(t *testing.T) {
	var log strings.Builder
	g := newGPUBench(nil, true, &log, func(BenchRecord) {})
	var ran []string
	step := func(name string, err error) benchStep {
		return benchStep{name, func() {
			g.must(err)
			ran = append(ran, name)
		}}
	}
	err := g.runSteps([]benchStep{step("gemm", nil), step("lora", errors.New("lora_grad: 3 values off")), step("kmeans", nil)})
	if strings.Join(ran, " ") != "gemm kmeans" {
		t.Errorf("ran %v, want gemm and kmeans (lora failing in between)", ran)
	}
	if err == nil || !strings.Contains(err.Error(), "lora: lora_grad: 3 values off") || strings.Contains(err.Error(), "kmeans") {
		t.Errorf("err = %v, want lora's error alone", err)
	}
	if !strings.Contains(log.String(), "lora failed") {
		t.Errorf("the log does not say lora failed:\n%s", log.String())
	}
	if err := g.runSteps([]benchStep{step("gemm", nil)}); err != nil {
		t.Errorf("no step failing: err = %v", err)
	}
}
