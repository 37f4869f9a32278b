// Command sluice is the one binary of sluice: the node agent, the
// commands that inspect its datapath, a demo backend and a lab.
package main

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

func main() {
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, nil)))
	if len(os.Args) < 2 || strings.HasPrefix(os.Args[1], "-") {
		usage()
		os.Exit(2)
	}
	for _, c := range commands {
		if c.name == os.Args[1] {
			if err := c.run(os.Args[2:]); err != nil {
				fmt.Fprintf(os.Stderr, "sluice %s: %v\n", c.name, err)
				os.Exit(1)
			}
			return
		}
	}
	usage()
	os.Exit(2)
}
