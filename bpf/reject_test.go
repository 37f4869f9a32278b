package bpf_test

import (
	"bytes"
	"net/netip"
	"runtime"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/sluice-lb/sluice/bpf"
	"github.com/sluice-lb/sluice/control"
	"github.com/sluice-lb/sluice/internal/packet"
)

const nsPerSec = 1_000_000_000

// setRejectRate writes the agent's ICMP error rate (0 = default).
func (w *world) setRejectRate(rate, burst uint32) {
	w.t.Helper()
	if err := w.objs.SluiceRejectRate.Put(uint32(0), bpf.SluiceRejectRatelimit{Rate: rate, Burst: burst}); err != nil {
		w.t.Fatal(err)
	}
}

// setBucket gives every CPU's token bucket this state, so that the test
// run, wherever it runs, finds it.
func (w *world) setBucket(b bpf.SluiceRejectBucket) {
	w.t.Helper()
	all := make([]bpf.SluiceRejectBucket, ebpf.MustPossibleCPU())
	for i := range all {
		all[i] = b
	}
	if err := w.objs.SluiceRejectBucket.Put(uint32(0), all); err != nil {
		w.t.Fatal(err)
	}
}

func (w *world) buckets() []bpf.SluiceRejectBucket {
	w.t.Helper()
	var all []bpf.SluiceRejectBucket
	if err := w.objs.SluiceRejectBucket.Lookup(uint32(0), &all); err != nil {
		w.t.Fatal(err)
	}
	return all
}

// frozenBucket holds n errors' worth of credit at the given rate and a
// last refill an hour ahead: no time passing during the test refills it,
// so what it allows is exact.
// onOneCPU keeps the calling goroutine on one OS thread bound to one CPU
// until the test ends: the bucket is per CPU, and a test counting a
// bucket's credit must spend it on one (a run migrating to another CPU
// would find that CPU's credit too).
func onOneCPU(t *testing.T) {
	t.Helper()
	runtime.LockOSThread()
	var old unix.CPUSet
	if err := unix.SchedGetaffinity(0, &old); err != nil {
		t.Fatal(err)
	}
	var one unix.CPUSet
	for cpu := 0; cpu < 1024; cpu++ {
		if old.IsSet(cpu) {
			one.Set(cpu)
			break
		}
	}
	if err := unix.SchedSetaffinity(0, &one); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		unix.SchedSetaffinity(0, &old)
		runtime.UnlockOSThread()
	})
}

func (w *world) frozenBucket(n, rate uint64) {
	w.setBucket(bpf.SluiceRejectBucket{CreditNs: n * (nsPerSec / rate), LastNs: monoNow(w.t) + 3600*nsPerSec})
}

// expectReject runs in and checks that it is answered with a well-formed
// ICMP port unreachable quoting it, and that only reason moved.
func (w *world) expectReject(t *testing.T, in []byte, reason string) {
	t.Helper()
	before := w.counts()
	verdict, out := w.run(t, in)
	if verdict != tcActRedirect {
		t.Fatalf("verdict %d, want redirect (%d)", verdict, tcActRedirect)
	}
	if d := delta(before, w.counts()); len(d) != 1 || d[reason] != 1 {
		t.Errorf("counters %v, want %s +1", d, reason)
	}
	checkICMPError(t, in, out)
}

// expectDrop runs in and checks it is dropped with only reason moving.
func (w *world) expectDrop(t *testing.T, in []byte, reason string) {
	t.Helper()
	before := w.counts()
	if verdict, _ := w.run(t, in); verdict != tcActShot {
		t.Fatalf("verdict %d, want drop (%d)", verdict, tcActShot)
	}
	if d := delta(before, w.counts()); len(d) != 1 || d[reason] != 1 {
		t.Errorf("counters %v, want %s +1", d, reason)
	}
}

// checkICMPError verifies every byte of the ICMP error about in that
// the datapath can decide, checksums computed here.
func checkICMPError(t *testing.T, in, out []byte) {
	t.Helper()
	if len(out) != 14+20+8+28 {
		t.Fatalf("reject is %d bytes, want 70", len(out))
	}
	f, o := parse(t, out), parse(t, in)
	if f.DstMAC != o.SrcMAC || f.SrcMAC != o.DstMAC {
		t.Errorf("MACs %x <- %x, want %x <- %x", f.DstMAC, f.SrcMAC, o.SrcMAC, o.DstMAC)
	}
	if f.Proto != packet.ProtoICMP || f.Src != o.Dst || f.Dst != o.Src || f.IP[8] != 64 {
		t.Errorf("reject %s -> %s proto %d ttl %d, want ICMP %s -> %s ttl 64", f.Src, f.Dst, f.Proto, f.IP[8], o.Dst, o.Src)
	}
	if !bytes.Equal(f.L4[:8], []byte{3, 3, f.L4[2], f.L4[3], 0, 0, 0, 0}) {
		t.Errorf("ICMP header % x, want port unreachable, unused 0", f.L4[:8])
	}
	if want := in[14 : 14+28]; !bytes.Equal(f.L4[8:], want) {
		t.Errorf("quoted packet\n got % x\nwant % x", f.L4[8:], want)
	}
	checksumsOK(t, f)
}

func tcpFrom(src netip.AddrPort, dst string, flags uint8) []byte {
	return packet.Build(packet.Spec{Src: src, Dst: netip.MustParseAddrPort(dst), Proto: packet.ProtoTCP, TCPFlags: flags})
}

// Every packet REJECT must not answer (RFC 1122 3.2.2) is dropped and
// counted as such, without spending the rate.
func TestRejectNoAnswer(t *testing.T) {
	onOneCPU(t)
	w := standardWorld(t)
	// A service IP in the multicast range: the control plane does not
	// refuse it, and the destination rule must hold on its own.
	w.serve(frontend("239.1.1.1:80", control.TCP), nil)
	bcastFrame := tcpTo(emptyVIP)
	copy(bcastFrame[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	mcastFrame := tcpTo(emptyVIP)
	copy(mcastFrame[0:6], []byte{0x01, 0x00, 0x5e, 0x00, 0x00, 0x01})
	from := func(addr string) netip.AddrPort { return netip.AddrPortFrom(netip.MustParseAddr(addr), 40000) }
	cases := []struct {
		name string
		in   []byte
	}{
		{"TCP RST", tcpFrom(client, emptyVIP, 0x04)},
		{"TCP RST+ACK", tcpFrom(client, emptyVIP, 0x14)},
		{"TCP RST to an unserved port", tcpFrom(client, "10.96.0.10:81", 0x04)},
		{"source limited broadcast", tcpFrom(from("255.255.255.255"), emptyVIP, packet.TCPSyn)},
		{"source multicast", tcpFrom(from("224.0.0.5"), emptyVIP, packet.TCPSyn)},
		{"source multicast, top of range", tcpFrom(from("239.255.255.255"), emptyVIP, packet.TCPSyn)},
		{"source class E", tcpFrom(from("240.0.0.1"), emptyVIP, packet.TCPSyn)},
		{"source zero", tcpFrom(from("0.0.0.0"), emptyVIP, packet.TCPSyn)},
		{"source this network (0/8)", tcpFrom(from("0.1.2.3"), emptyVIP, packet.TCPSyn)},
		{"source loopback", tcpFrom(from("127.0.0.1"), emptyVIP, packet.TCPSyn)},
		{"UDP from a multicast source", packet.Build(packet.Spec{Src: from("224.0.0.251"), Dst: netip.MustParseAddrPort("10.96.0.10:81"), Proto: packet.ProtoUDP})},
		{"link-layer broadcast", bcastFrame},
		{"link-layer multicast", mcastFrame},
		{"destination multicast", tcpTo("239.1.1.1:80")},
	}
	w.setRejectRate(1, 1)
	w.frozenBucket(1, 1)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w.expectDrop(t, c.in, "drop-no-answer")
		})
	}
	// None of them took the one error's worth of credit.
	w.expectReject(t, tcpTo(emptyVIP), "reject-no-endpoints")
	w.expectDrop(t, tcpTo(emptyVIP), "reject-rate-limited")
}

// The rate: a bucket with n errors of credit answers n packets and drops
// the next; credit written back, or a higher rate, answers again.
func TestRejectRateLimit(t *testing.T) {
	onOneCPU(t)
	w := standardWorld(t)
	w.setRejectRate(1, 100)
	w.frozenBucket(3, 1)
	ins := []struct {
		in     []byte
		reason string
	}{
		{tcpTo(emptyVIP), "reject-no-endpoints"},
		{tcpTo("10.96.0.10:81"), "reject-unknown-port"},
		{udpTo(emptyVIP, "x"), "reject-unknown-port"},
	}
	for _, c := range ins {
		w.expectReject(t, c.in, c.reason)
	}
	for range 3 {
		w.expectDrop(t, tcpTo(emptyVIP), "reject-rate-limited")
	}
	w.expectDrop(t, udpTo(emptyVIP, "x"), "reject-rate-limited")

	// Refilled by hand: one more.
	w.frozenBucket(1, 1)
	w.expectReject(t, tcpTo(emptyVIP), "reject-no-endpoints")
	w.expectDrop(t, tcpTo(emptyVIP), "reject-rate-limited")

	// One second of credit is two errors at 2/s.
	w.frozenBucket(1, 1)
	w.setRejectRate(2, 100)
	w.expectReject(t, tcpTo(emptyVIP), "reject-no-endpoints")
	w.expectReject(t, tcpTo(emptyVIP), "reject-no-endpoints")
	w.expectDrop(t, tcpTo(emptyVIP), "reject-rate-limited")
}

// A bucket idle for long refills to its burst and no further; the error
// sent takes one error's cost of it. Read back from the CPU that ran.
// (CLOCK_MONOTONIC starts at boot: in a test VM "an hour ago" does not
// exist, so the idle bucket is the one refilled at time 0.)
func TestRejectBucketRefillsToBurst(t *testing.T) {
	for _, c := range []struct {
		name              string
		rate, burst       uint32
		wantCost, wantCap uint64
	}{
		{"agent's rate", 10, 3, nsPerSec / 10, 3 * nsPerSec / 10},
		{"defaults (1000/s, burst 50)", 0, 0, nsPerSec / 1000, 50 * nsPerSec / 1000},
		{"rate only", 400, 0, nsPerSec / 400, 50 * nsPerSec / 400},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := standardWorld(t)
			w.setRejectRate(c.rate, c.burst)
			start := monoNow(t)
			// Last refilled at boot: idle for longer than any of
			// these bursts takes to refill (at most 0.3 s).
			w.setBucket(bpf.SluiceRejectBucket{LastNs: 0})
			w.expectReject(t, tcpTo(emptyVIP), "reject-no-endpoints")
			var ran []bpf.SluiceRejectBucket
			for _, b := range w.buckets() {
				if b.LastNs >= start {
					ran = append(ran, b)
				}
			}
			if len(ran) != 1 {
				t.Fatalf("%d CPUs' buckets were refilled, want 1: %+v", len(ran), w.buckets())
			}
			if want := c.wantCap - c.wantCost; ran[0].CreditNs != want {
				t.Errorf("credit after one error %d ns, want burst - cost = %d ns", ran[0].CreditNs, want)
			}
		})
	}
}

// A fresh (zeroed) bucket is full: the first error after the agent starts
// is sent.
func TestRejectFreshBucketAnswers(t *testing.T) {
	w := standardWorld(t)
	w.expectReject(t, tcpTo(emptyVIP), "reject-no-endpoints")
}

// The ICMP error is the same 70 bytes whatever the size of the packet it
// answers: grown from a short datagram, cut from a long segment.
func TestRejectAnyLength(t *testing.T) {
	w := standardWorld(t)
	cases := []struct {
		name, reason string
		in           []byte
	}{
		{"UDP without payload", "reject-unknown-port", udpTo(emptyVIP, "")},
		{"UDP of 1400 bytes", "reject-unknown-port", udpTo(emptyVIP, string(bytes.Repeat([]byte("u"), 1400)))},
		{"TCP with 1000 bytes of data", "reject-no-endpoints", packet.Build(packet.Spec{Src: client, Dst: netip.MustParseAddrPort(emptyVIP), Proto: packet.ProtoTCP, TCPFlags: packet.TCPAck, Payload: bytes.Repeat([]byte("t"), 1000)})},
		{"TCP SYN", "reject-no-endpoints", tcpTo(emptyVIP)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w.expectReject(t, c.in, c.reason)
		})
	}
}
