package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"text/tabwriter"

	"github.com/compassml/compass/cgo"
	"github.com/urfave/cli/v3"
)

func gpuCommand() *cli.Command {
	return &cli.Command{
		Name:  "gpu",
		Usage: "list NVIDIA GPUs: driver, memory and utilisation (through NVML)",
		Flags: []cli.Flag{&cli.BoolFlag{Name: "json", Usage: "print JSON instead of a table"}},
		Action: func(ctx context.Context, cmd *cli.Command) error {
			w := cmd.Root().Writer
			r, err := cgo.ListGPUs()
			if errors.Is(err, cgo.ErrNoDriver) {
				if cmd.Bool("json") {
					return json.NewEncoder(w).Encode(map[string]any{"driver_version": nil, "gpus": []any{}})
				}
				_, err2 := fmt.Fprintf(w, "No NVIDIA driver on this machine: compass will run on the CPU.\n(%v)\n", err)
				return err2
			}
			if err != nil {
				return err
			}
			if cmd.Bool("json") {
				enc := json.NewEncoder(w)
				enc.SetIndent("", "  ")
				return enc.Encode(r)
			}
			fmt.Fprintf(w, "driver %s, CUDA %s, %d GPU(s)\n", r.DriverVersion, r.CUDAVersion, len(r.GPUs))
			tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "INDEX\tNAME\tCC\tMEMORY USED / TOTAL\tGPU UTIL\tMEM UTIL")
			for _, g := range r.GPUs {
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s / %s\t%d%%\t%d%%\n", g.Index, g.Name, g.ComputeCapability,
					humanBytes(int64(g.MemoryUsed)), humanBytes(int64(g.MemoryTotal)), g.UtilizationGPU, g.UtilizationMemory)
			}
			return tw.Flush()
		},
	}
}

// humanBytes prints a byte count in binary units (GiB, MiB, KiB).
func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
