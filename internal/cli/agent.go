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
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cilium/ebpf/rlimit"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/kubernetes"

	"github.com/sluice-lb/sluice/control"
	"github.com/sluice-lb/sluice/control/conntrack"
	"github.com/sluice-lb/sluice/control/kube"
	"github.com/sluice-lb/sluice/control/lbipam"
	"github.com/sluice-lb/sluice/control/manifests"
	"github.com/sluice-lb/sluice/internal/frontendnames"
	"github.com/sluice-lb/sluice/internal/healthcheck"
	"github.com/sluice-lb/sluice/internal/healthz"
	"github.com/sluice-lb/sluice/internal/metrics"
	"github.com/sluice-lb/sluice/loader"
	"github.com/sluice-lb/sluice/maps"
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

// uint32Flag parses a flag's value into a uint32.
func uint32Flag(v *uint32) func(string) error {
	return func(s string) error {
		n, err := strconv.ParseUint(s, 10, 32)
		*v = uint32(n)
		return err
	}
}

// agentConfig is the agent's command line.
type agentConfig struct {
	kubeconfig, manifestDir, nodeName, pinDir string
	attach                                    loader.AttachMode
	tc                                        loader.TCFilters
	serviceCIDR                               netip.Prefix
	memLimitMiB                               int64
	rejectRate, rejectBurst                   uint32
	devices                                   listFlag
	minSync, syncPeriod                       time.Duration
	metricsAddr, healthzAddr                  string
	profiling                                 bool
	log                                       *slog.Logger
	ct                                        ctConfig
	// nodePortAddresses is --nodeport-addresses: "primary" or CIDRs.
	nodePortAddresses string
	// snatPorts are the source ports SNATed flows get (rules 13, 26).
	snatPorts portRange
	// cgroupRoot is where socket-level load balancing is attached; ""
	// disables it.
	cgroupRoot           string
	cgroupDefaultMissing bool // no --cgroup-root, and no cgroup v2 hierarchy found
	// sock holds --socket-lb-host-only: Pods' TCP connects are left to
	// the per-packet datapath.
	sock loader.SockOptions
	// lbPool is --lb-ip-pool: addresses for Services of type
	// LoadBalancer, announced on the node's link; empty: off.
	lbPool lbipam.Pool
	// namespace is the agent's own ($POD_NAMESPACE), where the LB-IPAM
	// Lease is.
	namespace string
}

// ctConfig is the conntrack part of the command line.
type ctConfig struct {
	memoryPercent float64
	maxFlows      uint
	timeouts      conntrack.Timeouts
	gcInterval    time.Duration
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
	var tcIngress, tcEgress uint
	tcHandle := uint64(loader.DefaultTCHandle)
	fs.UintVar(&tcIngress, "tc-ingress-priority", uint(loader.DefaultTCIngressPriority), "tc mode: priority of the ingress clsact filter (lower runs first; the default runs before other tools' filters, not at Cilium's 1)")
	fs.UintVar(&tcEgress, "tc-egress-priority", uint(loader.DefaultTCEgressPriority), "tc mode: priority of the egress clsact filter (the default runs after other tools' filters)")
	fs.Func("tc-handle", fmt.Sprintf("tc mode: handle of sluice's clsact filters, decimal or 0x hex (default %#x)", loader.DefaultTCHandle), func(v string) (err error) {
		tcHandle, err = strconv.ParseUint(v, 0, 32)
		return err
	})
	fs.StringVar(&serviceCIDR, "service-cidr", "", "IPv4 service CIDR: packets to unallocated addresses in it are dropped")
	fs.Func("reject-rate", "ICMP port unreachables REJECT may send per second, per CPU; over it the packet is dropped (default 0 = 1000, as the kernel's icmp_msgs_per_sec)", uint32Flag(&c.rejectRate))
	fs.Func("reject-burst", "ICMP port unreachables a CPU may send at once after a quiet spell (default 0 = 50, as the kernel's icmp_msgs_burst)", uint32Flag(&c.rejectBurst))
	fs.Int64Var(&c.memLimitMiB, "memory-limit-mib", 100, "soft limit of the Go heap in MiB (GOMEMLIMIT, when set, wins); 0 = none")
	fs.Var(&c.devices, "devices", "devices to serve: names or globs, comma separated (default: every Ethernet device but loopback, bridges, bond ports, and VLAN, macvlan and ipvlan devices on a parent here; devices without an Ethernet header are never served)")
	fs.DurationVar(&c.minSync, "min-sync-period", 100*time.Millisecond, "least time between two syncs of the datapath; changes in between are coalesced")
	fs.DurationVar(&c.syncPeriod, "sync-period", time.Hour, "period of the full resync, which also repairs map entries changed behind sluice's back")
	fs.StringVar(&c.metricsAddr, "metrics-bind-address", "0.0.0.0:10249", "address of the Prometheus metrics endpoint; empty to disable")
	fs.BoolVar(&c.profiling, "profiling", false, "serve Go's /debug/pprof/ on the metrics address, as kube-proxy's enableProfiling")
	fs.StringVar(&c.healthzAddr, "healthz-bind-address", "0.0.0.0:10256", "address of /healthz and /livez; empty to disable")
	ct := conntrack.DefaultTimeouts()
	fs.Float64Var(&c.ct.memoryPercent, "ct-memory-percent", conntrack.DefaultMemoryPercent,
		"share of the node's physical memory, in percent, the conntrack table is sized to (rounded down to a power of two entries)")
	fs.UintVar(&c.ct.maxFlows, "ct-max", 0, "size of the conntrack table in flows (two entries each); overrides --ct-memory-percent")
	fs.DurationVar(&c.ct.timeouts.TCPEstablished, "conntrack-tcp-timeout-established", ct.TCPEstablished, "idle lifetime of an established TCP flow")
	fs.DurationVar(&c.ct.timeouts.TCPClose, "conntrack-tcp-timeout-close", ct.TCPClose, "lifetime of a TCP flow after a FIN or RST")
	fs.DurationVar(&c.ct.timeouts.TCPSyn, "conntrack-tcp-timeout-syn", ct.TCPSyn, "lifetime of a TCP flow the backend has not answered yet")
	fs.DurationVar(&c.ct.timeouts.UDP, "conntrack-udp-timeout", ct.UDP, "idle lifetime of a UDP flow the backend has not answered, or answered within its first 2 s")
	fs.DurationVar(&c.ct.timeouts.UDPStream, "conntrack-udp-timeout-stream", ct.UDPStream, "idle lifetime of a UDP flow answered after it lasted 2 s (a stream; a query answered at once keeps --conntrack-udp-timeout)")
	fs.DurationVar(&c.ct.gcInterval, "conntrack-gc-interval", conntrack.DefaultInterval,
		"usual wait between two sweeps of the conntrack collector (shortened while sweeps delete much, lengthened while little)")
	fs.StringVar(&c.nodePortAddresses, "nodeport-addresses", "primary",
		"addresses NodePorts (and healthCheckNodePorts) are served on: primary, the Node's InternalIPs (without a Node, "+
			"the default route's device's addresses), or comma separated CIDRs the node's addresses are taken from "+
			"(loopback ones only when a CIDR in 127.0.0.0/8 names them)")
	snatPorts := "61000-65535"
	fs.StringVar(&snatPorts, "snat-port-range", snatPorts, "source ports, min-max, of flows SNATed to the node's address; keep them out of net.ipv4.ip_local_port_range")
	cgroupSet := false
	fs.Func("cgroup-root", "cgroup v2 directory whose processes (the node's own host-network ones, and its Pods' TCP connects) reach Services through socket-level load balancing; "+
		"empty disables it (default: the root of the unified hierarchy, /sys/fs/cgroup, or /sys/fs/cgroup/unified on a hybrid host; none when neither is cgroup v2)",
		func(v string) error {
			c.cgroupRoot, cgroupSet = v, true
			return nil
		})
	fs.BoolVar(&c.sock.HostOnly, "socket-lb-host-only", false, "socket-level load balancing for the node's own processes only: "+
		"Pods' TCP connects to Services are then translated per packet, not at connect() (for service meshes whose sidecars "+
		"steer a Pod's connections by the Service address); Pods' UDP is always translated per packet")
	var lbPool string
	fs.StringVar(&lbPool, "lb-ip-pool", "", "IPv4 CIDRs, comma separated, Services of type LoadBalancer get their address from (one elected agent assigns them) "+
		"and that the chosen node answers ARP for on its link; empty disables LB-IPAM. Needs --kubeconfig or the in-cluster config")
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
	if tcIngress == 0 || tcIngress > 0xffff || tcEgress == 0 || tcEgress > 0xffff || tcHandle == 0 {
		return nil, fmt.Errorf("--tc-ingress-priority %d, --tc-egress-priority %d, --tc-handle %#x: want priorities 1-65535 and a handle other than 0",
			tcIngress, tcEgress, tcHandle)
	}
	c.tc = loader.TCFilters{IngressPriority: uint16(tcIngress), EgressPriority: uint16(tcEgress), Handle: uint32(tcHandle)}
	if serviceCIDR != "" {
		var err error
		if c.serviceCIDR, err = netip.ParsePrefix(serviceCIDR); err != nil || !c.serviceCIDR.Addr().Is4() {
			return nil, fmt.Errorf("--service-cidr %q: not an IPv4 CIDR", serviceCIDR)
		}
	}
	if c.minSync < 0 || c.syncPeriod <= 0 {
		return nil, fmt.Errorf("--min-sync-period %s, --sync-period %s: want >= 0 and > 0", c.minSync, c.syncPeriod)
	}
	if c.ct.maxFlows > 1<<31 {
		return nil, fmt.Errorf("--ct-max %d: at most %d flows", c.ct.maxFlows, 1<<31)
	}
	if _, err := c.ct.timeouts.Seconds(); err != nil {
		return nil, err
	}
	if c.ct.gcInterval < conntrack.MinInterval {
		return nil, fmt.Errorf("--conntrack-gc-interval %s: want at least %s", c.ct.gcInterval, conntrack.MinInterval)
	}
	if err := checkNodePortAddresses(c.nodePortAddresses); err != nil {
		return nil, err
	}
	var err error
	if c.snatPorts, err = parsePortRange("--snat-port-range", snatPorts); err != nil {
		return nil, err
	}
	if !cgroupSet {
		c.cgroupRoot = loader.DefaultCgroupRoot()
		c.cgroupDefaultMissing = c.cgroupRoot == ""
	} else if c.cgroupRoot != "" && !loader.IsCgroup2(c.cgroupRoot) && loader.IsCgroup2(filepath.Join(c.cgroupRoot, "unified")) {
		// A hybrid host's /sys/fs/cgroup (as deploy/ mounts it): its
		// unified hierarchy is the subdirectory.
		c.cgroupRoot = filepath.Join(c.cgroupRoot, "unified")
	}
	if c.lbPool, err = lbipam.ParsePool(lbPool); err != nil {
		return nil, err
	}
	if !c.lbPool.Empty() && c.manifestDir != "" {
		return nil, errors.New("--lb-ip-pool needs an API server: it writes Services' status; not with --manifests")
	}
	c.namespace = os.Getenv("POD_NAMESPACE")
	if c.namespace == "" {
		c.namespace = "kube-system"
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

// checkNodePortAddresses refuses a --nodeport-addresses that is neither
// primary nor a list of CIDRs at start, rather than at the first Node: the
// flag is parsed where it is used, in control.NodePortAddresses.
func checkNodePortAddresses(flag string) error {
	_, err := control.NodePortAddresses(flag, nil, nil)
	return err
}

// source opens the configured source: the manifests directory, or the API
// server (a kubeconfig, else the in-cluster config).
// The API client is nil with the manifests directory.
func (c *agentConfig) source() (src control.Source, client kubernetes.Interface, closeSrc func(), err error) {
	if c.manifestDir != "" {
		// Opened (watched, then read) before the maps are touched.
		dir, err := manifests.Open(c.manifestDir)
		if err != nil {
			return nil, nil, nil, err
		}
		return manifests.NewSource(dir, c.nodeName), nil, func() { dir.Close() }, nil
	}
	cfg, err := kube.RESTConfig(c.kubeconfig)
	if err != nil {
		return nil, nil, nil, err
	}
	if c.kubeconfig == "" {
		c.warnServiceAPIHost(os.Getenv("KUBERNETES_SERVICE_HOST"))
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("API client: %w", err)
	}
	return kube.New(cs, c.nodeName, c.log), cs, func() {}, nil
}

// warnServiceAPIHost says when the in-cluster API server address is a
// ClusterIP (kubelet's KUBERNETES_SERVICE_HOST is the kubernetes Service's):
// sluice serves that Service itself, so without kube-proxy the first agent
// on a node reaches it only through what an earlier agent pinned.
func (c *agentConfig) warnServiceAPIHost(host string) {
	ip, err := netip.ParseAddr(host)
	if err != nil || !c.serviceCIDR.IsValid() || !c.serviceCIDR.Contains(ip) {
		return
	}
	c.log.Warn("the API server is reached at a ClusterIP, which sluice itself serves: without kube-proxy, "+
		"set KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT in sluice-config to the API server's own address",
		"KUBERNETES_SERVICE_HOST", host, "service-cidr", c.serviceCIDR)
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

	src, client, closeSrc, err := c.source()
	if err != nil {
		return err
	}
	defer closeSrc()
	ctSize, err := c.ct.size()
	if err != nil {
		return err
	}
	timeouts, _ := c.ct.timeouts.Seconds() // checked by parseAgentFlags
	switch {
	case c.cgroupDefaultMissing:
		log.Warn("no cgroup v2 hierarchy at /sys/fs/cgroup or /sys/fs/cgroup/unified: running without socket-level load balancing; the node's own processes reach no Service")
	case c.cgroupRoot == "":
		log.Info("socket-level load balancing disabled (--cgroup-root is empty): the node's own processes reach no Service")
	}
	dp, err := loader.Load(loader.Options{PinDir: c.pinDir, Attach: c.attach, ServiceCIDR: c.serviceCIDR, TC: c.tc,
		RejectRate: c.rejectRate, RejectBurst: c.rejectBurst,
		CTEntries: ctSize.Entries, CTTimeouts: timeouts, CgroupRoot: c.cgroupRoot,
		Sock: c.sock, Log: log})
	if err != nil {
		return err
	}
	defer dp.Close() // handles only: pins keep the datapath serving
	ctBytes, err := maps.MemoryBytes(dp.Maps.CT4.Raw())
	if err != nil {
		return fmt.Errorf("conntrack table memory: %w", err)
	}
	log.Info("conntrack table", "entries", ctSize.Entries, "flows", ctSize.Flows(), "memory-bytes", ctBytes,
		"bytes-per-entry", ctBytes/uint64(max(ctSize.Entries, 1)), "derived", ctSize.Derived)
	// The node's address, pod CIDR and SNAT ports go into sluice_config
	// (SetNode, from the syncer); SNATPorts 0, 0: the datapath's default.
	rec, err := control.NewReconcilerWith(dp.Maps.LB4, log, control.ReconcilerOptions{Config: dp.Maps.Config, SNATPorts: [2]uint16{c.snatPorts.Min, c.snatPorts.Max}})
	if err != nil {
		return err
	}
	// Freed ids wait for a sweep of the collector before they are reused.
	rec.QuarantineFreedIDs()
	log.Info("adopted pinned state", "pin-dir", c.pinDir, "frontends", rec.Frontends())

	// kube-proxy's rule: unhealthy once a change has waited for more
	// than twice the sync period. Queued at start, so an agent that
	// never syncs turns unhealthy.
	health := healthz.New(2 * c.syncPeriod)
	health.QueuedUpdate()
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	reg.MustRegister(metrics.NewDatapathCollector(dp.Maps))
	ctm := metrics.NewConntrack(reg, ctSize.Entries)
	collector := conntrack.NewCollector(dp.Maps, c.ct.gcInterval, log, func(st conntrack.Stats, refs *conntrack.Refs) {
		rec.ReleaseQuarantined(st.Start, refs.Backend, refs.RevNat)
		qb, qr := rec.QuarantinedIDs()
		ctm.ObserveSweep(metrics.CTSweep{
			Duration: st.Duration, Forward: st.Forward, Reply: st.Reply,
			Expired: st.Expired, Orphans: st.Orphans, Purged: st.Purged, Repaired: st.Repaired,
			Next: st.Next, QuarantinedBackends: qb, QuarantinedRevNats: qr,
		})
	})
	// Service names of the frontends, for `sluice ct`, on the metrics
	// address: copied from the state by the next sync after a request.
	names := &frontendnames.Table{}
	// healthCheckNodePorts on the addresses NodePorts are served on,
	// answering 503 while the agent itself is unhealthy (/livez).
	var nodeAddrs *nodeAddrSink
	hcSrv := healthcheck.New(log, func() []netip.Addr { return nodeAddrs.ListenAddrs() }, health.Healthy)
	hc := newHealthChecks(hcSrv, log, m.SetHealthCheckPorts)
	var syncer *control.Syncer
	syncer = control.NewSyncer(rec, control.NodeInfo{Name: c.nodeName}, c.minSync, c.syncPeriod, log, control.SyncHooks{
		Queued: func() {
			health.QueuedUpdate()
			m.QueuedSync(time.Now())
		},
		Done: func(rep control.SyncReport) {
			// Even after a failed sync: what it removed is gone.
			collector.Purge(purgeTargets(rep.LeftUDP))
			health.SetNodeEligible(!rep.Node.Leaving)
			m.SetSkipped(rep.Skipped)
			// The desired state's health checks, whether or not the
			// datapath took it: a failing agent answers 503 anyway.
			hc.sync(syncer.State().HealthChecks)
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
	// The source's NodeInfo reaches the Store completed with the NodePort
	// addresses, recomputed when the node's own addresses change.
	local := agentAddrs()
	nodeAddrs = newNodeAddrSink(syncer.Store, c.nodePortAddresses, local, log)
	go local.watch(ctx, log, nodeAddrs.LocalAddrsChanged)
	// The node's own connections must not pick the SNAT ports (c.snatPorts,
	// the reconciler's SNAT port range).
	warnLocalPortOverlap(log, c.snatPorts, localPortRange)
	errs := make(chan error, 6)
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
	go func() { errs <- src.Run(ctx, nodeAddrs) }()
	if !c.lbPool.Empty() {
		c.runLBIPAM(ctx, client, dp.Maps, errs)
	}
	ctDone := make(chan struct{})
	go func() {
		collector.Run(ctx)
		close(ctDone)
	}()
	loopDone := make(chan struct{})
	// A sweep or sync under way ends before the maps' handles close; the
	// health check ports close once no sync can open them again.
	defer func() {
		stop()
		<-ctDone
		<-loopDone
		hcSrv.Close()
	}()
	go func() {
		defer close(loopDone)
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

// runLBIPAM starts LB-IPAM: the election of the agent that assigns
// addresses, and this node's announcer, which programs l2_announce4.
func (c *agentConfig) runLBIPAM(ctx context.Context, client kubernetes.Interface, dp *maps.Datapath, errs chan<- error) {
	c.log.Info("lb-ipam enabled", "pool", c.lbPool.String(), "lease", c.namespace+"/"+lbipam.LeaseName)
	go func() {
		errs <- lbipam.RunController(ctx, lbipam.ControllerOptions{Client: client, Pool: c.lbPool,
			Identity: c.nodeName, Namespace: c.namespace, Log: c.log})
	}()
	go func() {
		errs <- lbipam.RunAnnouncer(ctx, lbipam.AnnouncerOptions{Client: client, Pool: c.lbPool, Node: c.nodeName,
			L2: control.NewL2Reconciler(dp.L2Announce, c.log), Underlay: underlayDevice, Log: c.log})
	}()
}

// size derives the conntrack table's size: --ct-max, else the memory
// budget at what an entry costs this kernel.
func (c ctConfig) size() (conntrack.Size, error) {
	sc := conntrack.SizeConfig{MemoryPercent: c.memoryPercent, MaxFlows: uint32(c.maxFlows)}
	if c.maxFlows == 0 {
		var err error
		if sc.PhysicalBytes, err = conntrack.PhysicalMemory(); err != nil {
			return conntrack.Size{}, err
		}
		// The probe map needs the memlock limit lifted, as the load does.
		if err := rlimit.RemoveMemlock(); err != nil {
			return conntrack.Size{}, fmt.Errorf("lift RLIMIT_MEMLOCK: %w", err)
		}
		if sc.EntryBytes, err = conntrack.MeasureEntryBytes(); err != nil {
			return conntrack.Size{}, fmt.Errorf("measure a conntrack entry: %w", err)
		}
	}
	return conntrack.SizeTable(sc)
}

// purgeTargets hands the reconciler's left UDP flows to the collector.
func purgeTargets(left []control.FlowTarget) []conntrack.Target {
	out := make([]conntrack.Target, len(left))
	for i, t := range left {
		out[i] = conntrack.Target{RevNat: t.RevNat, Backend: t.Backend}
	}
	return out
}
