//go:build cuda

package cgo

import (
	"math/rand/v2"
	"testing"

	"github.com/compassml/compass/tensor"
)

// TestGPUProfile checks that a profile names each kernel and product issued
// between StartProfile and StopProfile, counts their calls, and that the
// backend works as before once it is stopped.
func TestGPUProfile(t *testing.T) {
	be := gpuBackend(t)
	rng := rand.New(rand.NewPCG(9, 9))
	x := toDev(t, be, randHost(rng, tensor.F32, 1, 64, 32))
	w := toDev(t, be, randHost(rng, tensor.F32, 1, 40, 32))
	y, err := be.Alloc(tensor.F32, 64, 40)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { be.Free(x); be.Free(w); be.Free(y) }()
	if _, err := be.StopProfile(); err == nil {
		t.Fatal("StopProfile before StartProfile: no error")
	}
	if err := be.StartProfile(); err != nil {
		t.Fatal(err)
	}
	if err := be.StartProfile(); err == nil {
		t.Fatal("StartProfile twice: no error")
	}
	for i := 0; i < 3; i++ {
		if err := be.Add(x, x, x); err != nil {
			t.Fatal(err)
		}
	}
	if err := be.MatMul(y, x, w, false, true, 1, 0); err != nil {
		t.Fatal(err)
	}
	lines, err := be.StopProfile()
	if err != nil {
		t.Fatal(err)
	}
	calls := map[string]int{}
	for _, l := range lines {
		calls[l.Name] = l.Calls
		if l.Seconds < 0 {
			t.Errorf("%s: %g s", l.Name, l.Seconds)
		}
	}
	want := map[string]int{"elementwise_add": 3, "cublas F32xF32->F32 M64 K32 N40": 1}
	for name, n := range want {
		if calls[name] != n {
			t.Errorf("%s: %d calls, want %d (profile: %v)", name, calls[name], n, calls)
		}
	}
	if len(lines) != len(want) {
		t.Errorf("profile has %d lines, want %d: %v", len(lines), len(want), calls)
	}
	// Stopped: work is issued to the device's own queue again.
	if err := be.Add(x, x, x); err != nil {
		t.Fatal(err)
	}
	if _, ok := be.q.(*profiler); ok {
		t.Fatal("the backend still profiles after StopProfile")
	}
}
