// Command compass adapts large language models to target languages. Each
// subcommand parses its flags and calls into the packages; it holds no logic
// of its own.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/urfave/cli/v3"
)

func main() {
	if err := newApp().Run(context.Background(), os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "compass:", err)
		status := 1
		var es *exitStatus
		if errors.As(err, &es) {
			status = es.status
		}
		os.Exit(status)
	}
}

func newApp() *cli.Command {
	return &cli.Command{
		Name:  "compass",
		Usage: "adapt LLMs to target languages with semantic-gap data selection and LoRA",
		Commands: []*cli.Command{
			demoCommand(),
			inspectCommand(),
			scoreCommand(),
			trainCommand(),
			generateCommand(),
			tokenizeCommand(),
			embedCommand(),
			clusterCommand(),
			selectCommand(),
			evalCommand(),
			adaptCommand(),
			monitorCommand(),
			updateCommand(),
			continualCommand(),
			registryCommand(),
			gpuCommand(),
			benchCommand(),
			versionCommand(),
		},
	}
}
