package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sluice-lb/sluice/bpf"
	"github.com/sluice-lb/sluice/control"
	"github.com/sluice-lb/sluice/internal/frontendnames"
	"github.com/sluice-lb/sluice/loader"
	"github.com/sluice-lb/sluice/maps"
)

const ctUsage = `usage: sluice ct list [--pin-dir DIR] [--agent ADDR] [-o table|json]
       sluice ct flush [--pin-dir DIR] [--service NS/NAME | --frontend VIP:PORT/PROTO] [--agent ADDR]`

// The datapath knows a flow's frontend by address, port and protocol; the
// Service's name is the agent's, asked for on its metrics address.
const defaultAgentAddr = "127.0.0.1:10249"

func runCT(args []string) error {
	if len(args) == 0 {
		return errors.New(ctUsage)
	}
	switch args[0] {
	case "list":
		return runCTList(args[1:])
	case "flush":
		return runCTFlush(args[1:])
	}
	return errors.New(ctUsage)
}

func ctFlags(name string) (*flag.FlagSet, *string, *string) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	pinDir := fs.String("pin-dir", loader.DefaultPinDir, "bpffs directory of the agent to inspect")
	agent := fs.String("agent", defaultAgentAddr, "metrics address of the agent, asked for Service names; empty: do not ask")
	return fs, pinDir, agent
}

func runCTList(args []string) error {
	fs, pinDir, agent := ctFlags("ct list")
	output := outputFlag(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	dp, closeMaps, err := loader.OpenPinnedMaps(*pinDir)
	if err != nil {
		return err
	}
	defer closeMaps()
	flows, err := readFlows(dp)
	if err != nil {
		return err
	}
	if *agent != "" {
		names, err := frontendnames.Fetch(context.Background(), *agent)
		if err != nil {
			fmt.Fprintf(os.Stderr, "sluice ct list: Service names left out: agent at %s: %v\n", *agent, err)
		}
		for _, f := range flows {
			if e, ok := names[f.Frontend]; ok {
				f.Service = e.Service()
				if e.Port != "" {
					f.Service += ":" + e.Port
				}
			}
		}
	}
	if *output == outputJSON {
		if flows == nil {
			flows = []*ctFlow{}
		}
		return printJSON(flows)
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "PROTO\tCLIENT\tFRONTEND\tSERVICE\tBACKEND\tSTATE\tFLAGS (FWD/REPLY)\tAGE\tLEFT")
	for _, f := range flows {
		svc := f.Service
		if svc == "" {
			svc = "-"
		}
		backend := f.Backend
		if f.SNAT != "" {
			backend += " via " + f.SNAT
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s (id %d)\t%s\t%s/%s\t%s\t%s\n", f.Proto, f.Client, f.Frontend, svc,
			backend, f.BackendID, f.State, sideFlags(f.Forward), sideFlags(f.Reply),
			seconds(f.AgeSeconds), seconds(f.TimeLeftSeconds))
	}
	return w.Flush()
}

func sideFlags(s *ctSide) string {
	switch {
	case s == nil:
		return "(none)"
	case len(s.Flags) == 0:
		return "-"
	}
	return strings.Join(s.Flags, ",")
}

func seconds(s int64) string {
	if s < 0 {
		return "expired"
	}
	return (time.Duration(s) * time.Second).String()
}

func runCTFlush(args []string) error {
	fs, pinDir, agent := ctFlags("ct flush")
	service := fs.String("service", "", "flush the flows of every frontend of this Service (`NS/NAME`; asks the agent)")
	frontend := fs.String("frontend", "", "flush the flows of this frontend (`VIP:PORT/PROTO`, 10.96.0.10:53/UDP)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *service != "" && *frontend != "" {
		return errors.New("--service and --frontend: give one")
	}
	match := func(*ctFlow) bool { return true }
	switch {
	case *frontend != "":
		fe, err := parseFrontend(*frontend)
		if err != nil {
			return err
		}
		match = func(f *ctFlow) bool { return f.frontend == fe }
	case *service != "":
		ns, name, ok := strings.Cut(*service, "/")
		if !ok || ns == "" || name == "" {
			return fmt.Errorf("--service %q: want NAMESPACE/NAME", *service)
		}
		if *agent == "" {
			return errors.New("--service needs the agent's names: give --agent, or flush by --frontend")
		}
		names, err := frontendnames.Fetch(context.Background(), *agent)
		if err != nil {
			return fmt.Errorf("service names: agent at %s: %w", *agent, err)
		}
		frontends := map[string]bool{}
		for fe, e := range names {
			if e.Namespace == ns && e.Name == name {
				frontends[fe] = true
			}
		}
		if len(frontends) == 0 {
			return fmt.Errorf("the agent programs no frontend of Service %s", *service)
		}
		match = func(f *ctFlow) bool { return frontends[f.Frontend] }
	}
	dp, closeMaps, err := loader.OpenPinnedMapsWritable(*pinDir)
	if err != nil {
		return err
	}
	defer closeMaps()
	n, err := flushFlows(dp, match)
	if err != nil {
		return err
	}
	fmt.Printf("flushed %d flows\n", n)
	return nil
}

// flushFlows deletes both entries of every flow match accepts and returns
// how many flows that was.
func flushFlows(dp *maps.Datapath, match func(*ctFlow) bool) (int, error) {
	flows, err := readFlows(dp)
	if err != nil {
		return 0, err
	}
	var (
		keys []bpf.SluiceCt4Key
		n    int
	)
	for _, f := range flows {
		if !match(f) {
			continue
		}
		n++
		for _, k := range []*bpf.SluiceCt4Key{f.fwdKey, f.revKey} {
			if k != nil {
				keys = append(keys, *k)
			}
		}
	}
	if err := dp.CT4.DeleteAll(keys); err != nil {
		return 0, fmt.Errorf("flush: %w", err)
	}
	return n, nil
}

// parseFrontend reads VIP:PORT/PROTO, as control.Frontend prints it.
func parseFrontend(s string) (control.Frontend, error) {
	ap, proto, ok := strings.Cut(s, "/")
	addr, err := netip.ParseAddrPort(ap)
	if !ok || err != nil || !addr.Addr().Is4() {
		return control.Frontend{}, fmt.Errorf("--frontend %q: want VIP:PORT/PROTO (10.96.0.10:53/UDP)", s)
	}
	fe := control.Frontend{Addr: addr.Addr(), Port: addr.Port()}
	for _, p := range []control.Protocol{control.TCP, control.UDP, control.SCTP} {
		if strings.EqualFold(proto, p.String()) {
			fe.Proto = p
			return fe, nil
		}
	}
	return control.Frontend{}, fmt.Errorf("--frontend %q: protocol %q: want TCP, UDP or SCTP", s, proto)
}
