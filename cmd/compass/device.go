package main

import (
	"fmt"
	"strings"

	"github.com/compassml/compass/cgo"
	"github.com/compassml/compass/tensor"
	"github.com/urfave/cli/v3"
)

// deviceFlag is the --device flag of the commands that compute on a model:
// cpu, cuda (cuda:N for device N) or auto, with COMPASS_DEVICE as its
// environment variable.
func deviceFlag() *cli.StringFlag {
	return &cli.StringFlag{
		Name:    "device",
		Value:   "auto",
		Sources: cli.EnvVars(cgo.DeviceEnv),
		Usage:   "where to compute: " + strings.Join(cgo.DeviceNames, ", ") + " (cuda:N for device N); auto uses a CUDA device when one opens",
	}
}

// openBackend opens the backend the --device flag names. When auto falls
// back to the CPU it prints one line saying so on stderr. The returned
// function releases the device; call it when the command is done.
func openBackend(cmd *cli.Command) (tensor.Backend, func(), error) {
	be, note, err := cgo.SelectBackend(cmd.String("device"))
	if err != nil {
		return nil, nil, err
	}
	if note != "" {
		fmt.Fprintln(cmd.Root().ErrWriter, note)
	}
	release := func() {}
	if g, ok := be.(*cgo.Backend); ok {
		release = func() { g.Close() }
	}
	return be, release, nil
}
