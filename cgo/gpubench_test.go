package cgo

import (
	"context"
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
	g := newGPUBench(context.Background(), nil, true, &log, func(BenchRecord) {})
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

// An interrupted suite (Ctrl-C, or a time limit's SIGTERM on a lent
// machine) stops at its next measurement and runs no further group, so
// that what it measured can still be written: the error says which group
// was cut short and which were not run, and wraps the context's error.
func TestBenchStepsStopWhenInterrupted(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	g := newGPUBench(ctx, nil, true, &strings.Builder{}, func(BenchRecord) {})
	var ran []string
	step := func(name string, interrupt bool) benchStep {
		return benchStep{name, func() {
			if interrupt {
				cancel()
			}
			g.stopIfDone() // where g.measure would start timing
			ran = append(ran, name)
		}}
	}
	err := g.runSteps([]benchStep{step("gemm", false), step("lora", true), step("kmeans", false), step("train-step", false)})
	if strings.Join(ran, " ") != "gemm" {
		t.Errorf("ran %v, want gemm alone (lora interrupted before its first measurement)", ran)
	}
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want it to wrap context.Canceled", err)
	}
	if err == nil || !strings.Contains(err.Error(), "lora: interrupted") || !strings.Contains(err.Error(), "kmeans, train-step not run") {
		t.Errorf("err = %v, want lora cut short and kmeans, train-step not run", err)
	}
}
