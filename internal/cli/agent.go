package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/kubernetes"

	"github.com/sluice-lb/sluice/control"
	"github.com/sluice-lb/sluice/control/kube"
	"github.com/sluice-lb/sluice/control/manifests"
	"github.com/sluice-lb/sluice/internal/frontendnames"
	"github.com/sluice-lb/sluice/internal/healthz"
	"github.com/sluice-lb/sluice/internal/metrics"
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

// agentConfig is the agent's command line.
type agentConfig struct {
	kubeconfig, manifestDir, nodeName, pinDir string
	attach                                    loader.AttachMode
	serviceCIDR                               netip.Prefix
	memLimitMiB                               int64
	devices                                   listFlag
	minSync, syncPeriod                       time.Duration
	metricsAddr, healthzAddr                  string
	profiling                                 bool
	log                                       *slog.Logger
}

func parseAgentFlags(args []string) (*agentConfig, error) {
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	c := &agentConfig{}
	nodeDefault := os.Getenv("NODE_NAME")
	if nodeDefault == "" {
		nodeDefault, _ = os.Hostname()
	}
	var attach, serviceCIDR, logFormat, logLevel string
	var verbosity int
	fs.StringVar(&c.kubeconfig, "kubeconfig", "", "kubeconfig of the API server to watch (default: the in-cluster config, when running in a pod)")
	fs.StringVar(&c.manifestDir, "manifests", "", "serve a directory of Service/EndpointSlice manifests (YAML or JSON) instead of an API server")
	fs.StringVar(&c.nodeName, "node-name", nodeDefault, "this node's name, for endpoint locality and hints (default $NODE_NAME, else the hostname)")
	fs.StringVar(&c.pinDir, "pin-dir", loader.DefaultPinDir, "bpffs directory for this agent's maps and links")
	fs.StringVar(&attach, "attach", string(loader.AttachAuto), "attach mode: auto (TCX, else tc), tcx, or tc (clsact qdisc + filter)")
	fs.StringVar(&serviceCIDR, "service-cidr", "", "IPv4 service CIDR: packets to unallocated addresses in it are dropped")
	fs.Int64Var(&c.memLimitMiB, "memory-limit-mib", 100, "soft limit of the Go heap in MiB (GOMEMLIMIT, when set, wins); 0 = none")
	fs.Var(&c.devices, "devices", "devices to serve: names or globs, comma separated (default: all but loopback)")
	fs.DurationVar(&c.minSync, "min-sync-period", time.Second, "least time between two syncs of the datapath; changes in between are coalesced")
	fs.DurationVar(&c.syncPeriod, "sync-period", time.Hour, "period of the full resync, which also repairs map entries changed behind sluice's back")
	fs.StringVar(&c.metricsAddr, "metrics-bind-address", "0.0.0.0:10249", "address of the Prometheus metrics endpoint; empty to disable")
	fs.BoolVar(&c.profiling, "profiling", false, "serve Go's /debug/pprof/ on the metrics address, as kube-proxy's enableProfiling")
	fs.StringVar(&c.healthzAddr, "healthz-bind-address", "0.0.0.0:10256", "address of /healthz and /livez; empty to disable")
	fs.StringVar(&logFormat, "log-format", "text", "log format: text or json")
	fs.IntVar(&verbosity, "v", 0, "log verbosity: 0 info, 4 and more debug")
	fs.StringVar(&logLevel, "log-level", "", "log level: debug, info, warn or error (overrides --v)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if c.kubeconfig != "" && c.manifestDir != "" {
		return nil, errors.New("--kubeconfig and --manifests are two sources: give one")
	}
	c.attach = loader.AttachMode(attach)
	switch c.attach {
	case loader.AttachAuto, loader.AttachTCX, loader.AttachTC:
	default:
		return nil, fmt.Errorf("--attach %q: want auto, tcx or tc", attach)
	}
	if serviceCIDR != "" {
		var err error
		if c.serviceCIDR, err = netip.ParsePrefix(serviceCIDR); err != nil || !c.serviceCIDR.Addr().Is4() {
			return nil, fmt.Errorf("--service-cidr %q: not an IPv4 CIDR", serviceCIDR)
		}
	}
	if c.minSync < 0 || c.syncPeriod <= 0 {
		return nil, fmt.Errorf("--min-sync-period %s, --sync-period %s: want >= 0 and > 0", c.minSync, c.syncPeriod)
	}
	level := slog.Level(-verbosity)
	if logLevel != "" {
		if err := level.UnmarshalText([]byte(logLevel)); err != nil {
			return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", logLevel)
		}
	}
	opts := &slog.HandlerOptions{Level: level}
	switch logFormat {
	case "text":
		c.log = slog.New(slog.NewTextHandler(os.Stderr, opts))
	case "json":
		c.log = slog.New(slog.NewJSONHandler(os.Stderr, opts))
	default:
		return nil, fmt.Errorf("--log-format %q: want text or json", logFormat)
	}
	return c, nil
}

// source opens the configured source: the manifests directory, or the API
// server (a kubeconfig, else the in-cluster config).
func (c *agentConfig) source() (src control.Source, closeSrc func(), err error) {
	node := control.NodeInfo{Name: c.nodeName}
	if c.manifestDir != "" {
		// Opened (watched, then read) before the maps are touched.
		dir, err := manifests.Open(c.manifestDir)
		if err != nil {
			return nil, nil, err
		}
		return manifests.NewSource(dir, node), func() { dir.Close() }, nil
	}
	cfg, err := kube.RESTConfig(c.kubeconfig)
	if err != nil {
		return nil, nil, err
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("API client: %w", err)
	}
	return kube.New(client, c.nodeName, c.log), func() {}, nil
}

func runAgent(args []string) error {
	c, err := parseAgentFlags(args)
	if err != nil {
		return err
	}
	log := c.log
	slog.SetDefault(log)
	// A node agent should have a predictable footprint: the GC works
	// harder near the limit instead of letting the heap double.
	if _, set := os.LookupEnv("GOMEMLIMIT"); !set && c.memLimitMiB > 0 {
		debug.SetMemoryLimit(c.memLimitMiB << 20)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	src, closeSrc, err := c.source()
	if err != nil {
		return err
	}
	defer closeSrc()
	dp, err := loader.Load(loader.Options{PinDir: c.pinDir, Attach: c.attach, ServiceCIDR: c.serviceCIDR, Log: log})
	if err != nil {
		return err
	}
	defer dp.Close() // handles only: pins keep the datapath serving
	rec, err := control.NewReconciler(dp.Maps.LB4, log)
	if err != nil {
		return err
	}
	log.Info("adopted pinned state", "pin-dir", c.pinDir, "frontends", rec.Frontends())

	// kube-proxy's rule: unhealthy once a change has waited for more
	// than twice the sync period. Queued at start, so an agent that
	// never syncs turns unhealthy.
	health := healthz.New(2 * c.syncPeriod)
	health.QueuedUpdate()
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	reg.MustRegister(metrics.NewDatapathCollector(dp.Maps))
	// Service names of the frontends, for `sluice ct`, on the metrics
	// address: copied from the state by the next sync after a request.
	names := &frontendnames.Table{}
	var syncer *control.Syncer
	syncer = control.NewSyncer(rec, control.NodeInfo{Name: c.nodeName}, c.minSync, c.syncPeriod, log, control.SyncHooks{
		Queued: func() {
			health.QueuedUpdate()
			m.QueuedSync(time.Now())
		},
		Done: func(rep control.SyncReport) {
			health.SetNodeEligible(!rep.Node.Leaving)
			m.SetSkipped(rep.Skipped)
			if rep.Err != nil {
				m.SyncFailed()
				return
			}
			health.Updated()
			if names.Wanted() {
				names.Set(syncer.State())
			}
			m.ObserveSync(rep.Start, rep.End, rep.Full)
			m.ObserveNetworkProgramming(rep.Triggers, rep.End)
			m.SetProgrammed(rep.Services, rep.Frontends, rep.Backends)
		},
	})

	names.Refresh = syncer.Runner.Run
	errs := make(chan error, 4)
	if c.healthzAddr != "" {
		go func() { errs <- health.Serve(ctx, c.healthzAddr) }()
	}
	if c.metricsAddr != "" {
		mux := http.NewServeMux()
		mux.Handle("/metrics", metrics.Handler(reg))
		mux.Handle(frontendnames.Path, names)
		if c.profiling {
			mux.HandleFunc("/debug/pprof/", pprof.Index)
			mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		}
		go func() { errs <- metrics.Serve(ctx, c.metricsAddr, mux) }()
	}
	// Attached first, then synced: /healthz reports a sync only once the
	// datapath that serves it is attached. A restarted agent's pinned
	// state serves meanwhile.
	attached := make(chan struct{})
	go func() {
		first := true
		errs <- dp.ServeDevices(ctx, loader.DeviceMatcher(c.devices),
			func(names []string) {
				log.Info("serving devices", "devices", names, "mode", dp.Mode())
				if first {
					first = false
					close(attached)
				}
			},
			func(err error) { log.Error("device", "err", err) })
	}()
	go func() { errs <- src.Run(ctx, syncer.Store) }()
	go func() {
		select {
		case <-attached:
			syncer.Runner.Loop(ctx)
		case <-ctx.Done():
		}
	}()
	select {
	case <-ctx.Done():
		log.Info("stopping; the datapath keeps serving", "pin-dir", c.pinDir)
		return nil
	case err := <-errs:
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
}
