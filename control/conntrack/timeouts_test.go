package conntrack

import (
	"net/netip"
	"testing"
	"time"

	"github.com/sluice-lb/sluice/bpf"
	"github.com/sluice-lb/sluice/control"
	"github.com/sluice-lb/sluice/internal/packet"
)

// The agent's default lifetimes are the datapath's own (enum
// ct_timeout_default in bpf/lib/types.h): with sluice_ct_timeouts zeroed,
// packets through the datapath leave entries whose expiry is now plus the
// Go default of the state they are in. A default changed on one side only
// fails here.
func TestDefaultTimeoutsAreTheDatapaths(t *testing.T) {
	w := newWorld(t, 4096)
	var zero [bpf.SluiceCtTimeoutCT_TIMEOUT_MAX]uint32
	keys := make([]bpf.SluiceCtTimeout, len(zero))
	for i := range keys {
		keys[i] = bpf.SluiceCtTimeout(i)
	}
	must(t, w.dp.CTTimeouts.PutAll(keys, zero[:]))
	w.serve(fe("10.96.0.10:80", control.TCP), bes("10.244.1.2:80"))
	w.serve(fe("10.96.0.10:53", control.UDP), bes("10.244.1.2:53"))
	vipTCP, vipUDP := netip.MustParseAddrPort("10.96.0.10:80"), netip.MustParseAddrPort("10.96.0.10:53")
	beTCP, beUDP := netip.MustParseAddrPort("10.244.1.2:80"), netip.MustParseAddrPort("10.244.1.2:53")
	client := clientPort(1)
	d := DefaultTimeouts()

	// check runs one packet, then reads an entry: its expiry must be the
	// packet's time plus want, the time read before and after the run.
	check := func(what string, run func(), k bpf.SluiceCt4Key, want time.Duration) {
		t.Helper()
		before := monoSeconds(t)
		run()
		after := monoSeconds(t)
		e, err := w.dp.CT4.Lookup(k)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		s := uint32(want / time.Second)
		if e.Expires < before+s || e.Expires > after+s {
			t.Errorf("%s: expires in %d s (of now %d..%d), the Go default is %s", what, int64(e.Expires)-int64(before), before, after, want)
		}
	}
	fwdTCP := ctKey(client.String(), vipTCP.String(), packet.ProtoTCP)
	revTCP := ctKey(beTCP.String(), client.String(), packet.ProtoTCP)
	tcp := func(from, to netip.AddrPort, flags uint8, egress bool) func() {
		return func() {
			s := packet.Spec{Src: from, Dst: to, Proto: packet.ProtoTCP, TCPFlags: flags}
			if egress {
				w.reply(s)
			} else {
				w.send(s)
			}
		}
	}
	check("SYN", tcp(client, vipTCP, packet.TCPSyn, false), fwdTCP, d.TCPSyn)
	check("SYN-ACK", tcp(beTCP, client, packet.TCPSyn|packet.TCPAck, true), revTCP, d.TCPSyn)
	check("ACK", tcp(client, vipTCP, packet.TCPAck, false), fwdTCP, d.TCPEstablished)
	check("reply ACK", tcp(beTCP, client, packet.TCPAck, true), revTCP, d.TCPEstablished)
	check("FIN", tcp(client, vipTCP, packet.TCPAck|0x01, false), fwdTCP, d.TCPClose)

	fwdUDP := ctKey(client.String(), vipUDP.String(), packet.ProtoUDP)
	revUDP := ctKey(beUDP.String(), client.String(), packet.ProtoUDP)
	check("datagram", func() {
		w.send(packet.Spec{Src: client, Dst: vipUDP, Proto: packet.ProtoUDP, Payload: []byte("q")})
	}, fwdUDP, d.UDP)
	answer := func() {
		w.reply(packet.Spec{Src: beUDP, Dst: client, Proto: packet.ProtoUDP, Payload: []byte("a")})
	}
	// Answered at once: no stream yet (it has not lasted 2 s).
	check("prompt answer", answer, revUDP, d.UDP)
	check("promptly answered flow", func() {}, fwdUDP, d.UDP)
	// The same flow as if opened long enough ago: an answer makes it a stream
	// (its reply entry; the client's next datagram, its forward one).
	for _, k := range []bpf.SluiceCt4Key{fwdUDP, revUDP} {
		e, err := w.dp.CT4.Lookup(k)
		must(t, err)
		e.Created -= uint32(bpf.SluiceCtUdpStreamCT_UDP_STREAM_AFTER) + 2
		must(t, w.dp.CT4.Put(k, e))
	}
	check("answer to a lasting flow", answer, revUDP, d.UDPStream)
	check("datagram of a stream", func() {
		w.send(packet.Spec{Src: client, Dst: vipUDP, Proto: packet.ProtoUDP, Payload: []byte("q")})
	}, fwdUDP, d.UDPStream)
}

// Lifetimes the agent sets are the ones the datapath applies.
func TestSetTimeoutsApply(t *testing.T) {
	w := newWorld(t, 4096)
	set := DefaultTimeouts()
	set.UDP = 7 * time.Second
	secs, err := set.Seconds()
	if err != nil {
		t.Fatal(err)
	}
	keys := make([]bpf.SluiceCtTimeout, len(secs))
	for i := range keys {
		keys[i] = bpf.SluiceCtTimeout(i)
	}
	must(t, w.dp.CTTimeouts.PutAll(keys, secs[:]))
	w.serve(fe("10.96.0.10:53", control.UDP), bes("10.244.1.2:53"))
	client, vip := clientPort(1), netip.MustParseAddrPort("10.96.0.10:53")
	before := monoSeconds(t)
	w.send(packet.Spec{Src: client, Dst: vip, Proto: packet.ProtoUDP, Payload: []byte("q")})
	after := monoSeconds(t)
	e, err := w.dp.CT4.Lookup(ctKey(client.String(), vip.String(), packet.ProtoUDP))
	if err != nil {
		t.Fatal(err)
	}
	if e.Expires < before+7 || e.Expires > after+7 {
		t.Errorf("datagram flow expires %d s from now, want 7", int64(e.Expires)-int64(before))
	}
}

func TestTimeoutsRefuseWhatTheMapCannotHold(t *testing.T) {
	for _, d := range []time.Duration{0, 500 * time.Millisecond, 1 << 62} {
		tt := DefaultTimeouts()
		tt.TCPClose = d
		if _, err := tt.Seconds(); err == nil {
			t.Errorf("close timeout %s accepted", d)
		}
	}
}
