package bpf_test

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"

	"github.com/sluice-lb/sluice/bpf"
	"github.com/sluice-lb/sluice/control"
	"github.com/sluice-lb/sluice/internal/netlab"
	"github.com/sluice-lb/sluice/internal/packet"
	"github.com/sluice-lb/sluice/internal/testenv"
	"github.com/sluice-lb/sluice/maps"
)

// Benchmark maps are sized for 100,000 services of one backend each: a
// marker, a master and a slot entry per service.
var benchSizes = map[string]uint32{bpf.SluiceMapLb4Services: 1 << 19}

// pingPong programs two services whose backends are each other's VIPs. A
// translated packet is then addressed to the other service, so with
// BPF_PROG_TEST_RUN's repeat (which reuses the rewritten skb) every
// iteration takes the same path: established after a warm-up, and reply
// for a packet coming back from either VIP.
var (
	pingVIP = netip.MustParseAddrPort("10.96.0.1:80")
	pongVIP = netip.MustParseAddrPort("10.96.0.2:80")
)

func benchState(services int) *control.State {
	s := &control.State{Ports: map[control.Frontend]*control.ServicePort{}}
	add := func(fe, be netip.AddrPort) {
		f := control.Frontend{Addr: fe.Addr(), Port: fe.Port(), Proto: control.TCP}
		s.Ports[f] = &control.ServicePort{Frontend: f, Backends: []control.Backend{{Addr: be.Addr(), Port: be.Port()}}}
	}
	add(pingVIP, pongVIP)
	add(pongVIP, pingVIP)
	for i := 2; i < services; i++ {
		add(netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 100, byte(i >> 8), byte(i)}), 80),
			netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 200, byte(i >> 8), byte(i)}), 8080))
	}
	return s
}

type benchDatapath struct {
	ingress, egress, empty *ebpf.Program
	dp                     *maps.Datapath
	// maxRepeat bounds one BPF_PROG_TEST_RUN (0: b.N at once): the
	// new-flow build fills conntrack by two entries per iteration, and a
	// full table refuses flows, so it runs in chunks with the table
	// emptied in between (outside the timing).
	maxRepeat int
	// ns, when set, is the network namespace the programs run in (their
	// fib lookups read its routes); verdict the verdict every measured
	// iteration returns (0: pass).
	ns      *netlab.NS
	verdict uint32
}

// bench is prog.Benchmark, inside bd.ns when set.
func (bd *benchDatapath) bench(prog *ebpf.Program, pkt []byte, n int) (ret uint32, d time.Duration, err error) {
	if bd.ns == nil {
		return prog.Benchmark(pkt, n, nil)
	}
	derr := bd.ns.Do(func() error {
		ret, d, err = prog.Benchmark(pkt, n, nil)
		return nil
	})
	if derr != nil {
		return 0, 0, derr
	}
	return ret, d, err
}

// Builds of the datapath a benchmark runs (bpf/gen.go): the real one;
// the one where every packet is a new flow; the real one whose forwarded
// packets keep their TTL.
type benchBuild int

const (
	buildReal benchBuild = iota
	buildUniqueFlows
	buildKeepTTL
)

func loadBench(b *testing.B, build benchBuild, services int, ctSize uint32) *benchDatapath {
	testenv.Privileged(b)
	sizes := map[string]uint32{bpf.SluiceMapCt4V3: ctSize}
	for k, v := range benchSizes {
		sizes[k] = v
	}
	bd := &benchDatapath{}
	load := map[benchBuild]func() (*ebpf.CollectionSpec, error){
		buildReal: bpf.LoadSluice, buildUniqueFlows: bpf.LoadSluiceBench, buildKeepTTL: bpf.LoadSluiceBenchFwd,
	}[build]
	spec, err := load()
	if err != nil {
		b.Fatal(err)
	}
	if _, err := bpf.UseCoarseClock(spec); err != nil {
		b.Fatal(err)
	}
	// Every build has the same programs and maps, by name.
	var objs bpf.SluiceObjects
	loadSpec(b, spec, &objs, sizes)
	b.Cleanup(func() { objs.Close() })
	bd.ingress, bd.egress, bd.empty = objs.SluiceIngress, objs.SluiceEgress, objs.SluiceEmpty
	sm := objs.SluiceMaps
	if build == buildUniqueFlows {
		bd.maxRepeat = int(ctSize/2) - 16
	}
	bd.dp = maps.FromObjects(&sm)
	rec, err := control.NewReconciler(bd.dp.LB4, slog.Default())
	if err != nil {
		b.Fatal(err)
	}
	if _, problems, err := rec.Apply(benchState(services)); err != nil || len(problems) > 0 {
		b.Fatalf("program %d services: %v %v", services, err, problems)
	}
	return bd
}

func (bd *benchDatapath) count(b *testing.B, reason string) uint64 {
	packets, err := bd.dp.Packets()
	if err != nil {
		b.Fatal(err)
	}
	n, ok := packets[reason]
	if !ok {
		b.Fatalf("no reason %q", reason)
	}
	return n
}

// measureRounds is how many times measure times each path. Single runs of
// BPF_PROG_TEST_RUN drift by tens of percent on a shared machine; the
// median of a few interleaved rounds does not.
const measureRounds = 5

// measure times prog over b.N iterations of one skb, subtracts the empty
// program timed the same way just before, and proves with the counters
// that every iteration took the path: the path's counter moved at least
// b.N times and no other counter moved. (At least: cilium/ebpf reruns a
// whole BPF_PROG_TEST_RUN that a signal interrupted, so a few iterations
// may run twice.) It reports the medians of measureRounds rounds.
// events are counters that must move with path on every iteration (the
// snat event of a SNATed new flow).
func (bd *benchDatapath) measure(b *testing.B, prog *ebpf.Program, pkt []byte, path string, events ...string) {
	var total, empty, net []int64
	for range measureRounds {
		_, e, err := bd.bench(bd.empty, pkt, b.N)
		if err != nil {
			b.Fatal(err)
		}
		before, err := bd.dp.Packets()
		if err != nil {
			b.Fatal(err)
		}
		d := bd.run(b, prog, pkt)
		after, err := bd.dp.Packets()
		if err != nil {
			b.Fatal(err)
		}
		moved := delta(before, after)
		ok := moved[path] >= uint64(b.N) && len(moved) == 1+len(events)
		for _, e := range events {
			ok = ok && moved[e] >= uint64(b.N)
		}
		if !ok {
			b.Fatalf("counters moved %v for %d iterations of %s: not every iteration took the path", moved, b.N, path)
		}
		total = append(total, d.Nanoseconds())
		empty = append(empty, e.Nanoseconds())
		net = append(net, d.Nanoseconds()-e.Nanoseconds())
	}
	b.ReportMetric(float64(median(total)), "ns/pkt")
	b.ReportMetric(float64(median(empty)), "empty-ns/pkt")
	b.ReportMetric(float64(median(net)), "net-ns/pkt")
}

// run times b.N iterations of prog, in chunks of maxRepeat with conntrack
// emptied before each, and returns the time per iteration.
func (bd *benchDatapath) run(b *testing.B, prog *ebpf.Program, pkt []byte) time.Duration {
	chunk := b.N
	if bd.maxRepeat > 0 && chunk > bd.maxRepeat {
		chunk = bd.maxRepeat
	}
	var sum time.Duration
	for done := 0; done < b.N; done += chunk {
		n := min(chunk, b.N-done)
		if bd.maxRepeat > 0 {
			bd.emptyCT(b)
		}
		ret, d, err := bd.bench(prog, pkt, n)
		if err != nil {
			b.Fatal(err)
		}
		want := bd.verdict
		if want == 0 {
			want = tcActPass
		}
		if ret != want {
			b.Fatalf("verdict %d, want %d", ret, want)
		}
		sum += d * time.Duration(n)
	}
	return sum / time.Duration(b.N)
}

func (bd *benchDatapath) emptyCT(b *testing.B) {
	var keys []bpf.SluiceCt4Key
	if err := bd.dp.CT4.Each(func(k bpf.SluiceCt4Key, _ bpf.SluiceCt4Entry) bool {
		keys = append(keys, k)
		return true
	}); err != nil {
		b.Fatal(err)
	}
	if err := bd.dp.CT4.DeleteAll(keys); err != nil {
		b.Fatal(err)
	}
}

func median(v []int64) int64 {
	slices.Sort(v)
	return v[len(v)/2]
}

// defaultCT is ct4's size as the agent creates it.
const defaultCT = 1 << 18

var benchClient = netip.MustParseAddrPort("10.244.0.2:40000")

func tcpFrame(src, dst netip.AddrPort, flags uint8) []byte {
	return packet.Build(packet.Spec{Src: src, Dst: dst, Proto: packet.ProtoTCP, TCPFlags: flags})
}

func BenchmarkIngress(b *testing.B) {
	for _, services := range []int{1, 1000, 100000} {
		// "1 service" is the ping-pong pair alone.
		b.Run(fmt.Sprintf("services=%d/path=non-service", services), func(b *testing.B) {
			bd := loadBench(b, buildReal, services, defaultCT)
			bd.measure(b, bd.ingress, tcpFrame(benchClient, netip.MustParseAddrPort("10.244.9.9:22"), packet.TCPAck), "pass")
		})
		b.Run(fmt.Sprintf("services=%d/path=established", services), func(b *testing.B) {
			bd := loadBench(b, buildReal, services, defaultCT)
			pkt := tcpFrame(benchClient, pingVIP, packet.TCPAck)
			// Two new flows (ping, then pong) make both directions
			// established; the measured iterations then all are.
			if _, _, err := bd.ingress.Benchmark(pkt, 2, nil); err != nil {
				b.Fatal(err)
			}
			bd.measure(b, bd.ingress, pkt, "established")
		})
		b.Run(fmt.Sprintf("services=%d/path=reply", services), func(b *testing.B) {
			bd := loadBench(b, buildReal, services, defaultCT)
			if _, _, err := bd.ingress.Benchmark(tcpFrame(benchClient, pingVIP, packet.TCPSyn), 2, nil); err != nil {
				b.Fatal(err)
			}
			// pong answering ping's flow, at egress: reverse NAT makes
			// it come from ping, which is the reply of pong's flow, and
			// so on.
			bd.measure(b, bd.egress, tcpFrame(pongVIP, benchClient, packet.TCPAck), "reply")
		})
		// Every new flow inserts two conntrack entries: its cost is set
		// by cache misses and so by the table's size, reported for the
		// default and a small one.
		for _, ct := range []uint32{defaultCT, 1 << 16} {
			b.Run(fmt.Sprintf("services=%d/path=new-flow/ct=%d", services, ct), func(b *testing.B) {
				bd := loadBench(b, buildUniqueFlows, services, ct)
				bd.measure(b, bd.ingress, tcpFrame(benchClient, pingVIP, packet.TCPSyn), "new-flow")
			})
		}
	}
}

// The north-south paths: NodePort-style external frontends whose flows are
// SNATed to the node's address, in a namespace with the node's routes.
// Two external IPs are each other's (remote) backend and the SNAT range
// is the one port snatBenchPort, so a repeated skb cycles: the SNATed
// packet node:P -> F2 is the forward packet of F2's flow, whose SNATed
// packet node:P -> F1 is F1's again; and each flow's reply, translated
// back, is the reply of the other.
var (
	snatF1        = netip.MustParseAddrPort("192.168.60.1:80")
	snatF2        = netip.MustParseAddrPort("192.168.60.2:80")
	snatBenchPort = uint16(61000)
	// The SNAT address of the benchmark: the node's address in the config,
	// but not one of the namespace's own, so that a reply translated back
	// to it (the cycle's client) is forwarded like one to any client.
	snatBenchNode = netip.MustParseAddr("192.168.50.13")
)

func loadSNATBench(b *testing.B, unique bool, services int, ctSize uint32) *benchDatapath {
	build := buildKeepTTL
	if unique {
		build = buildUniqueFlows
	}
	bd := loadBench(b, build, services, ctSize)
	bd.ns = newFibNet(b).ns
	bd.verdict = tcActRedirect
	route := snatRoute(b, bd.ns)
	if err := bd.ns.Netlink().RouteAdd(route); err != nil {
		b.Fatal(err)
	}
	if err := bd.ns.Netlink().NeighAdd(&netlink.Neigh{LinkIndex: route.LinkIndex, State: netlink.NUD_PERMANENT,
		IP: snatBenchNode.AsSlice(), HardwareAddr: peerMAC, Family: netlink.FAMILY_V4}); err != nil {
		b.Fatal(err)
	}
	rec, err := control.NewReconciler(bd.dp.LB4, slog.Default())
	if err != nil {
		b.Fatal(err)
	}
	st := benchState(services)
	for _, p := range [][2]netip.AddrPort{{snatF1, snatF2}, {snatF2, snatF1}} {
		fe := control.Frontend{Addr: p[0].Addr(), Port: p[0].Port(), Proto: control.TCP}
		st.Ports[fe] = &control.ServicePort{Frontend: fe, Kind: control.KindExternalIP, SNATRemote: true,
			Backends: []control.Backend{{Addr: p[1].Addr(), Port: p[1].Port()}}}
	}
	if _, problems, err := rec.Apply(st); err != nil || len(problems) > 0 {
		b.Fatalf("program: %v %v", err, problems)
	}
	for _, f := range []netip.AddrPort{snatF1, snatF2} {
		k := bpf.SluiceLb4Key{Address: maps.Addr4(f.Addr()), Dport: maps.Port(f.Port()), Proto: packet.ProtoTCP}
		m, err := bd.dp.LB4.Services.Lookup(k)
		if err != nil {
			b.Fatal(err)
		}
		m.Flags |= bpf.SluiceLbServiceFlagsSVC_F_SNAT_REMOTE
		if err := bd.dp.LB4.Services.Put(k, m); err != nil {
			b.Fatal(err)
		}
	}
	lo, hi := snatBenchPort, snatBenchPort
	if unique {
		lo, hi = 0, 0 // the default range: every new flow takes a port
	}
	if err := bd.dp.Config.Put(0, bpf.SluiceDatapathConfig{NodeAddr4: maps.Addr4(snatBenchNode), SnatPortMin: lo, SnatPortMax: hi}); err != nil {
		b.Fatal(err)
	}
	if unique {
		// Each new flow holds a port of the range: fewer flows per run
		// than it has, so allocation rarely retries.
		bd.maxRepeat = 1024
	}
	return bd
}

func BenchmarkIngressSNAT(b *testing.B) {
	node := netip.AddrPortFrom(snatBenchNode, snatBenchPort)
	for _, services := range []int{1, 100000} {
		b.Run(fmt.Sprintf("services=%d/path=snat-established", services), func(b *testing.B) {
			bd := loadSNATBench(b, false, services, defaultCT)
			pkt := tcpFrame(node, snatF1, packet.TCPAck)
			if ret, _, err := bd.bench(bd.ingress, pkt, 2); err != nil || ret != tcActRedirect {
				b.Fatalf("warm-up: %d %v", ret, err)
			}
			bd.measure(b, bd.ingress, pkt, "established")
		})
		b.Run(fmt.Sprintf("services=%d/path=reverse-snat", services), func(b *testing.B) {
			bd := loadSNATBench(b, false, services, defaultCT)
			if ret, _, err := bd.bench(bd.ingress, tcpFrame(node, snatF1, packet.TCPSyn), 2); err != nil || ret != tcActRedirect {
				b.Fatalf("warm-up: %d %v", ret, err)
			}
			bd.measure(b, bd.ingress, tcpFrame(snatF2, node, packet.TCPAck), "reply-snat")
		})
		b.Run(fmt.Sprintf("services=%d/path=snat-new-flow", services), func(b *testing.B) {
			bd := loadSNATBench(b, true, services, defaultCT)
			bd.measure(b, bd.ingress, tcpFrame(extClient, snatF1, packet.TCPSyn), "new-flow", "snat")
		})
	}
}

// snatRoute routes the benchmark's external IPs via the peer node.
func snatRoute(b *testing.B, ns *netlab.NS) *netlink.Route {
	u0, err := ns.Netlink().LinkByName("u0")
	if err != nil {
		b.Fatal(err)
	}
	return &netlink.Route{LinkIndex: u0.Attrs().Index, Gw: peerAddr.AsSlice(),
		Dst: &net.IPNet{IP: net.IP{192, 168, 60, 0}, Mask: net.CIDRMask(24, 32)}}
}
