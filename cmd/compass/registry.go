package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/compassml/compass/engine"
	"github.com/urfave/cli/v3"
)

func registryCommand() *cli.Command {
	return &cli.Command{
		Name:  "registry",
		Usage: "versioned adapters: add, list, show, promote, roll back, diff (COMPASS-ECDA)",
		Description: "A registry directory holds, for each adapter NAME, its versions in NAME/versions/vN (copied byte for\n" +
			"byte, never modified), NAME/manifest.json (each version's parent, time, compass version, data selection hash,\n" +
			"trigger, scores and note, and which version is current), and NAME/current, a link to the current version.\n" +
			"Writers hold a file lock (NAME/.lock); a second one waits up to --lock-timeout, then fails.",
		Commands: []*cli.Command{
			registryListCommand(),
			registryShowCommand(),
			registryAddCommand(),
			registryPromoteCommand(),
			registryRollbackCommand(),
			registryDiffCommand(),
		},
	}
}

func registryFlag() cli.Flag {
	return &cli.StringFlag{Name: "registry", Required: true, Usage: "registry directory"}
}

func adapterNameFlag() cli.Flag {
	return &cli.StringFlag{Name: "adapter", Required: true, Usage: "adapter name in the registry"}
}

func jsonFlag() cli.Flag {
	return &cli.BoolFlag{Name: "json", Usage: "print JSON instead of text"}
}

func lockTimeoutFlag() cli.Flag {
	return &cli.DurationFlag{Name: "lock-timeout", Value: engine.DefaultRegistryLockTimeout,
		Usage: "how long to wait for another compass process that holds the registry's lock"}
}

// openRegistry opens --registry, with --lock-timeout if the command has it.
func openRegistry(cmd *cli.Command) (*engine.Registry, error) {
	reg, err := engine.OpenRegistry(cmd.String("registry"))
	if err != nil {
		return nil, err
	}
	if cmd.IsSet("lock-timeout") && cmd.Duration("lock-timeout") <= 0 {
		// The library reads 0 as its default, 30 s.
		return nil, fmt.Errorf("registry %s: --lock-timeout %v: want a positive duration", cmd.Name, cmd.Duration("lock-timeout"))
	}
	reg.LockTimeout = cmd.Duration("lock-timeout")
	return reg, nil
}

// registryArgs checks the number of positional arguments.
func registryArgs(cmd *cli.Command, least, most int) ([]string, error) {
	args := cmd.Args().Slice()
	if len(args) < least || len(args) > most {
		if most == 0 {
			return nil, fmt.Errorf("registry %s: takes no arguments (flags only), got %q", cmd.Name, args)
		}
		return nil, fmt.Errorf("registry %s: want %s, got %d arguments %q", cmd.Name, cmd.ArgsUsage, len(args), args)
	}
	return args, nil
}

func printJSON(w io.Writer, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", data)
	return err
}

func registryListCommand() *cli.Command {
	return &cli.Command{
		Name:  "list",
		Usage: "list an adapter's versions (* marks the current one), or the registry's adapters without --adapter",
		Flags: []cli.Flag{registryFlag(), &cli.StringFlag{Name: "adapter", Usage: "adapter name in the registry"}, jsonFlag()},
		Action: func(ctx context.Context, cmd *cli.Command) error {
			if _, err := registryArgs(cmd, 0, 0); err != nil {
				return err
			}
			reg, err := openRegistry(cmd)
			if err != nil {
				return err
			}
			w := cmd.Root().Writer
			if cmd.String("adapter") == "" {
				names, err := reg.Names()
				if err != nil {
					return err
				}
				if cmd.Bool("json") {
					return printJSON(w, names)
				}
				for _, name := range names {
					fmt.Fprintln(w, name)
				}
				return nil
			}
			m, err := reg.List(cmd.String("adapter"))
			if err != nil {
				return err
			}
			if cmd.Bool("json") {
				return printJSON(w, m)
			}
			return engine.WriteRegistryList(w, m)
		},
	}
}

func registryShowCommand() *cli.Command {
	return &cli.Command{
		Name:      "show",
		Usage:     "show one version's manifest entry (default: the current version) and check its files' SHA-256",
		ArgsUsage: "[VERSION]",
		Flags:     []cli.Flag{registryFlag(), adapterNameFlag(), jsonFlag()},
		Action: func(ctx context.Context, cmd *cli.Command) error {
			args, err := registryArgs(cmd, 0, 1)
			if err != nil {
				return err
			}
			reg, err := openRegistry(cmd)
			if err != nil {
				return err
			}
			name, version := cmd.String("adapter"), ""
			if len(args) == 1 {
				version = args[0]
			}
			m, err := reg.List(name)
			if err != nil {
				return err
			}
			v, err := reg.Show(name, version)
			if err != nil {
				return err
			}
			if err := reg.Verify(name, v.Version); err != nil {
				return err
			}
			if cmd.Bool("json") {
				return printJSON(cmd.Root().Writer, v)
			}
			dir, err := reg.Path(name, v.Version)
			if err != nil {
				return err
			}
			if err := engine.WriteRegistryVersion(cmd.Root().Writer, v, v.Version == m.Current, dir); err != nil {
				return err
			}
			fmt.Fprintln(cmd.Root().Writer, "files match the manifest's SHA-256")
			return nil
		},
	}
}

func registryAddCommand() *cli.Command {
	return &cli.Command{
		Name:      "add",
		Usage:     "add an adapter directory (adapter_config.json and adapter_model.safetensors, as compass train writes them) as a new version",
		ArgsUsage: "ADAPTER_DIR",
		Description: "The new version's parent is the current version, and it becomes current unless --no-promote.\n" +
			"Its trigger is --drift-record's statistics (a record compass monitor wrote), else \"initial\" for an\n" +
			"adapter's first version and \"manual\" after.",
		Flags: []cli.Flag{
			registryFlag(), adapterNameFlag(),
			&cli.StringFlag{Name: "note", Usage: "free text kept with the version"},
			&cli.StringSliceFlag{Name: "eval", Usage: "evaluation scores, name=score; repeat or separate with commas"},
			&cli.StringFlag{Name: "selection", Usage: "the data selection manifest the adapter was trained on (compass select's); its SHA-256 is recorded"},
			&cli.StringFlag{Name: "drift-record", Usage: "the drift record (REGISTRY/ADAPTER/drift/*.json) that triggered this version"},
			&cli.BoolFlag{Name: "no-promote", Usage: "keep the current version current"},
			lockTimeoutFlag(),
		},
		Action: func(ctx context.Context, cmd *cli.Command) error {
			args, err := registryArgs(cmd, 1, 1)
			if err != nil {
				return err
			}
			meta := engine.VersionMeta{CompassVersion: versionString(), Note: cmd.String("note")}
			if meta.Eval, err = parseScores(cmd.StringSlice("eval")); err != nil {
				return err
			}
			if path := cmd.String("selection"); path != "" {
				if meta.DataSelectionHash, err = engine.FileSHA256(path); err != nil {
					return fmt.Errorf("registry add: --selection: %w", err)
				}
			}
			if path := cmd.String("drift-record"); path != "" {
				if meta.Trigger, err = engine.DriftTrigger(path); err != nil {
					return err
				}
			}
			reg, err := openRegistry(cmd)
			if err != nil {
				return err
			}
			v, err := reg.Add(cmd.String("adapter"), args[0], meta, !cmd.Bool("no-promote"))
			if err != nil {
				return err
			}
			m, err := reg.List(cmd.String("adapter"))
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.Root().Writer, "added %s %s (parent %s, trigger %s); current %s\n",
				cmd.String("adapter"), v.Version, orNone(v.Parent), v.Trigger, m.Current)
			return nil
		},
	}
}

// parseScores reads name=score pieces.
func parseScores(pieces []string) (map[string]float64, error) {
	if len(pieces) == 0 {
		return nil, nil
	}
	scores := map[string]float64{}
	for _, kv := range pieces {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		x, err := strconv.ParseFloat(v, 64)
		if !ok || k == "" || err != nil {
			return nil, fmt.Errorf("registry add: --eval %q: want name=score, the score a number", kv)
		}
		if _, dup := scores[k]; dup {
			return nil, fmt.Errorf("registry add: --eval %s is given twice", k)
		}
		scores[k] = x
	}
	return scores, nil
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func registryPromoteCommand() *cli.Command {
	return &cli.Command{
		Name:      "promote",
		Usage:     "make a version the current one",
		ArgsUsage: "VERSION",
		Flags:     []cli.Flag{registryFlag(), adapterNameFlag(), lockTimeoutFlag()},
		Action: func(ctx context.Context, cmd *cli.Command) error {
			args, err := registryArgs(cmd, 1, 1)
			if err != nil {
				return err
			}
			reg, err := openRegistry(cmd)
			if err != nil {
				return err
			}
			if err := reg.Promote(cmd.String("adapter"), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.Root().Writer, "%s: current %s\n", cmd.String("adapter"), args[0])
			return nil
		},
	}
}

func registryRollbackCommand() *cli.Command {
	return &cli.Command{
		Name:  "rollback",
		Usage: "make the current version's parent current again (its files are as they were added, byte for byte)",
		Flags: []cli.Flag{registryFlag(), adapterNameFlag(), lockTimeoutFlag()},
		Action: func(ctx context.Context, cmd *cli.Command) error {
			if _, err := registryArgs(cmd, 0, 0); err != nil {
				return err
			}
			reg, err := openRegistry(cmd)
			if err != nil {
				return err
			}
			to, err := reg.Rollback(cmd.String("adapter"))
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.Root().Writer, "%s: rolled back to %s\n", cmd.String("adapter"), to.Version)
			return nil
		},
	}
}

func registryDiffCommand() *cli.Command {
	return &cli.Command{
		Name:      "diff",
		Usage:     "compare two versions: config keys that differ; per tensor, shape, max |b-a| and ||b-a|| / max(||a||, ||b||)",
		ArgsUsage: "VERSION_A VERSION_B",
		Flags:     []cli.Flag{registryFlag(), adapterNameFlag(), jsonFlag()},
		Action: func(ctx context.Context, cmd *cli.Command) error {
			args, err := registryArgs(cmd, 2, 2)
			if err != nil {
				return err
			}
			reg, err := openRegistry(cmd)
			if err != nil {
				return err
			}
			d, err := reg.Diff(cmd.String("adapter"), args[0], args[1])
			if err != nil {
				return err
			}
			if cmd.Bool("json") {
				return printJSON(cmd.Root().Writer, d)
			}
			return d.WriteText(cmd.Root().Writer)
		},
	}
}
