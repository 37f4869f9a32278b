package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/sluice-lb/sluice/control"
	"github.com/sluice-lb/sluice/control/manifests"
	"github.com/sluice-lb/sluice/loader"
)

type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error {
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			*l = append(*l, p)
		}
	}
	return nil
}

func runAgent(args []string) error {
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	hostname, _ := os.Hostname()
	var (
		manifestDir = fs.String("manifests", "", "directory of Service/EndpointSlice manifests (YAML or JSON) to serve")
		nodeName    = fs.String("node-name", hostname, "this node's name, for endpoint locality")
		pinDir      = fs.String("pin-dir", loader.DefaultPinDir, "bpffs directory for this agent's maps and links")
		attach      = fs.String("attach", string(loader.AttachAuto), "attach mode: auto (TCX, else tc), tcx, or tc (clsact qdisc + filter)")
		serviceCIDR = fs.String("service-cidr", "", "IPv4 service CIDR: packets to unallocated addresses in it are dropped")
		memLimit    = fs.Int64("memory-limit-mib", 100, "soft limit of the Go heap in MiB (GOMEMLIMIT, when set, wins); 0 = none")
		devices     listFlag
	)
	fs.Var(&devices, "devices", "devices to serve: names or globs, comma separated (default: all but loopback)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *manifestDir == "" {
		return errors.New("--manifests DIR is required (the Kubernetes API source is not built yet)")
	}
	mode := loader.AttachMode(*attach)
	switch mode {
	case loader.AttachAuto, loader.AttachTCX, loader.AttachTC:
	default:
		return fmt.Errorf("--attach %q: want auto, tcx or tc", *attach)
	}
	var cidr netip.Prefix
	if *serviceCIDR != "" {
		var err error
		if cidr, err = netip.ParsePrefix(*serviceCIDR); err != nil || !cidr.Addr().Is4() {
			return fmt.Errorf("--service-cidr %q: not an IPv4 CIDR", *serviceCIDR)
		}
	}
	log := slog.Default()
	// A node agent should have a predictable footprint: the GC works
	// harder near the limit instead of letting the heap double.
	if _, set := os.LookupEnv("GOMEMLIMIT"); !set && *memLimit > 0 {
		debug.SetMemoryLimit(*memLimit << 20)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	// Read the whole source before touching the maps (rule 31): until then
	// the previous agent's state keeps serving.
	dir, err := manifests.Open(*manifestDir)
	if err != nil {
		return err
	}
	defer dir.Close()
	dp, err := loader.Load(loader.Options{PinDir: *pinDir, Attach: mode, ServiceCIDR: cidr, Log: log})
	if err != nil {
		return err
	}
	defer dp.Close() // handles only: pins keep the datapath serving
	rec, err := control.NewReconciler(dp.Maps.LB4, log)
	if err != nil {
		return err
	}
	log.Info("adopted pinned state", "pin-dir", *pinDir, "frontends", rec.Frontends())

	sync := newSyncer(rec, control.NodeInfo{Name: *nodeName}, log)
	sync.apply(dir.Snapshot())

	errs := make(chan error, 2)
	go func() {
		errs <- dp.ServeDevices(ctx, loader.DeviceMatcher(devices),
			func(names []string) { log.Info("serving devices", "devices", names, "mode", dp.Mode()) },
			func(err error) { log.Error("device", "err", err) })
	}()
	go func() { errs <- dir.Watch(ctx, sync.apply) }()
	select {
	case <-ctx.Done():
		log.Info("stopping; the datapath keeps serving", "pin-dir", *pinDir)
		return nil
	case err := <-errs:
		return err
	}
}

// syncer turns each snapshot of the source into maps, and logs problems
// once each rather than on every change.
type syncer struct {
	desired  control.DesiredCache
	rec      *control.Reconciler
	node     control.NodeInfo
	log      *slog.Logger
	reported map[string]bool
}

func newSyncer(rec *control.Reconciler, node control.NodeInfo, log *slog.Logger) *syncer {
	return &syncer{rec: rec, node: node, log: log, reported: map[string]bool{}}
}

func (s *syncer) apply(snap manifests.Snapshot) {
	start := time.Now()
	desired, problems := s.desired.Compute(snap.Services, snap.Slices, s.node)
	stats, applyProblems, err := s.rec.Apply(desired)
	if err != nil {
		s.log.Error("programming the datapath failed; retrying on the next change", "err", err)
	}
	now := map[string]bool{}
	for _, p := range snap.Problems {
		now["manifest "+p.String()] = true
	}
	for _, p := range append(problems, applyProblems...) {
		now[p.String()] = true
	}
	for p := range now {
		if !s.reported[p] {
			s.log.Warn("skipped", "problem", p)
		}
	}
	s.reported = now
	s.log.Info("synced", "services", len(snap.Services), "slices", len(snap.Slices),
		"frontends", len(desired.Ports), "written", stats.FrontendsWritten, "removed", stats.FrontendsRemoved,
		"backends+", stats.BackendsAdded, "backends-", stats.BackendsRemoved, "took", time.Since(start))
}
