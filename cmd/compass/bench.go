package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/compassml/compass/bench"
	"github.com/compassml/compass/cgo"
	"github.com/urfave/cli/v3"
)

func benchCommand() *cli.Command {
	return &cli.Command{
		Name:  "bench",
		Usage: "measure compass next to the reference tools (PyTorch, scikit-learn, gonum, plain reads) in one run",
		Description: "Runs the benchmark suites (" + strings.Join(bench.Suites, ", ") + "), prints a table with\n" +
			"ratios for each, and with --out records the results as JSONL with the machine and date.",
		Flags: []cli.Flag{
			&cli.StringSliceFlag{Name: "only", Aliases: []string{"suite"}, Usage: "run only these suites (--suite gpu: the GPU suite)"},
			&cli.StringFlag{Name: "python", Value: "/usr/bin/python3", Usage: "Python interpreter with torch (Debian python3-torch)"},
			&cli.IntSliceFlag{Name: "threads", Usage: "thread counts to compare at (default 1 and all cores)"},
			&cli.DurationFlag{Name: "min-time", Value: 0, HideDefault: true, Usage: "repeat each measurement for at least this long (default 2s)"},
			&cli.BoolFlag{Name: "quick", Usage: "small sizes, for a smoke run"},
			&cli.StringSliceFlag{Name: "gpu-groups", Usage: "the GPU suite's groups to run (" + strings.Join(cgo.GPUBenchGroups, ", ") + "; default all)"},
			&cli.StringFlag{Name: "out", Usage: "directory to write DATE-NAME.jsonl results into"},
			&cli.StringFlag{Name: "name", Value: "cpu", Usage: "name of the results file (default cpu; gpu with --suite gpu alone)", HideDefault: true},
			&cli.BoolFlag{Name: "quiet", Usage: "no progress lines on stderr"},
		},
		Action: func(ctx context.Context, cmd *cli.Command) error {
			o := bench.Options{Only: cmd.StringSlice("only"), Python: cmd.String("python"),
				Threads: cmd.IntSlice("threads"), MinTime: cmd.Duration("min-time"), Quick: cmd.Bool("quick"),
				GPUGroups: cmd.StringSlice("gpu-groups")}
			if !cmd.Bool("quiet") {
				o.Log = os.Stderr
			}
			// An --out that cannot take the results fails now, not after
			// minutes of measuring.
			if dir := cmd.String("out"); dir != "" {
				if err := checkWritableDir(dir); err != nil {
					return fmt.Errorf("bench: --out: %w", err)
				}
			}
			m := bench.ThisMachine()
			fmt.Fprintf(cmd.Root().Writer, "compass %s on %s (%d cores), %s, %s\n", versionString(), m.CPU, m.Cores, m.GoVersion, m.Date)
			// The suites' scratch files (a 1 GiB checkpoint, models,
			// corpora) go in one directory, removed at the end and on a
			// quit as well. Where it cannot be made, each suite that needs
			// scratch fails saying why, and the others still run.
			scratch, err := os.MkdirTemp("", "compass-bench-")
			if err == nil {
				defer os.RemoveAll(scratch)
				o.TempDir = scratch
			}
			// Ctrl-C or SIGTERM: the suite running finishes (the GPU
			// suite stops at its next measurement), no other starts, and
			// what was measured is written. A second signal ends the
			// command at once, writing nothing.
			runCtx, stop := interruptible(ctx, func(os.Signal) {
				fmt.Fprintln(cmd.Root().ErrWriter, "compass bench: interrupted: finishing the suite that runs, then writing the results so far (interrupt again to quit now)")
			}, func(s os.Signal) {
				os.RemoveAll(scratch) // "" when none was made: nothing to do
				exitOnSignal(s)
			})
			defer stop()
			rs, runErr := bench.Run(runCtx, cmd.Root().Writer, o)
			if dir := cmd.String("out"); dir != "" {
				if len(rs) == 0 {
					// Every suite asked for was skipped (the GPU suite without
					// a device) or failed before measuring: a file of no
					// results would read as a run.
					fmt.Fprintf(cmd.Root().Writer, "\nno results: nothing written to %s\n", dir)
					return runErr
				}
				name := cmd.String("name")
				if !cmd.IsSet("name") && len(o.Only) == 1 && o.Only[0] == "gpu" {
					name = "gpu"
				}
				// What was measured is written even when a suite failed: the
				// file's first line says which, and the command still fails.
				path, err := bench.WriteResults(dir, name, m, rs, runErr)
				if err != nil {
					return errors.Join(runErr, fmt.Errorf("write results: %w", err))
				}
				fmt.Fprintf(cmd.Root().Writer, "\nresults written to %s\n", path)
			}
			return runErr
		},
	}
}
