package main

import (
	"context"
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/compassml/compass/tensor"
	"github.com/urfave/cli/v3"
)

// version is set at link time by `make build` (-X main.version=...); a plain
// `go build` reports the VCS revision Go records instead.
var version = ""

func versionString() string {
	if version != "" {
		return version
	}
	v := "devel"
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, s := range info.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				v += " " + s.Value[:12]
			}
			if s.Key == "vcs.modified" && s.Value == "true" {
				v += "+dirty"
			}
		}
	}
	return v
}

func versionCommand() *cli.Command {
	return &cli.Command{
		Name:  "version",
		Usage: "print the version, the Go toolchain and the CPU GEMM kernel in use",
		Action: func(ctx context.Context, cmd *cli.Command) error {
			_, err := fmt.Fprintf(cmd.Root().Writer, "compass %s (%s, %s/%s, cpu gemm kernel %s)\n",
				versionString(), runtime.Version(), runtime.GOOS, runtime.GOARCH, tensor.GEMMKernel())
			return err
		},
	}
}
