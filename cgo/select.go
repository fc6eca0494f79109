package cgo

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/compassml/compass/tensor"
)

// DeviceEnv is the environment variable that chooses the device when no
// --device flag is given.
const DeviceEnv = "COMPASS_DEVICE"

// DeviceNames are the values --device and COMPASS_DEVICE accept.
var DeviceNames = []string{"auto", "cpu", "cuda"}

// SelectBackend returns the backend name asks for: "cpu"; "cuda" (the first
// CUDA device; an error where none opens); or "auto" or "" (CUDA when a
// device opens, else the CPU). "cuda:N" picks device N. When auto falls
// back to the CPU, note is one line saying why, for the caller to print on
// stderr; otherwise it is empty. The caller closes a CUDA backend with
// (*Backend).Close when done. The CPU backend it returns multiplies float32
// activations by bf16 weights in bf16 (tensor.CPU.BF16Products), as the
// CUDA backend does: a command computes the same products on either.
func SelectBackend(name string) (be tensor.Backend, note string, err error) {
	name = strings.ToLower(strings.TrimSpace(name))
	switch {
	case name == "cpu":
		return commandCPU(), "", nil
	case name == "" || name == "auto":
		b, err := NewBackend(0)
		if err == nil {
			return b, "", nil
		}
		if !errors.Is(err, ErrNoDevice) {
			// A device is there but did not come up (out of memory, no
			// cuBLAS, a kernel that does not load): say so, but keep going.
			return commandCPU(), fmt.Sprintf("compass: a CUDA device is there but did not open, computing on the CPU: %v", err), nil
		}
		return commandCPU(), fmt.Sprintf("compass: computing on the CPU: %v", err), nil
	case name == "cuda" || strings.HasPrefix(name, "cuda:"):
		index := 0
		if rest, ok := strings.CutPrefix(name, "cuda:"); ok {
			if _, err := fmt.Sscanf(rest, "%d", &index); err != nil || fmt.Sprint(index) != rest {
				return nil, "", fmt.Errorf("device %q: want cuda:N with N a device index", name)
			}
		}
		b, err := NewBackend(index)
		if err != nil {
			return nil, "", fmt.Errorf("device %s: %w", name, err)
		}
		return b, "", nil
	}
	return nil, "", fmt.Errorf("device %q: want one of %s (or cuda:N)", name, strings.Join(DeviceNames, ", "))
}

// commandCPU is the CPU backend of the commands: bf16 products for bf16
// weights, as on a GPU outside Precise mode.
func commandCPU() *tensor.CPU { return &tensor.CPU{BF16Products: true} }

// DeviceFromEnv is the device COMPASS_DEVICE names, "auto" when unset.
func DeviceFromEnv() string {
	if v := os.Getenv(DeviceEnv); v != "" {
		return v
	}
	return "auto"
}
