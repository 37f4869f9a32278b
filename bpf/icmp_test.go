package bpf_test

import (
	"bytes"
	"encoding/binary"
	"maps"
	"net/netip"
	"testing"

	"github.com/sluice-lb/sluice/bpf"
	"github.com/sluice-lb/sluice/internal/packet"
)

// An address on the path that is neither end of a flow: a router, or the
// node itself sending fragmentation needed for a backend's link.
var router = netip.MustParseAddr("10.244.0.1")

// datagram is the IPv4 datagram of a frame, as far as its total length says.
func datagram(t *testing.T, frame []byte) []byte {
	t.Helper()
	f := parse(t, frame)
	return append(bytes.Clone(f.IP), f.L4...)
}

// head is the first n bytes of a datagram, what an error quotes of it.
func head(d []byte, n int) []byte {
	return bytes.Clone(d[:min(n, len(d))])
}

// ctEntries reads all of conntrack, to show that errors leave it alone.
func (w *world) ctEntries(t *testing.T) map[bpf.SluiceCt4Key]bpf.SluiceCt4Entry {
	t.Helper()
	out := map[bpf.SluiceCt4Key]bpf.SluiceCt4Entry{}
	if err := w.dp.CT4.Each(func(k bpf.SluiceCt4Key, v bpf.SluiceCt4Entry) bool {
		out[k] = v
		return true
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// ICMP errors about translated flows (rule 23). A flow is opened for TCP
// and UDP each; errors about its packets, as the sender of each error saw
// them, must come out as the packets the error's receiver itself sent or
// got: the quote byte for byte (so the quoted IP and L4 checksums are
// right), the outer header translated where it named the other side, and
// the outer IP and ICMP checksums right.
func TestICMPErrorsTranslated(t *testing.T) {
	w := standardWorld(t)
	vipAddr := netip.MustParseAddrPort(vip)

	// The client's packets as it sent them, and as the backend got them.
	tcpSent := datagram(t, tcpTo(vip))
	_, out := w.run(t, tcpTo(vip))
	tcpGot := datagram(t, out)
	tcpBackend := netip.AddrPortFrom(parse(t, out).Dst, parse(t, out).DstPort)

	udpIn := udpTo(vip, "hello, backend")
	udpSent := datagram(t, udpIn)
	_, out = w.run(t, udpIn)
	udpGot := datagram(t, out)
	udpBackend := netip.AddrPortFrom(parse(t, out).Dst, parse(t, out).DstPort)

	// A UDP checksum of 0 ("none") in the quote stays 0.
	noSum := func(d []byte) []byte {
		c := bytes.Clone(d)
		binary.BigEndian.PutUint16(c[20+6:], 0)
		return c
	}

	// The backend's reply as it sent it, and as the client got it.
	reply := packet.Build(packet.Spec{Src: udpBackend, Dst: client, Proto: packet.ProtoUDP, Payload: []byte("hello, client")})
	replySent := datagram(t, reply)
	_, out = w.runOut(t, reply)
	replyGot := datagram(t, out)
	if parse(t, out).Src != vipAddr.Addr() {
		t.Fatal("reply not translated")
	}

	// A datagram to a backend, and one from a frontend, of no flow.
	strangerToBackend := datagram(t, packet.Build(packet.Spec{Src: netip.AddrPortFrom(client.Addr(), 40001), Dst: udpBackend, Proto: packet.ProtoUDP, Payload: []byte("x")}))
	strangerFromVIP := datagram(t, packet.Build(packet.Spec{Src: vipAddr, Dst: netip.AddrPortFrom(client.Addr(), 40001), Proto: packet.ProtoUDP, Payload: []byte("x")}))

	// No packet of a translated flow is ICMP or carries IP options.
	echoToBackend := datagram(t, packet.Build(packet.Spec{Src: client, Dst: udpBackend, Proto: packet.ProtoICMP}))
	withOptions := datagram(t, packet.Build(packet.Spec{Src: client, Dst: udpBackend, Proto: packet.ProtoUDP, IPOptions: []byte{1, 1, 1, 0}}))

	const egress, ingress = true, false
	cases := []struct {
		name     string
		egress   bool
		err      packet.ICMPError
		verdict  uint32
		reason   string
		src, dst netip.Addr // outer addresses out
		quote    []byte     // the quote out; nil: the frame is unchanged
	}{
		{"fragmentation needed from the path, whole TCP quote", egress,
			packet.ICMPError{Src: router, Dst: client.Addr(), Type: packet.ICMPDestUnreach, Code: packet.ICMPFragNeeded, Rest: 1280, Quote: tcpGot},
			tcActPass, "icmp-error-to-client", router, client.Addr(), tcpSent},
		{"fragmentation needed from the path, 8-byte TCP quote", egress,
			packet.ICMPError{Src: router, Dst: client.Addr(), Type: packet.ICMPDestUnreach, Code: packet.ICMPFragNeeded, Rest: 1280, Quote: head(tcpGot, 28)},
			tcActPass, "icmp-error-to-client", router, client.Addr(), head(tcpSent, 28)},
		{"port unreachable from the backend, TCP quote", egress,
			packet.ICMPError{Src: tcpBackend.Addr(), Dst: client.Addr(), Type: packet.ICMPDestUnreach, Code: packet.ICMPPortUnreach, Quote: tcpGot},
			tcActPass, "icmp-error-to-client", vipAddr.Addr(), client.Addr(), tcpSent},
		{"port unreachable from the backend, UDP quote", egress,
			packet.ICMPError{Src: udpBackend.Addr(), Dst: client.Addr(), Type: packet.ICMPDestUnreach, Code: packet.ICMPPortUnreach, Quote: udpGot},
			tcActPass, "icmp-error-to-client", vipAddr.Addr(), client.Addr(), udpSent},
		{"port unreachable from the backend, UDP quote without checksum", egress,
			packet.ICMPError{Src: udpBackend.Addr(), Dst: client.Addr(), Type: packet.ICMPDestUnreach, Code: packet.ICMPPortUnreach, Quote: noSum(udpGot)},
			tcActPass, "icmp-error-to-client", vipAddr.Addr(), client.Addr(), noSum(udpSent)},
		{"time exceeded from the path, 8-byte UDP quote", egress,
			packet.ICMPError{Src: router, Dst: client.Addr(), Type: packet.ICMPTimeExceeded, Quote: head(udpGot, 28)},
			tcActPass, "icmp-error-to-client", router, client.Addr(), head(udpSent, 28)},
		{"parameter problem from the backend", egress,
			packet.ICMPError{Src: tcpBackend.Addr(), Dst: client.Addr(), Type: packet.ICMPParamProblem, Rest: 8 << 24, Quote: tcpGot},
			tcActPass, "icmp-error-to-client", vipAddr.Addr(), client.Addr(), tcpSent},
		{"client's port unreachable toward the frontend", ingress,
			packet.ICMPError{Src: client.Addr(), Dst: vipAddr.Addr(), Type: packet.ICMPDestUnreach, Code: packet.ICMPPortUnreach, Quote: replyGot},
			tcActPass, "icmp-error-to-backend", client.Addr(), udpBackend.Addr(), replySent},
		{"fragmentation needed toward the frontend, 8-byte quote", ingress,
			packet.ICMPError{Src: router, Dst: vipAddr.Addr(), Type: packet.ICMPDestUnreach, Code: packet.ICMPFragNeeded, Rest: 576, Quote: head(replyGot, 28)},
			tcActPass, "icmp-error-to-backend", router, udpBackend.Addr(), head(replySent, 28)},
		{"error about no flow, to a client, passes", egress,
			packet.ICMPError{Src: udpBackend.Addr(), Dst: client.Addr(), Type: packet.ICMPDestUnreach, Code: packet.ICMPPortUnreach, Quote: strangerToBackend},
			tcActPass, "pass", netip.Addr{}, netip.Addr{}, nil},
		{"error about no flow, to a frontend, passes", ingress,
			packet.ICMPError{Src: client.Addr(), Dst: vipAddr.Addr(), Type: packet.ICMPDestUnreach, Code: packet.ICMPPortUnreach, Quote: strangerFromVIP},
			tcActPass, "pass", netip.Addr{}, netip.Addr{}, nil},
		{"error to a frontend about another frontend's packet passes", ingress,
			packet.ICMPError{Src: client.Addr(), Dst: netip.MustParseAddrPort(emptyVIP).Addr(), Type: packet.ICMPDestUnreach, Code: packet.ICMPPortUnreach, Quote: replyGot},
			tcActPass, "pass", netip.Addr{}, netip.Addr{}, nil},
		{"quote cut short, to a frontend, dropped", ingress,
			packet.ICMPError{Src: client.Addr(), Dst: vipAddr.Addr(), Type: packet.ICMPDestUnreach, Code: packet.ICMPPortUnreach, Quote: head(replyGot, 24)},
			tcActShot, "drop-icmp-error", netip.Addr{}, netip.Addr{}, nil},
		{"quote without an IPv4 header, to a frontend, dropped", ingress,
			packet.ICMPError{Src: client.Addr(), Dst: vipAddr.Addr(), Type: packet.ICMPDestUnreach, Code: packet.ICMPPortUnreach, Quote: append([]byte{0x60}, replyGot[1:]...)},
			tcActShot, "drop-icmp-error", netip.Addr{}, netip.Addr{}, nil},
		{"error quoting an echo passes", egress,
			packet.ICMPError{Src: router, Dst: client.Addr(), Type: packet.ICMPTimeExceeded, Quote: echoToBackend},
			tcActPass, "pass", netip.Addr{}, netip.Addr{}, nil},
		{"error quoting a datagram with IP options passes", egress,
			packet.ICMPError{Src: udpBackend.Addr(), Dst: client.Addr(), Type: packet.ICMPDestUnreach, Code: packet.ICMPPortUnreach, Quote: withOptions},
			tcActPass, "pass", netip.Addr{}, netip.Addr{}, nil},
		// On the way out a malformed packet is the node's own.
		{"quote cut short, to a client, passes", egress,
			packet.ICMPError{Src: udpBackend.Addr(), Dst: client.Addr(), Type: packet.ICMPDestUnreach, Code: packet.ICMPPortUnreach, Quote: head(udpGot, 24)},
			tcActPass, "pass", netip.Addr{}, netip.Addr{}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in := packet.BuildICMPError(c.err)
			run := w.run
			if c.egress {
				run = w.runOut
			}
			ct := w.ctEntries(t)
			before := w.counts()
			verdict, out := run(t, in)
			if verdict != c.verdict {
				t.Errorf("verdict %d, want %d", verdict, c.verdict)
			}
			if d := delta(before, w.counts()); len(d) != 1 || d[c.reason] != 1 {
				t.Errorf("counters moved %v, want only %s +1", d, c.reason)
			}
			if !maps.Equal(ct, w.ctEntries(t)) {
				t.Error("conntrack changed")
			}
			if c.verdict == tcActShot {
				return
			}
			if c.quote == nil {
				if !bytes.Equal(out, in) {
					t.Errorf("packet changed:\n got %x\nwant %x", out, in)
				}
				return
			}
			f := parse(t, out)
			if f.Src != c.src || f.Dst != c.dst {
				t.Errorf("outer %s -> %s, want %s -> %s", f.Src, f.Dst, c.src, c.dst)
			}
			checksumsOK(t, f) // outer IPv4 header, ICMP over the whole message
			q, err := f.Quote()
			if err != nil {
				t.Fatal(err)
			}
			if !q.IPChecksumOK() {
				t.Error("quoted IPv4 header checksum wrong")
			}
			if got := append(bytes.Clone(q.IP), q.L4...); !bytes.Equal(got, c.quote) {
				t.Errorf("quote\n got %x\nwant %x", got, c.quote)
			}
			if !bytes.Equal(f.L4[:8], []byte(out[34:42])) || f.L4[0] != c.err.Type || f.L4[1] != c.err.Code ||
				binary.BigEndian.Uint32(f.L4[4:]) != c.err.Rest {
				t.Error("ICMP type, code or rest of header changed")
			}
		})
	}
}

// An error about a flow whose frontend is being removed (its reverse-NAT
// entry is empty) passes untouched, as the flow's replies do.
func TestICMPErrorWithoutRevNat(t *testing.T) {
	w := standardWorld(t)
	_, out := w.run(t, tcpTo(vip))
	got := datagram(t, out)
	if err := w.dp.LB4.RevNat.Each(func(id uint32, rn bpf.SluiceLb4ReverseNat) bool {
		if rn.Address != 0 {
			if err := w.dp.LB4.RevNat.Put(id, bpf.SluiceLb4ReverseNat{}); err != nil {
				t.Fatal(err)
			}
		}
		return true
	}); err != nil {
		t.Fatal(err)
	}
	in := packet.BuildICMPError(packet.ICMPError{Src: router, Dst: client.Addr(), Type: packet.ICMPDestUnreach, Code: packet.ICMPFragNeeded, Rest: 1280, Quote: got})
	before := w.counts()
	verdict, out := w.runOut(t, in)
	if verdict != tcActPass || !bytes.Equal(out, in) {
		t.Errorf("verdict %d, changed %v", verdict, !bytes.Equal(out, in))
	}
	if d := delta(before, w.counts()); d["reply-no-revnat"] != 1 || len(d) != 1 {
		t.Errorf("counters %v", d)
	}
}
