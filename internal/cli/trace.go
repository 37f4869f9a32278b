package cli

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/sluice-lb/sluice/internal/trace"
	"github.com/sluice-lb/sluice/loader"
)

const traceUsage = "usage: sluice trace tcp|udp SRC:PORT DST:PORT [--flags S|SA|A|FA|R...] [--size N] [--egress] [--pin-dir DIR] [-o table|json]"

// runTrace says what the running agent's datapath would do with one
// packet: the trace build of its programs reads the agent's maps and
// writes none, so the trace leaves conntrack, affinity and the counters
// as they are.
func runTrace(args []string) error {
	fs, pinDir, output := inspectFlags("trace")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), traceUsage)
		fs.PrintDefaults()
	}
	flags := fs.String("flags", "S", "TCP flags as letters: S(YN) A(CK) F(IN) R(ST) P(SH)")
	size := fs.Int("size", 0, "payload `bytes`")
	egress := fs.Bool("egress", false, "trace at egress (a reply leaving towards its client) instead of ingress")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 3 {
		return errors.New(traceUsage)
	}
	p, err := trace.ParsePacket(pos[0], pos[1], pos[2])
	if err != nil {
		return err
	}
	if *size < 0 || *size > 1400 {
		return fmt.Errorf("--size %d: want 0 to 1400 bytes", *size)
	}
	p.Size = *size
	if p.Proto == trace.ProtoTCP {
		if p.TCPFlags, err = trace.ParseTCPFlags(*flags); err != nil {
			return err
		}
	}
	hook := trace.Ingress
	if *egress {
		hook = trace.Egress
	}

	tracer, dp, done, err := loader.OpenTracer(*pinDir)
	if err != nil {
		return err
	}
	defer done()
	r, err := trace.Run(tracer, dp, hook, p)
	if err != nil {
		return err
	}
	if *output == outputJSON {
		return printJSON(r)
	}
	return printTrace(r)
}

// parseInterspersed parses flags wherever they are among the positional
// arguments (`sluice trace tcp A B --flags SA`), which flag.Parse alone
// stops at.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

func printTrace(r *trace.Result) error {
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(w, "%s\t%s\n", k, v) }
	row("HOOK", string(r.Hook))
	row("PACKET", r.Packet.String())
	row("VERDICT", r.Verdict)
	row("REASONS", strings.Join(r.Reasons, ", "))
	fe := r.Frontend
	if fe == "" {
		fe = "(none)"
	}
	row("FRONTEND", fe)
	ct := "no entry"
	if c := r.Conntrack; c != nil {
		ct = c.Kind + " entry"
		if c.Backend != "" {
			ct += " to " + c.Backend
		}
		if c.ExpiresIn >= 0 {
			ct += fmt.Sprintf(", expires in %ds", c.ExpiresIn)
		} else {
			ct += fmt.Sprintf(", expired %ds ago", -c.ExpiresIn)
		}
	}
	row("CONNTRACK", ct)
	if r.Backend != nil {
		be := r.Backend.String()
		if r.Choices > 0 {
			be = fmt.Sprintf("this run: %s; a new flow picks one of %d backends at random", be, r.Choices)
		}
		row("BACKEND", be)
	}
	if r.Output != nil {
		row("OUTPUT", r.Output.String())
	}
	return w.Flush()
}
