package cli

import (
	"flag"
	"slices"
	"testing"
)

// Flags may follow the packet: `sluice trace tcp A B --flags SA`.
func TestTraceFlagsAmongArguments(t *testing.T) {
	fs := flag.NewFlagSet("trace", flag.ContinueOnError)
	flags := fs.String("flags", "S", "")
	egress := fs.Bool("egress", false, "")
	pos, err := parseInterspersed(fs, []string{"tcp", "--egress", "10.0.0.1:1", "10.0.0.2:2", "--flags", "SA"})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(pos, []string{"tcp", "10.0.0.1:1", "10.0.0.2:2"}) || *flags != "SA" || !*egress {
		t.Errorf("positional %v, flags %q, egress %v", pos, *flags, *egress)
	}
}
