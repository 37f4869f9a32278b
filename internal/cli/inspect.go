package cli

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
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

func runLB(args []string) error {
	if len(args) == 0 || args[0] != "list" {
		return errors.New(lbUsage)
	}
	fs, pinDir, output := inspectFlags("lb list")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	dp, closeMaps, err := loader.OpenPinnedMaps(*pinDir)
	if err != nil {
		return err
	}
	defer closeMaps()
	views, err := control.Inspect(dp.LB4)
	if err != nil {
		return err
	}
	if *output == outputJSON {
		return printJSON(views)
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "FRONTEND\tPROTO\tBACKENDS")
	for _, v := range views {
		addrs := make([]string, len(v.Backends))
		for i, b := range v.Backends {
			addrs[i] = b.Address
		}
		list := strings.Join(addrs, ", ")
		if list == "" {
			list = "(none: REJECT)"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\n", v.Frontend, v.Protocol, list)
	}
	return w.Flush()
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
