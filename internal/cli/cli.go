// Package cli is the sluice command: the node agent, the commands that
// inspect its datapath, a demo backend and a lab. cmd/sluice runs it, and
// so do the end-to-end tests, which re-execute their own binary as the
// agent so that they need no other binary (and run as they are in a VM).
package cli

import (
	"fmt"
	"log/slog"
	"os"
	"strings"
)

type command struct {
	name, summary string
	run           func(args []string) error
}

var commands = []command{
	{"agent", "run the node agent (translates services in the kernel)", runAgent},
	{"lb", "lb list: frontends and their backends, read from the pinned maps", runLB},
	{"stats", "datapath counters by reason", runStats},
	{"uninstall", "detach the datapath and remove its pinned state", runUninstall},
	{"whoami", "demo backend answering HTTP, TCP and UDP with who it is", runWhoami},
	{"lab", "lab up|down|traffic: a node, a client and backends in namespaces", runLab},
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: sluice COMMAND [flags]\n\ncommands:")
	for _, c := range commands {
		fmt.Fprintf(os.Stderr, "  %-10s %s\n", c.name, c.summary)
	}
}

// Main runs the command line args (without the program name) and returns
// the exit status.
func Main(args []string) int {
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, nil)))
	if len(args) < 1 || strings.HasPrefix(args[0], "-") {
		usage()
		return 2
	}
	for _, c := range commands {
		if c.name == args[0] {
			if err := c.run(args[1:]); err != nil {
				fmt.Fprintf(os.Stderr, "sluice %s: %v\n", c.name, err)
				return 1
			}
			return 0
		}
	}
	usage()
	return 2
}
