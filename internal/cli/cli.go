// Package cli is the sluice command: the node agent, the commands that
// inspect its datapath, a demo backend and a lab. cmd/sluice runs it, and
// so do the end-to-end tests, which re-execute their own binary as the
// agent so that they need no other binary (and run as they are in a VM).
package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
)

type command struct {
	name, summary string
	run           func(args []string) error
	// usage, for a command made of subcommands, is what help prints; a
	// command with flags only gets its usage from its FlagSet.
	usage string
}

var commands = []command{
	{"agent", "run the node agent (translates services in the kernel)", runAgent, ""},
	{"lb", "lb list: frontends and their backends, read from the pinned maps", runLB, lbUsage},
	{"l2", "l2 list: load-balancer addresses this node answers ARP for, read from the pinned maps", runL2, l2Usage},
	{"stats", "datapath counters by reason", runStats, ""},
	{"ct", "ct list|flush: translated flows (conntrack), read from or removed from the pinned maps", runCT, ctUsage},
	{"trace", "what the datapath would do with a packet, from the live maps, changing nothing", runTrace, ""},
	{"uninstall", "detach the datapath and remove its pinned state", runUninstall, ""},
	{"whoami", "demo backend answering HTTP, TCP and UDP with who it is", runWhoami, ""},
	{"lab", "lab up|down|traffic: a node, a client and backends in namespaces", runLab,
		"usage: sluice lab up [--backends N] [--attach MODE] | down | traffic [--requests N]"},
	{"version", "the version of sluice, of Go, and the platform", runVersion, ""},
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: sluice COMMAND [flags]\n\ncommands:")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\n`sluice COMMAND --help` lists a command's flags.")
}

func isHelp(arg string) bool {
	switch arg {
	case "-h", "-help", "--help", "help":
		return true
	}
	return false
}

// Main runs the command line args (without the program name) and returns
// the exit status: 0, 1 when the command failed, 2 when there is no such
// command. Asking for help (-h, --help) is not a failure: the command's
// FlagSet prints its usage and returns flag.ErrHelp, which is status 0.
func Main(args []string) int {
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, nil)))
	if len(args) == 1 && isHelp(args[0]) {
		usage(os.Stdout)
		return 0
	}
	if len(args) < 1 || strings.HasPrefix(args[0], "-") {
		usage(os.Stderr)
		return 2
	}
	for _, c := range commands {
		if c.name != args[0] {
			continue
		}
		if c.usage != "" && len(args) > 1 && isHelp(args[1]) {
			fmt.Fprintln(os.Stderr, c.usage)
			return 0
		}
		err := c.run(args[1:])
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "sluice %s: %v\n", c.name, err)
			return 1
		}
		return 0
	}
	usage(os.Stderr)
	return 2
}
