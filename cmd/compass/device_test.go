package main

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/compassml/compass/cgo"
	"github.com/urfave/cli/v3"
)

// runDevice runs a command with the --device flag and returns the backend
// openBackend chose and what went to stderr.
func runDevice(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var stderr bytes.Buffer
	name := ""
	cmd := &cli.Command{
		Name:      "compass",
		ErrWriter: &stderr,
		Flags:     []cli.Flag{deviceFlag()},
		Action: func(ctx context.Context, cmd *cli.Command) error {
			be, release, err := openBackend(cmd)
			if err != nil {
				return err
			}
			defer release()
			name = be.Name()
			return nil
		},
	}
	err := cmd.Run(context.Background(), append([]string{"compass"}, args...))
	return name, stderr.String(), err
}

func TestDeviceFlag(t *testing.T) {
	t.Setenv(cgo.DeviceEnv, "")
	if name, stderr, err := runDevice(t, "--device", "cpu"); err != nil || name != "cpu" || stderr != "" {
		t.Errorf("--device cpu: %q, %q, %v", name, stderr, err)
	}
	if _, _, err := runDevice(t, "--device", "tpu"); err == nil {
		t.Errorf("--device tpu: no error")
	}
	t.Setenv(cgo.DeviceEnv, "cpu")
	if name, _, err := runDevice(t); err != nil || name != "cpu" {
		t.Errorf("COMPASS_DEVICE=cpu: %q, %v", name, err)
	}
	t.Setenv(cgo.DeviceEnv, "")

	_, noDevice := cgo.NewBackend(0)
	if noDevice == nil {
		t.Skip("a CUDA device is present: the fallback is not exercised here")
	}
	// auto (the default) falls back to the CPU with one line on stderr.
	name, stderr, err := runDevice(t)
	if err != nil || name != "cpu" || strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, "CPU") {
		t.Errorf("auto without a device: %q, stderr %q, %v", name, stderr, err)
	}
	// cuda where there is none is an error.
	if _, _, err := runDevice(t, "--device", "cuda"); !errors.Is(err, cgo.ErrNoDevice) {
		t.Errorf("--device cuda without a device: %v", err)
	}
}
