package cgo

import (
	"errors"
	"testing"
)

// On a machine without a driver ListGPUs must say so with ErrNoDriver, not
// crash; with one, every device must have a name and some memory.
func TestListGPUs(t *testing.T) {
	r, err := ListGPUs()
	if errors.Is(err, ErrNoDriver) {
		t.Log("no NVIDIA driver here: checked that ListGPUs reports it")
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	if r.DriverVersion == "" {
		t.Error("empty driver version")
	}
	for _, g := range r.GPUs {
		if g.Name == "" || g.MemoryTotal == 0 {
			t.Errorf("GPU %d: name %q, memory %d", g.Index, g.Name, g.MemoryTotal)
		}
	}
}
