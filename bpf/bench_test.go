package bpf_test

import (
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/sluice-lb/sluice/bpf"
	"github.com/sluice-lb/sluice/control"
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
}

func loadBench(b *testing.B, unique bool, services int, ctSize uint32) *benchDatapath {
	testenv.Privileged(b)
	sizes := map[string]uint32{bpf.SluiceMapCt4V3: ctSize}
	for k, v := range benchSizes {
		sizes[k] = v
	}
	bd := &benchDatapath{}
	var sm bpf.SluiceMaps
	if unique {
		spec, err := bpf.LoadSluiceBench()
		if err != nil {
			b.Fatal(err)
		}
		if _, err := bpf.UseCoarseClock(spec); err != nil {
			b.Fatal(err)
		}
		var objs bpf.SluiceBenchObjects
		loadSpec(b, spec, &objs, sizes)
		b.Cleanup(func() { objs.Close() })
		bd.ingress, bd.egress, bd.empty = objs.SluiceIngress, objs.SluiceEgress, objs.SluiceEmpty
		m := objs.SluiceBenchMaps
		sm = bpf.SluiceMaps{Ct4V3: m.Ct4V3, Lb4Backends: m.Lb4Backends, Lb4Revnat: m.Lb4Revnat,
			Lb4Services: m.Lb4Services, Lb4Prefilter: m.Lb4Prefilter, SluiceConfig: m.SluiceConfig, SluiceCounters: m.SluiceCounters,
			Lb4Affinity: m.Lb4Affinity, Lb4AffinityMatch: m.Lb4AffinityMatch, SluiceCtTimeouts: m.SluiceCtTimeouts}
		bd.maxRepeat = int(ctSize/2) - 16
	} else {
		spec, err := bpf.LoadSluice()
		if err != nil {
			b.Fatal(err)
		}
		if _, err := bpf.UseCoarseClock(spec); err != nil {
			b.Fatal(err)
		}
		var objs bpf.SluiceObjects
		loadSpec(b, spec, &objs, sizes)
		b.Cleanup(func() { objs.Close() })
		bd.ingress, bd.egress, bd.empty = objs.SluiceIngress, objs.SluiceEgress, objs.SluiceEmpty
		sm = objs.SluiceMaps
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
func (bd *benchDatapath) measure(b *testing.B, prog *ebpf.Program, pkt []byte, path string) {
	var total, empty, net []int64
	for range measureRounds {
		_, e, err := bd.empty.Benchmark(pkt, b.N, nil)
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
		if moved[path] < uint64(b.N) || len(moved) != 1 {
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
		ret, d, err := prog.Benchmark(pkt, n, nil)
		if err != nil {
			b.Fatal(err)
		}
		if ret != tcActPass {
			b.Fatalf("verdict %d", ret)
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
			bd := loadBench(b, false, services, defaultCT)
			bd.measure(b, bd.ingress, tcpFrame(benchClient, netip.MustParseAddrPort("10.244.9.9:22"), packet.TCPAck), "pass")
		})
		b.Run(fmt.Sprintf("services=%d/path=established", services), func(b *testing.B) {
			bd := loadBench(b, false, services, defaultCT)
			pkt := tcpFrame(benchClient, pingVIP, packet.TCPAck)
			// Two new flows (ping, then pong) make both directions
			// established; the measured iterations then all are.
			if _, _, err := bd.ingress.Benchmark(pkt, 2, nil); err != nil {
				b.Fatal(err)
			}
			bd.measure(b, bd.ingress, pkt, "established")
		})
		b.Run(fmt.Sprintf("services=%d/path=reply", services), func(b *testing.B) {
			bd := loadBench(b, false, services, defaultCT)
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
				bd := loadBench(b, true, services, ct)
				bd.measure(b, bd.ingress, tcpFrame(benchClient, pingVIP, packet.TCPSyn), "new-flow")
			})
		}
	}
}
