package bpf_test

import (
	"bytes"
	"encoding/binary"
	"maps"
	"net/netip"
	"testing"

	"github.com/sluice-lb/sluice/bpf"
	"github.com/sluice-lb/sluice/internal/packet"
	sluicemaps "github.com/sluice-lb/sluice/maps"
)

// fragSize is the IP payload of a fragment on a 1500-byte MTU link.
const fragSize = 1480

// bigPayload is a 4000-byte datagram body (a large EDNS answer), not
// periodic, so a fragment put at the wrong offset shows.
func bigPayload(seed byte) []byte {
	b := make([]byte, 4000)
	for i := range b {
		b[i] = byte(i*31) ^ byte(i>>8) ^ seed
	}
	return b
}

// fragmentsOf builds a datagram and cuts it as a 1500-MTU sender would.
func fragmentsOf(s packet.Spec) [][]byte {
	return packet.Fragment(packet.Build(s), fragSize)
}

// runFrags feeds fragments through one program in order and checks each
// verdict and the counters each moved.
func (w *world) runFrags(t *testing.T, run func(testing.TB, []byte) (uint32, []byte), frags [][]byte,
	want []map[string]uint64) [][]byte {
	t.Helper()
	var outs [][]byte
	for i, in := range frags {
		before := w.counts()
		verdict, out := run(t, in)
		if verdict != tcActPass {
			t.Fatalf("fragment %d: verdict %d, want pass", i, verdict)
		}
		if d := delta(before, w.counts()); !maps.Equal(d, want[i]) {
			t.Errorf("fragment %d: counters %v, want %v", i, d, want[i])
		}
		f := parse(t, out)
		if !f.IPChecksumOK() {
			t.Errorf("fragment %d: IPv4 header checksum wrong", i)
		}
		if !bytes.Equal(f.L4, parse(t, in).L4) && i > 0 {
			t.Errorf("fragment %d: payload changed", i)
		}
		outs = append(outs, out)
	}
	return outs
}

// reassembled joins translated fragments as the receiver's kernel would and
// checks the datagram: its L4 checksum, which only the first fragment
// carries, must hold over the whole of it with the new addresses.
func reassembled(t *testing.T, frags [][]byte, payload []byte) *packet.Frame {
	t.Helper()
	whole, err := packet.Reassemble(frags...)
	if err != nil {
		t.Fatalf("reassemble: %v", err)
	}
	f := parse(t, whole)
	checksumsOK(t, f)
	hdr := 8
	if f.Proto == packet.ProtoTCP {
		hdr = 20
	}
	if !bytes.Equal(f.L4[hdr:], payload) {
		t.Error("reassembled payload differs from the one sent")
	}
	return f
}

func fragCounts(first map[string]uint64, n int) []map[string]uint64 {
	want := []map[string]uint64{first}
	for range n - 1 {
		want = append(want, map[string]uint64{"fragment": 1})
	}
	return want
}

// A fragmented datagram to a VIP and a fragmented answer from its backend:
// every fragment follows the flow, the first creates it, and both
// datagrams reassemble with valid checksums.
func TestFragmentsForwardAndReply(t *testing.T) {
	for _, c := range []struct {
		name  string
		proto uint8
		flags uint8
	}{
		{"udp", packet.ProtoUDP, 0},
		{"tcp", packet.ProtoTCP, packet.TCPAck},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := standardWorld(t)
			query := bigPayload(1)
			fwd := fragmentsOf(packet.Spec{Src: client, Dst: netip.MustParseAddrPort(vip), Proto: c.proto,
				TCPFlags: c.flags, Payload: query, ID: 0x0a01})
			if len(fwd) != 3 {
				t.Fatalf("%d fragments, want 3", len(fwd))
			}
			outs := w.runFrags(t, w.run, fwd, fragCounts(map[string]uint64{"new-flow": 1, "fragment": 1}, 3))
			f := reassembled(t, outs, query)
			chosen := netip.AddrPortFrom(f.Dst, f.DstPort)
			if !isBackend(chosen) || f.Src != client.Addr() || f.SrcPort != client.Port() {
				t.Fatalf("datagram went %s:%d -> %s", f.Src, f.SrcPort, chosen)
			}
			// The entry is keyed as the fragments arrive: client -> VIP.
			k := bpf.SluiceFrag4Key{Saddr: sluicemaps.Addr4(client.Addr()),
				Daddr: sluicemaps.Addr4(netip.MustParseAddrPort(vip).Addr()),
				Id:    sluicemaps.Port(0x0a01), Proto: c.proto}
			if v, err := w.dp.LB4.Fragments.Lookup(k); err != nil ||
				sluicemaps.PortFrom(v.Sport) != client.Port() || sluicemaps.PortFrom(v.Dport) != 80 {
				t.Errorf("fragment entry %+v: %+v, %v", k, v, err)
			}

			// The translated fragments leave towards the backend through
			// the egress program too: no reply, untouched.
			for i, out := range outs {
				before := w.counts()
				if verdict, again := w.runOut(t, out); verdict != tcActPass || !bytes.Equal(again, out) {
					t.Errorf("forward fragment %d at egress: verdict %d, changed %v", i, verdict, !bytes.Equal(again, out))
				}
				if d := delta(before, w.counts()); !maps.Equal(d, map[string]uint64{"pass": 1}) {
					t.Errorf("forward fragment %d at egress: counters %v", i, d)
				}
			}

			answer := bigPayload(2)
			rep := fragmentsOf(packet.Spec{Src: chosen, Dst: client, Proto: c.proto, TCPFlags: c.flags,
				Payload: answer, ID: 0x0b01})
			outs = w.runFrags(t, w.runOut, rep, fragCounts(map[string]uint64{"reply": 1, "fragment": 1}, 3))
			f = reassembled(t, outs, answer)
			if got := netip.AddrPortFrom(f.Src, f.SrcPort).String(); got != vip || f.Dst != client.Addr() || f.DstPort != client.Port() {
				t.Errorf("reply went %s -> %s:%d, want from %s", got, f.Dst, f.DstPort, vip)
			}

			// The flow's next datagram follows it.
			fwd = fragmentsOf(packet.Spec{Src: client, Dst: netip.MustParseAddrPort(vip), Proto: c.proto,
				TCPFlags: c.flags, Payload: query, ID: 0x0a02})
			outs = w.runFrags(t, w.run, fwd, fragCounts(map[string]uint64{"established": 1, "fragment": 1}, 3))
			if f := reassembled(t, outs, query); netip.AddrPortFrom(f.Dst, f.DstPort) != chosen {
				t.Errorf("second datagram went to %s:%d, want %s", f.Dst, f.DstPort, chosen)
			}
		})
	}
}

// Fragments translation cannot follow: what is dropped, what passes.
func TestFragmentsUntracked(t *testing.T) {
	vipAddr := netip.MustParseAddrPort(vip)
	udpFrags := func(src, dst netip.AddrPort, id uint16) [][]byte {
		return fragmentsOf(packet.Spec{Src: src, Dst: dst, Proto: packet.ProtoUDP, Payload: bigPayload(3), ID: id})
	}
	type step struct {
		egress  bool
		in      []byte
		verdict uint32
		counts  map[string]uint64
		same    bool // output must equal input
	}
	pass := map[string]uint64{"pass": 1}
	untracked := map[string]uint64{"drop-frag-untracked": 1}
	reordered := udpFrags(client, vipAddr, 0x0c01)
	tcpCut := packet.Fragment(packet.Build(packet.Spec{Src: client, Dst: vipAddr, Proto: packet.ProtoTCP,
		TCPFlags: packet.TCPAck, Payload: bigPayload(4), ID: 0x0c02}), 8)
	tcpCutOther := packet.Fragment(packet.Build(packet.Spec{Src: client, Dst: other, Proto: packet.ProtoTCP,
		TCPFlags: packet.TCPAck, Payload: bigPayload(4), ID: 0x0c03}), 8)
	toOther := udpFrags(client, other, 0x0c04)
	fromBackend := udpFrags(netip.MustParseAddrPort(be1), netip.AddrPortFrom(client.Addr(), 40999), 0x0c05)
	cases := []struct {
		name  string
		steps []step
	}{
		{"later fragment before its first is dropped, the first still translated", []step{
			{false, reordered[1], tcActShot, untracked, false},
			{false, reordered[0], tcActPass, map[string]uint64{"new-flow": 1, "fragment": 1}, false},
			{false, reordered[2], tcActPass, map[string]uint64{"fragment": 1}, false},
		}},
		{"first fragment with its TCP header cut short to a service IP", []step{
			{false, tcpCut[0], tcActShot, map[string]uint64{"drop-fragment": 1}, false},
			{false, tcpCut[1], tcActShot, untracked, false},
		}},
		{"first fragment with its TCP header cut short elsewhere passes", []step{
			{false, tcpCutOther[0], tcActPass, pass, true},
			{false, tcpCutOther[1], tcActPass, pass, true},
		}},
		{"fragments to another address pass", []step{
			{false, toOther[0], tcActPass, pass, true},
			{false, toOther[1], tcActPass, pass, true},
			{false, toOther[2], tcActPass, pass, true},
		}},
		// Without ports a later fragment from a backend cannot be told
		// from that pod's own traffic to the client: it passes.
		{"fragments from a backend that are no reply pass at egress", []step{
			{true, fromBackend[0], tcActPass, pass, true},
			{true, fromBackend[1], tcActPass, pass, true},
		}},
	}
	w := standardWorld(t)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for i, s := range c.steps {
				run := w.run
				if s.egress {
					run = w.runOut
				}
				before := w.counts()
				verdict, out := run(t, s.in)
				if verdict != s.verdict {
					t.Errorf("step %d: verdict %d, want %d", i, verdict, s.verdict)
				}
				if d := delta(before, w.counts()); !maps.Equal(d, s.counts) {
					t.Errorf("step %d: counters %v, want %v", i, d, s.counts)
				}
				if s.same && !bytes.Equal(out, s.in) {
					t.Errorf("step %d: packet changed", i)
				}
				if verdict == tcActPass && !parse(t, out).IPChecksumOK() {
					t.Errorf("step %d: IPv4 header checksum wrong", i)
				}
			}
		})
	}
}

// A later fragment whose datagram is tracked but whose flow is gone (the
// collector removed it between two fragments) has nothing to follow: to a
// service IP it is dropped; at egress it passes.
func TestFragmentsFlowGone(t *testing.T) {
	w := standardWorld(t)
	fwd := fragmentsOf(packet.Spec{Src: client, Dst: netip.MustParseAddrPort(vip), Proto: packet.ProtoUDP,
		Payload: bigPayload(5), ID: 0x0d01})
	_, out := w.run(t, fwd[0])
	f := parse(t, out)
	rep := fragmentsOf(packet.Spec{Src: netip.AddrPortFrom(f.Dst, f.DstPort), Dst: client, Proto: packet.ProtoUDP,
		Payload: bigPayload(6), ID: 0x0d02})
	if verdict, _ := w.runOut(t, rep[0]); verdict != tcActPass {
		t.Fatalf("first reply fragment: verdict %d", verdict)
	}

	var keys []bpf.SluiceCt4Key
	if err := w.dp.CT4.Each(func(k bpf.SluiceCt4Key, _ bpf.SluiceCt4Entry) bool { keys = append(keys, k); return true }); err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if err := w.dp.CT4.Delete(k); err != nil {
			t.Fatal(err)
		}
	}

	before := w.counts()
	if verdict, _ := w.run(t, fwd[1]); verdict != tcActShot {
		t.Errorf("later forward fragment: verdict %d, want drop", verdict)
	}
	if verdict, out := w.runOut(t, rep[1]); verdict != tcActPass || !bytes.Equal(out, rep[1]) {
		t.Errorf("later reply fragment: verdict %d, changed %v", verdict, !bytes.Equal(out, rep[1]))
	}
	if d := delta(before, w.counts()); !maps.Equal(d, map[string]uint64{"drop-frag-untracked": 1, "pass": 1}) {
		t.Errorf("counters %v", d)
	}
}

// The ports a later fragment is given are its own datagram's: two
// datagrams of one client to one VIP, interleaved, from two client ports,
// each reach their own flow's backend.
func TestFragmentsInterleaved(t *testing.T) {
	w := standardWorld(t)
	vipAddr := netip.MustParseAddrPort(vip)
	a := fragmentsOf(packet.Spec{Src: client, Dst: vipAddr, Proto: packet.ProtoUDP, Payload: bigPayload(7), ID: 0x0e01})
	otherPort := netip.AddrPortFrom(client.Addr(), client.Port()+1)
	b := fragmentsOf(packet.Spec{Src: otherPort, Dst: vipAddr, Proto: packet.ProtoUDP, Payload: bigPayload(8), ID: 0x0e02})
	var outA, outB [][]byte
	for i := range a {
		_, oa := w.run(t, a[i])
		_, ob := w.run(t, b[i])
		outA, outB = append(outA, oa), append(outB, ob)
	}
	fa, fb := reassembled(t, outA, bigPayload(7)), reassembled(t, outB, bigPayload(8))
	if fa.SrcPort != client.Port() || fb.SrcPort != otherPort.Port() {
		t.Errorf("source ports %d and %d", fa.SrcPort, fb.SrcPort)
	}
	// Every later fragment went where its own first did.
	for i := 1; i < len(a); i++ {
		if parse(t, outA[i]).Dst != fa.Dst || parse(t, outB[i]).Dst != fb.Dst {
			t.Errorf("fragment %d left its datagram's backend", i)
		}
	}
	if binary.BigEndian.Uint16(parse(t, outA[1]).IP[4:]) != 0x0e01 {
		t.Error("identification changed")
	}
}
