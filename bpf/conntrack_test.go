package bpf_test

import (
	"net/netip"
	"testing"

	"github.com/sluice-lb/sluice/bpf"
	"github.com/sluice-lb/sluice/control"
	"github.com/sluice-lb/sluice/internal/packet"
	"github.com/sluice-lb/sluice/maps"
)

const (
	tcpFin = 0x01
	tcpRst = 0x04
)

// The lifetimes the datapath uses when sluice_ct_timeouts is empty.
const (
	defSYN         = uint32(bpf.SluiceCtTimeoutDefaultCT_DEFAULT_TCP_SYN)
	defEstablished = uint32(bpf.SluiceCtTimeoutDefaultCT_DEFAULT_TCP_ESTABLISHED)
	defClose       = uint32(bpf.SluiceCtTimeoutDefaultCT_DEFAULT_TCP_CLOSE)
	defUDP         = uint32(bpf.SluiceCtTimeoutDefaultCT_DEFAULT_UDP)
	defUDPReplied  = uint32(bpf.SluiceCtTimeoutDefaultCT_DEFAULT_UDP_REPLIED)
)

func monoSecs(t testing.TB) uint32 { return uint32(monoNow(t) / 1e9) }

func ctKey(src, dst netip.AddrPort, proto uint8) bpf.SluiceCt4Key {
	return bpf.SluiceCt4Key{Saddr: maps.Addr4(src.Addr()), Daddr: maps.Addr4(dst.Addr()),
		Sport: maps.Port(src.Port()), Dport: maps.Port(dst.Port()), Proto: proto}
}

// flowEntries returns the forward entry of client -> fe and the reply
// entry of backend -> client, failing when either is missing.
func (w *world) flowEntries(t *testing.T, src netip.AddrPort, fe string, be netip.AddrPort, proto uint8) (fwd, rev bpf.SluiceCt4Entry) {
	t.Helper()
	fwd, err := w.dp.CT4.Lookup(ctKey(src, netip.MustParseAddrPort(fe), proto))
	if err != nil {
		t.Fatalf("forward entry of %s -> %s: %v", src, fe, err)
	}
	rev, err = w.dp.CT4.Lookup(ctKey(be, src, proto))
	if err != nil {
		t.Fatalf("reply entry of %s -> %s: %v", be, src, err)
	}
	return fwd, rev
}

// expiresIn checks an entry's expiry against now + secs, allowing for the
// second that may tick between the packet and the check.
func expiresIn(t *testing.T, what string, e bpf.SluiceCt4Entry, before, after, secs uint32) {
	t.Helper()
	// The datapath's coarse clock (5.11+) may lag CLOCK_MONOTONIC by a
	// tick, and so read the second before "before".
	if e.Expires+1 < before+secs || e.Expires > after+secs {
		t.Errorf("%s expires at %d, want now+%d (now %d..%d)", what, e.Expires, secs, before, after)
	}
}

// age makes conntrack entries' flow secs seconds older (their created
// time earlier), as if it had opened then.
func (w *world) age(t *testing.T, secs uint32, keys ...bpf.SluiceCt4Key) {
	t.Helper()
	for _, k := range keys {
		e, err := w.dp.CT4.Lookup(k)
		if err != nil {
			t.Fatal(err)
		}
		e.Created -= secs
		if err := w.dp.CT4.Put(k, e); err != nil {
			t.Fatal(err)
		}
	}
}

// expire puts conntrack entries one second in the past.
func (w *world) expire(t *testing.T, keys ...bpf.SluiceCt4Key) {
	t.Helper()
	for _, k := range keys {
		e, err := w.dp.CT4.Lookup(k)
		if err != nil {
			t.Fatal(err)
		}
		e.Expires = monoSecs(t) - 2 // the datapath's coarse clock may lag by a tick
		if err := w.dp.CT4.Put(k, e); err != nil {
			t.Fatal(err)
		}
	}
}

func tcpSeg(src, dst netip.AddrPort, flags uint8) []byte {
	return packet.Build(packet.Spec{Src: src, Dst: dst, Proto: packet.ProtoTCP, TCPFlags: flags})
}

// A TCP flow through its states: each packet moves its own entry to the
// lifetime of the state it leaves the flow in, and the reply path tells
// the forward entry that the backend answered.
func TestConntrackTCPLifetimes(t *testing.T) {
	w := standardWorld(t)
	vipAP := netip.MustParseAddrPort(vip)
	steps := []struct {
		name     string
		out      bool // egress (from the backend)
		flags    uint8
		fwd, rev uint32 // expected lifetimes after the packet; 0: unchanged check skipped
		fwdFlags uint8
	}{
		{"SYN", false, packet.TCPSyn, defSYN, defSYN, 0},
		{"SYN-ACK", true, packet.TCPSyn | packet.TCPAck, defSYN, defSYN, uint8(bpf.SluiceCtFlagsCT_F_SEEN_REPLY)},
		{"ACK", false, packet.TCPAck, defEstablished, defSYN, uint8(bpf.SluiceCtFlagsCT_F_SEEN_REPLY)},
		{"data from backend", true, packet.TCPAck, defEstablished, defEstablished, uint8(bpf.SluiceCtFlagsCT_F_SEEN_REPLY)},
		// A RST the endpoints ignore (out of window) must not end the
		// flow: close lifetime on both, and the next segment restores it.
		{"RST from client", false, tcpRst | packet.TCPAck, defClose, defClose, uint8(bpf.SluiceCtFlagsCT_F_SEEN_REPLY | bpf.SluiceCtFlagsCT_F_RST)},
		{"client goes on", false, packet.TCPAck, defEstablished, defClose, uint8(bpf.SluiceCtFlagsCT_F_SEEN_REPLY)},
		{"backend goes on", true, packet.TCPAck, defEstablished, defEstablished, uint8(bpf.SluiceCtFlagsCT_F_SEEN_REPLY)},
		// Half close: the client's FIN closes its direction only; the
		// backend may still send, and its data keeps its entry alive.
		{"FIN from client", false, tcpFin | packet.TCPAck, defClose, defClose, uint8(bpf.SluiceCtFlagsCT_F_SEEN_REPLY | bpf.SluiceCtFlagsCT_F_FIN)},
		{"backend still sends", true, packet.TCPAck, defClose, defEstablished, uint8(bpf.SluiceCtFlagsCT_F_SEEN_REPLY | bpf.SluiceCtFlagsCT_F_FIN)},
		{"FIN from backend", true, tcpFin | packet.TCPAck, defClose, defClose, uint8(bpf.SluiceCtFlagsCT_F_SEEN_REPLY | bpf.SluiceCtFlagsCT_F_FIN)},
	}
	var chosen netip.AddrPort
	for i, s := range steps {
		before := monoSecs(t)
		var out []byte
		if s.out {
			_, out = w.runOut(t, tcpSeg(chosen, client, s.flags))
			if f := parse(t, out); netip.AddrPortFrom(f.Src, f.SrcPort) != vipAP {
				t.Fatalf("%s: reply left from %s:%d, want %s", s.name, f.Src, f.SrcPort, vip)
			}
		} else {
			_, out = w.run(t, tcpSeg(client, vipAP, s.flags))
			f := parse(t, out)
			got := netip.AddrPortFrom(f.Dst, f.DstPort)
			if i == 0 {
				chosen = got
			}
			if got != chosen || !isBackend(got) {
				t.Fatalf("%s: forward went to %s, want %s", s.name, got, chosen)
			}
		}
		after := monoSecs(t)
		fwd, rev := w.flowEntries(t, client, vip, chosen, packet.ProtoTCP)
		expiresIn(t, s.name+": forward entry", fwd, before, after, s.fwd)
		expiresIn(t, s.name+": reply entry", rev, before, after, s.rev)
		if fwd.Flags != bpf.SluiceCtFlags(s.fwdFlags) {
			t.Errorf("%s: forward flags %#x, want %#x", s.name, fwd.Flags, s.fwdFlags)
		}
		if fwd.Created < before-1 || fwd.Created > after || rev.Created != fwd.Created {
			t.Errorf("%s: created %d/%d, want the SYN's time", s.name, fwd.Created, rev.Created)
		}
	}
}

// UDP: unanswered flows get the short lifetime, and so do answered ones
// until they have lasted more than 2 s (netfilter's rule: a DNS query and
// its answer are no stream); an answer after that gives the stream
// lifetime to its reply entry, and the client's next datagram to
// its forward one.
func TestConntrackUDPLifetimes(t *testing.T) {
	w := standardWorld(t)
	before := monoSecs(t)
	_, out := w.run(t, udpTo(vip, "q"))
	f := parse(t, out)
	chosen := netip.AddrPortFrom(f.Dst, f.DstPort)
	after := monoSecs(t)
	fwd, rev := w.flowEntries(t, client, vip, chosen, packet.ProtoUDP)
	expiresIn(t, "query: forward", fwd, before, after, defUDP)
	expiresIn(t, "query: reply", rev, before, after, defUDP)

	answer := packet.Build(packet.Spec{Src: chosen, Dst: client, Proto: packet.ProtoUDP, Payload: []byte("a")})
	before = monoSecs(t)
	w.runOut(t, answer)
	after = monoSecs(t)
	fwd, rev = w.flowEntries(t, client, vip, chosen, packet.ProtoUDP)
	expiresIn(t, "prompt answer: forward", fwd, before, after, defUDP)
	expiresIn(t, "prompt answer: reply", rev, before, after, defUDP)
	if fwd.Flags&bpf.SluiceCtFlagsCT_F_SEEN_REPLY == 0 || rev.Flags&bpf.SluiceCtFlagsCT_F_PEER_TOLD == 0 {
		t.Errorf("flags after the answer: forward %#x, reply %#x", fwd.Flags, rev.Flags)
	}
	before = monoSecs(t)
	w.run(t, udpTo(vip, "q2"))
	after = monoSecs(t)
	fwd, _ = w.flowEntries(t, client, vip, chosen, packet.ProtoUDP)
	expiresIn(t, "next query, flow 2 s old at most: forward", fwd, before, after, defUDP)

	w.age(t, streamAge, ctKey(client, netip.MustParseAddrPort(vip), packet.ProtoUDP), ctKey(chosen, client, packet.ProtoUDP))
	before = monoSecs(t)
	w.runOut(t, answer)
	after = monoSecs(t)
	// Only the first answer tells the forward entry; the flow lives while
	// either entry does.
	_, rev = w.flowEntries(t, client, vip, chosen, packet.ProtoUDP)
	expiresIn(t, "answer to a lasting flow: reply", rev, before, after, defUDPReplied)
	before = monoSecs(t)
	w.run(t, udpTo(vip, "q3"))
	after = monoSecs(t)
	fwd, _ = w.flowEntries(t, client, vip, chosen, packet.ProtoUDP)
	expiresIn(t, "next query to a stream: forward", fwd, before, after, defUDPReplied)
}

// streamAge is old enough for an answer to make a UDP flow a stream, with
// a second to spare for the coarse clock.
const streamAge = uint32(bpf.SluiceCtUdpStreamCT_UDP_STREAM_AFTER) + 2

// A UDP flow first answered after it has lasted (a slow backend, or a
// stream that only the backend starts talking in) is a stream at once:
// the first answer gives the forward entry the stream lifetime too.
func TestConntrackUDPFirstAnswerLate(t *testing.T) {
	w := standardWorld(t)
	_, out := w.run(t, udpTo(vip, "q"))
	f := parse(t, out)
	chosen := netip.AddrPortFrom(f.Dst, f.DstPort)
	w.age(t, streamAge, ctKey(client, netip.MustParseAddrPort(vip), packet.ProtoUDP), ctKey(chosen, client, packet.ProtoUDP))
	before := monoSecs(t)
	w.runOut(t, packet.Build(packet.Spec{Src: chosen, Dst: client, Proto: packet.ProtoUDP, Payload: []byte("a")}))
	after := monoSecs(t)
	fwd, rev := w.flowEntries(t, client, vip, chosen, packet.ProtoUDP)
	expiresIn(t, "late answer: forward", fwd, before, after, defUDPReplied)
	expiresIn(t, "late answer: reply", rev, before, after, defUDPReplied)
}

// The agent's lifetimes (sluice_ct_timeouts) replace the defaults.
func TestConntrackTimeoutsFromAgent(t *testing.T) {
	w := standardWorld(t)
	set := map[bpf.SluiceCtTimeout]uint32{
		bpf.SluiceCtTimeoutCT_TIMEOUT_TCP_SYN: 7,
		bpf.SluiceCtTimeoutCT_TIMEOUT_UDP:     11,
	}
	for k, v := range set {
		if err := w.dp.CTTimeouts.Put(k, v); err != nil {
			t.Fatal(err)
		}
	}
	before := monoSecs(t)
	chosen := w.openFlow(t)
	_, out := w.run(t, udpTo(vip, "q"))
	udpBackend := netip.AddrPortFrom(parse(t, out).Dst, parse(t, out).DstPort)
	after := monoSecs(t)
	fwd, _ := w.flowEntries(t, client, vip, chosen, packet.ProtoTCP)
	expiresIn(t, "tcp SYN", fwd, before, after, 7)
	fwd, _ = w.flowEntries(t, client, vip, udpBackend, packet.ProtoUDP)
	expiresIn(t, "udp", fwd, before, after, 11)
}

// A stray segment (a TCP non-SYN without a flow) gets a backend but only
// the short lifetime, as does any datagram: a flood of them cannot hold
// the table for long.
func TestConntrackStrayEntriesAreShortLived(t *testing.T) {
	w := standardWorld(t)
	before := monoSecs(t)
	_, out := w.run(t, tcpSeg(client, netip.MustParseAddrPort(vip), packet.TCPAck))
	f := parse(t, out)
	after := monoSecs(t)
	fwd, rev := w.flowEntries(t, client, vip, netip.AddrPortFrom(f.Dst, f.DstPort), packet.ProtoTCP)
	expiresIn(t, "stray ACK: forward", fwd, before, after, defSYN)
	expiresIn(t, "stray ACK: reply", rev, before, after, defSYN)
}

// A SYN on the tuple of a closed or expired flow starts a new flow; a SYN
// of a live flow is a retransmission and also restores a lost reply entry.
func TestConntrackSYNOnTrackedTuple(t *testing.T) {
	vipAP := netip.MustParseAddrPort(vip)
	cases := []struct {
		name    string
		prepare func(w *world, t *testing.T, be netip.AddrPort)
		want    map[string]uint64
	}{
		{"retransmission", func(*world, *testing.T, netip.AddrPort) {}, map[string]uint64{"established": 1}},
		{"reply entry lost", func(w *world, t *testing.T, be netip.AddrPort) {
			if err := w.dp.CT4.Delete(ctKey(be, client, packet.ProtoTCP)); err != nil {
				t.Fatal(err)
			}
		}, map[string]uint64{"established": 1, "ct-repaired": 1}},
		{"after the client's RST", func(w *world, t *testing.T, _ netip.AddrPort) {
			w.run(t, tcpSeg(client, vipAP, tcpRst))
		}, map[string]uint64{"ct-reopened": 1, "new-flow": 1}},
		{"after the backend's FIN", func(w *world, t *testing.T, be netip.AddrPort) {
			w.runOut(t, tcpSeg(be, client, tcpFin|packet.TCPAck))
		}, map[string]uint64{"ct-reopened": 1, "new-flow": 1}},
		{"expired", func(w *world, t *testing.T, _ netip.AddrPort) {
			w.expire(t, ctKey(client, vipAP, packet.ProtoTCP))
		}, map[string]uint64{"ct-reopened": 1, "new-flow": 1}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := standardWorld(t)
			be := w.openFlow(t)
			w.runOut(t, tcpSeg(be, client, packet.TCPSyn|packet.TCPAck))
			c.prepare(w, t, be)
			before := w.counts()
			_, out := w.run(t, tcpSeg(client, vipAP, packet.TCPSyn))
			f := parse(t, out)
			got := netip.AddrPortFrom(f.Dst, f.DstPort)
			if d := delta(before, w.counts()); !sameCounts(d, c.want) {
				t.Errorf("counters %v, want %v", d, c.want)
			}
			// Whatever happened, the flow is whole again: both entries,
			// and its reply translated back.
			w.flowEntries(t, client, vip, got, packet.ProtoTCP)
			if _, out := w.runOut(t, tcpSeg(got, client, packet.TCPSyn|packet.TCPAck)); netip.AddrPortFrom(parse(t, out).Src, parse(t, out).SrcPort) != vipAP {
				t.Error("the flow's reply was not translated back")
			}
			if c.want["established"] == 1 && got != be {
				t.Errorf("retransmitted SYN went to %s, not its flow's %s", got, be)
			}
		})
	}
}

func sameCounts(a, b map[string]uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// Two frontends sharing one backend, and a client using one source port
// for both: both flows would have one reply tuple. The second is refused
// while the first lives, and the first keeps its translation; once the
// first is dead, its tuple is taken over.
func TestConntrackReplyTupleClash(t *testing.T) {
	w := newWorld(t)
	fe80 := "10.96.0.30:80"
	fe8080 := "10.96.0.30:8080"
	w.serve(frontend(fe80, control.TCP), backends(be1))
	w.serve(frontend(fe8080, control.TCP), backends(be1))
	beAP := netip.MustParseAddrPort(be1)

	w.run(t, tcpSeg(client, netip.MustParseAddrPort(fe80), packet.TCPSyn))
	before := w.counts()
	verdict, _ := w.run(t, tcpSeg(client, netip.MustParseAddrPort(fe8080), packet.TCPSyn))
	if d := delta(before, w.counts()); verdict != tcActShot || !sameCounts(d, map[string]uint64{"drop-ct-clash": 1}) {
		t.Fatalf("second flow on the same reply tuple: verdict %d, counters %v; want drop-ct-clash", verdict, d)
	}
	if _, err := w.dp.CT4.Lookup(ctKey(client, netip.MustParseAddrPort(fe8080), packet.ProtoTCP)); err == nil {
		t.Error("the refused flow left a forward entry")
	}
	_, out := w.runOut(t, tcpSeg(beAP, client, packet.TCPSyn|packet.TCPAck))
	if f := parse(t, out); netip.AddrPortFrom(f.Src, f.SrcPort).String() != fe80 {
		t.Errorf("first flow's reply left from %s:%d, want %s", f.Src, f.SrcPort, fe80)
	}

	// Both entries of the first flow expire: the tuple is free.
	w.expire(t, ctKey(client, netip.MustParseAddrPort(fe80), packet.ProtoTCP), ctKey(beAP, client, packet.ProtoTCP))
	before = w.counts()
	if verdict, _ := w.run(t, tcpSeg(client, netip.MustParseAddrPort(fe8080), packet.TCPSyn)); verdict != tcActPass {
		t.Fatalf("after the first flow expired: verdict %d, counters %v", verdict, delta(before, w.counts()))
	}
	_, out = w.runOut(t, tcpSeg(beAP, client, packet.TCPSyn|packet.TCPAck))
	if f := parse(t, out); netip.AddrPortFrom(f.Src, f.SrcPort).String() != fe8080 {
		t.Errorf("second flow's reply left from %s:%d, want %s", f.Src, f.SrcPort, fe8080)
	}
}

// A full table refuses new flows, counted, and every flow it holds keeps
// being translated: nothing live is evicted.
func TestConntrackFullRefusesNewFlows(t *testing.T) {
	w := newWorldSized(t, map[string]uint32{bpf.SluiceMapCt4V3: 4})
	w.serve(frontend(vip, control.TCP), backends(be1, be2))
	vipAP := netip.MustParseAddrPort(vip)
	c1 := netip.MustParseAddrPort("10.244.0.2:1001")
	c2 := netip.MustParseAddrPort("10.244.0.2:1002")
	c3 := netip.MustParseAddrPort("10.244.0.2:1003")
	_, out := w.run(t, tcpSeg(c1, vipAP, packet.TCPSyn))
	b1 := netip.AddrPortFrom(parse(t, out).Dst, parse(t, out).DstPort)
	w.run(t, tcpSeg(c2, vipAP, packet.TCPSyn))

	before := w.counts()
	verdict, _ := w.run(t, tcpSeg(c3, vipAP, packet.TCPSyn))
	if d := delta(before, w.counts()); verdict != tcActShot || !sameCounts(d, map[string]uint64{"drop-ct-full": 1}) {
		t.Fatalf("flow beyond capacity: verdict %d, counters %v; want drop-ct-full", verdict, d)
	}
	before = w.counts()
	_, out = w.run(t, tcpSeg(c1, vipAP, packet.TCPAck))
	if f := parse(t, out); netip.AddrPortFrom(f.Dst, f.DstPort) != b1 {
		t.Errorf("an existing flow moved to %s:%d", f.Dst, f.DstPort)
	}
	if d := delta(before, w.counts()); !sameCounts(d, map[string]uint64{"established": 1}) {
		t.Errorf("existing flow in a full table: counters %v", d)
	}
}

// An untranslated datagram straight to a backend from the tuple of a
// translated flow, dead or alive, ends that flow: the client port was free
// for a new socket, so the backend's answer belongs to the new one and must
// leave unrewritten. A later datagram to the frontend is translated anew.
// A TCP segment other than a SYN leaves a live flow alone.
func TestConntrackDirectDatagramAndStaleReply(t *testing.T) {
	for _, dead := range []bool{true, false} {
		name := map[bool]string{true: "dead flow", false: "live flow"}[dead]
		t.Run(name, func(t *testing.T) {
			w := standardWorld(t)
			fwd := ctKey(client, netip.MustParseAddrPort(vip), packet.ProtoUDP)
			_, out := w.run(t, udpTo(vip, "q"))
			be := netip.AddrPortFrom(parse(t, out).Dst, parse(t, out).DstPort)
			rev := ctKey(be, client, packet.ProtoUDP)
			// The backend answers: an answered flow lives its longest.
			w.runOut(t, packet.Build(packet.Spec{Src: be, Dst: client, Proto: packet.ProtoUDP, Payload: []byte("a")}))
			if dead {
				w.expire(t, fwd, rev)
			}
			before := w.counts()
			verdict, out := w.run(t, packet.Build(packet.Spec{Src: client, Dst: be, Proto: packet.ProtoUDP, Payload: []byte("direct")}))
			if d := delta(before, w.counts()); verdict != tcActPass || !sameCounts(d, map[string]uint64{"ct-stale-reply": 1, "pass": 1}) {
				t.Errorf("direct datagram: verdict %d, counters %v; want ct-stale-reply and pass", verdict, d)
			}
			if f := parse(t, out); netip.AddrPortFrom(f.Dst, f.DstPort) != be {
				t.Errorf("the direct datagram was rewritten to %s:%d", f.Dst, f.DstPort)
			}
			for _, k := range []bpf.SluiceCt4Key{fwd, rev} {
				if _, err := w.dp.CT4.Lookup(k); err == nil {
					t.Errorf("entry %+v left behind", k)
				}
			}
			// The backend's answer to the direct datagram leaves as sent.
			verdict, out = w.runOut(t, packet.Build(packet.Spec{Src: be, Dst: client, Proto: packet.ProtoUDP, Payload: []byte("b")}))
			if f := parse(t, out); verdict != tcActPass || netip.AddrPortFrom(f.Src, f.SrcPort) != be {
				t.Errorf("the backend's answer: verdict %d, from %s:%d; want %s untouched", verdict, f.Src, f.SrcPort, be)
			}
			before = w.counts()
			w.run(t, udpTo(vip, "again"))
			if d := delta(before, w.counts()); !sameCounts(d, map[string]uint64{"new-flow": 1}) {
				t.Errorf("the next datagram to the frontend: counters %v, want a new flow", d)
			}
		})
	}
	t.Run("live flow, TCP segment", func(t *testing.T) {
		w := standardWorld(t)
		_, out := w.run(t, tcpSeg(client, netip.MustParseAddrPort(vip), packet.TCPSyn))
		be := netip.AddrPortFrom(parse(t, out).Dst, parse(t, out).DstPort)
		before := w.counts()
		w.run(t, tcpSeg(client, be, packet.TCPAck))
		if d := delta(before, w.counts()); d["ct-stale-reply"] != 0 {
			t.Errorf("an ACK straight to the backend: counters %v, want the live flow kept", d)
		}
		if _, err := w.dp.CT4.Lookup(ctKey(be, client, packet.ProtoTCP)); err != nil {
			t.Errorf("the live flow's reply entry: %v", err)
		}
	})
}
