package cli

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/sluice-lb/sluice/control"
	"github.com/sluice-lb/sluice/loader"
	"github.com/sluice-lb/sluice/maps"
)

// outputFormat is the value of -o: table or json, and nothing else, so
// that a format sluice does not have is refused rather than answered with
// a table.
type outputFormat string

const (
	outputTable outputFormat = "table"
	outputJSON  outputFormat = "json"
)

func (o *outputFormat) String() string { return string(*o) }

func (o *outputFormat) Set(s string) error {
	switch f := outputFormat(s); f {
	case outputTable, outputJSON:
		*o = f
		return nil
	}
	return errors.New("want table or json")
}

// outputFlag registers -o on fs, table by default.
func outputFlag(fs *flag.FlagSet) *outputFormat {
	o := outputTable
	fs.Var(&o, "o", "output `format`: table or json")
	return &o
}

const lbUsage = "usage: sluice lb list [--pin-dir DIR] [-o table|json]"

func inspectFlags(name string) (*flag.FlagSet, *string, *outputFormat) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	pinDir := fs.String("pin-dir", loader.DefaultPinDir, "bpffs directory of the agent to inspect")
	return fs, pinDir, outputFlag(fs)
}

// openList starts a `<noun> list` command: it checks the verb, parses
// --pin-dir and -o, and opens the agent's pinned maps read-only.
func openList(args []string, noun, usage string) (*maps.Datapath, func(), outputFormat, error) {
	if len(args) == 0 || args[0] != "list" {
		return nil, nil, "", errors.New(usage)
	}
	fs, pinDir, output := inspectFlags(noun + " list")
	if err := fs.Parse(args[1:]); err != nil {
		return nil, nil, "", err
	}
	dp, closeMaps, err := loader.OpenPinnedMaps(*pinDir)
	if err != nil {
		return nil, nil, "", err
	}
	return dp, closeMaps, *output, nil
}

func runLB(args []string) error {
	dp, closeMaps, output, err := openList(args, "lb", lbUsage)
	if err != nil {
		return err
	}
	defer closeMaps()
	views, err := control.Inspect(dp.LB4)
	if err != nil {
		return err
	}
	if output == outputJSON {
		return printJSON(views)
	}
	return writeLBTable(os.Stdout, views)
}

// writeLBTable prints one row per set of entries: a frontend every client
// gets the same set of has one row, scope "all"; a two-scope frontend
// (externalTrafficPolicy: Local) has an "external" row and an "internal"
// one, the set this node's pods and the node itself get.
func writeLBTable(out io.Writer, views []control.FrontendView) error {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "FRONTEND\tPROTO\tKIND\tSCOPE\tFLAGS\tBACKENDS")
	for _, v := range views {
		scope := "all"
		if v.Internal != nil {
			scope = "external"
		}
		var flags []string
		if v.AffinitySeconds > 0 {
			flags = append(flags, fmt.Sprintf("affinity=%ds", v.AffinitySeconds))
		}
		if v.SourceRanges != nil {
			// Checked before the scope is chosen, so for both rows;
			// shown on the first. An empty list admits no new flow
			// at all, and is shown as such.
			flags = append(flags, "source-ranges="+strings.Join(v.SourceRanges, ","))
		}
		row := func(scope string, s control.ScopeView, flags []string) {
			if s.SNATRemote {
				flags = append([]string{"snat-remote"}, flags...)
			}
			list := "-"
			if len(flags) > 0 {
				list = strings.Join(flags, " ")
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", v.Frontend, v.Protocol, v.Kind, scope, list, backendList(s))
		}
		row(scope, v.ScopeView, flags)
		if v.Internal != nil {
			var inFlags []string
			if v.AffinitySeconds > 0 {
				inFlags = append(inFlags, fmt.Sprintf("affinity=%ds", v.AffinitySeconds))
			}
			row("internal", *v.Internal, inFlags)
		}
	}
	return w.Flush()
}

// backendList is a set's backends, a local one marked, or what a new flow
// gets without any.
func backendList(s control.ScopeView) string {
	if len(s.Backends) == 0 {
		if s.Empty == "drop" {
			return "(none: DROP)"
		}
		return "(none: REJECT)"
	}
	addrs := make([]string, len(s.Backends))
	for i, b := range s.Backends {
		addrs[i] = b.Address
		if b.Local {
			addrs[i] += " (local)"
		}
	}
	return strings.Join(addrs, ", ")
}

func runStats(args []string) error {
	fs, pinDir, output := inspectFlags("stats")
	if err := fs.Parse(args); err != nil {
		return err
	}
	dp, closeMaps, err := loader.OpenPinnedMaps(*pinDir)
	if err != nil {
		return err
	}
	defer closeMaps()
	counts, err := dp.ReadCounters()
	if err != nil {
		return err
	}
	if *output == outputJSON {
		return printJSON(counts)
	}
	slices.SortStableFunc(counts, func(a, b maps.ReasonCount) int { return strings.Compare(a.Reason, b.Reason) })
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "REASON\tPACKETS\tBYTES")
	for _, c := range counts {
		fmt.Fprintf(w, "%s\t%d\t%d\n", c.Reason, c.Packets, c.Bytes)
	}
	return w.Flush()
}

func runUninstall(args []string) error {
	fs := flag.NewFlagSet("uninstall", flag.ContinueOnError)
	pinDir := fs.String("pin-dir", loader.DefaultPinDir, "bpffs directory of the agent to remove")
	if err := fs.Parse(args); err != nil {
		return err
	}
	return loader.Uninstall(*pinDir, slog.Default())
}

func printJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
