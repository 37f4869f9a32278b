package conntrack

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/sluice-lb/sluice/bpf"
	"github.com/sluice-lb/sluice/control"
	"github.com/sluice-lb/sluice/internal/packet"
	"github.com/sluice-lb/sluice/internal/testenv"
	"github.com/sluice-lb/sluice/maps"
)

func clientPort(i int) netip.AddrPort {
	return netip.AddrPortFrom(netip.MustParseAddr("10.0.0.1"), uint16(20000+i))
}

// byBackend counts a protocol's entries by the backend they name: the
// forward entry's destination, the reply entry's source.
func (w *world) byBackend(proto uint8) map[netip.AddrPort]int {
	out := map[netip.AddrPort]int{}
	for k, e := range w.entries() {
		if k.Proto != proto {
			continue
		}
		var be netip.AddrPort
		if e.Kind == bpf.SluiceCtKindCT_FORWARD {
			be = netip.AddrPortFrom(maps.AddrFrom4(e.BackendAddr), maps.PortFrom(e.BackendPort))
		} else {
			be = netip.AddrPortFrom(maps.AddrFrom4(k.Saddr), maps.PortFrom(k.Sport))
		}
		out[be]++
	}
	return out
}

// Rule 30: once an endpoint leaves a UDP service port, the flows pointing
// at it go (the collector's purge, woken by the sync's hook, not the next
// periodic sweep), and the next datagram of such a flow picks a live
// backend. TCP flows to the same endpoint stay: they end by RST or timeout.
func TestUDPBackendLeavingRemovesItsFlows(t *testing.T) {
	w := newWorld(t, 4096)
	udp, tcp := fe("10.96.0.10:53", control.UDP), fe("10.96.0.10:80", control.TCP)
	udpA, udpB := netip.MustParseAddrPort("10.244.1.2:53"), netip.MustParseAddrPort("10.244.1.3:53")
	tcpA := netip.MustParseAddrPort("10.244.1.2:80")
	w.serve(udp, bes(udpA.String(), udpB.String()))
	w.serve(tcp, bes(tcpA.String(), "10.244.1.3:80"))

	const flows = 40
	onA := []int{}
	for i := range flows {
		to := w.send(packet.Spec{Src: clientPort(i), Dst: netip.MustParseAddrPort("10.96.0.10:53"), Proto: packet.ProtoUDP, Payload: []byte("q")})
		w.reply(packet.Spec{Src: to, Dst: clientPort(i), Proto: packet.ProtoUDP, Payload: []byte("a")})
		if to == udpA {
			onA = append(onA, i)
		}
		w.send(packet.Spec{Src: clientPort(i), Dst: netip.MustParseAddrPort("10.96.0.10:80"), Proto: packet.ProtoTCP, TCPFlags: packet.TCPSyn})
	}
	before := w.byBackend(packet.ProtoUDP)
	tcpBefore := w.byBackend(packet.ProtoTCP)
	if len(onA) == 0 || before[udpA] != 2*len(onA) || before[udpB] != 2*(flows-len(onA)) || tcpBefore[tcpA] == 0 {
		t.Fatalf("flows before: udp %v tcp %v (%d on %s)", before, tcpBefore, len(onA), udpA)
	}

	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() {
		w.col.Run(ctx)
		close(stopped)
	}()
	defer func() {
		cancel()
		<-stopped // before the cleanup closes the maps
	}()
	w.serve(udp, bes(udpB.String()))
	w.serve(tcp, bes("10.244.1.3:80"))
	testenv.WaitFor(t, "the UDP flows of the backend that left to go", 5*time.Second, func() error {
		if n := w.byBackend(packet.ProtoUDP)[udpA]; n != 0 {
			return fmt.Errorf("%d UDP entries still name %s", n, udpA)
		}
		return nil
	})
	if after := w.byBackend(packet.ProtoUDP); after[udpB] != before[udpB] {
		t.Errorf("UDP entries of the staying backend: %d, were %d", after[udpB], before[udpB])
	}
	if after := w.byBackend(packet.ProtoTCP); after[tcpA] != tcpBefore[tcpA] {
		t.Errorf("TCP entries of the backend that left: %d, were %d: TCP flows must stay", after[tcpA], tcpBefore[tcpA])
	}
	if to := w.send(packet.Spec{Src: clientPort(onA[0]), Dst: netip.MustParseAddrPort("10.96.0.10:53"), Proto: packet.ProtoUDP,
		Payload: []byte("q")}); to != udpB {
		t.Errorf("next datagram of a flow that was on %s went to %s, want %s", udpA, to, udpB)
	}

	// A UDP frontend removed whole takes its flows along.
	w.unserve(udp)
	testenv.WaitFor(t, "the removed UDP frontend's flows to go", 5*time.Second, func() error {
		if n := len(w.byBackend(packet.ProtoUDP)); n != 0 {
			return fmt.Errorf("UDP entries of %d backends left", n)
		}
		return nil
	})
}

// A freed backend id, and a freed reverse-NAT id, are not handed out again
// while a flow names them; a sweep that finds none frees them.
func TestFreedIDsWaitForTheirFlows(t *testing.T) {
	w := newWorld(t, 4096)
	tcp := fe("10.96.0.10:80", control.TCP)
	w.serve(tcp, bes("10.244.1.2:80"))
	client := clientPort(1)
	vip := netip.MustParseAddrPort("10.96.0.10:80")
	w.send(packet.Spec{Src: client, Dst: vip, Proto: packet.ProtoTCP, TCPFlags: packet.TCPSyn})
	flow, err := w.dp.CT4.Lookup(ctKey(client.String(), vip.String(), packet.ProtoTCP))
	if err != nil {
		t.Fatal(err)
	}
	heldBackend, heldRevNat := flow.BackendId, flow.RevNatId

	// The backend leaves, and later the frontend: their ids are freed
	// while the flow still names them.
	w.serve(tcp, bes("10.244.1.3:80"))
	freed := time.Now()
	other := fe("10.96.0.20:80", control.TCP)
	w.unserve(tcp)
	idsOf := func(f control.Frontend, client netip.AddrPort) (uint32, uint32) {
		t.Helper()
		to := netip.AddrPortFrom(f.Addr, f.Port)
		w.send(packet.Spec{Src: client, Dst: to, Proto: packet.ProtoTCP, TCPFlags: packet.TCPSyn})
		e, err := w.dp.CT4.Lookup(ctKey(client.String(), to.String(), packet.ProtoTCP))
		if err != nil {
			t.Fatal(err)
		}
		return e.BackendId, e.RevNatId
	}
	checkNotReused := func(when string, i int) {
		t.Helper()
		w.serve(other, bes(fmt.Sprintf("10.244.2.%d:80", i)))
		b, r := idsOf(other, clientPort(100+i))
		if b == heldBackend || r == heldRevNat {
			t.Fatalf("%s: a new frontend got backend id %d, reverse-NAT id %d: the flow holds %d and %d", when, b, r, heldBackend, heldRevNat)
		}
		w.unserve(other)
	}
	checkNotReused("before any sweep", 1)

	// Sweeps while the flow lives keep the ids held, also once the
	// grace after the free is over.
	testenv.WaitFor(t, "a sweep beginning past the grace of the free", 5*time.Second, func() error {
		if st := w.sweep(); st.Start.Sub(freed) <= control.QuarantineGrace {
			return fmt.Errorf("sweep began %s after the free", st.Start.Sub(freed))
		}
		return nil
	})
	if qb, qr := w.rec.QuarantinedIDs(); qb == 0 || qr == 0 {
		t.Fatalf("quarantined after sweeps that saw the flow: %d backend, %d reverse-NAT ids", qb, qr)
	}
	checkNotReused("after sweeps that saw the flow", 2)

	// The flow expires and goes: the next sweeps free what it held, and
	// the ids come back into use.
	w.ageAll()
	testenv.WaitFor(t, "the flow's ids to be freed", 5*time.Second, func() error {
		w.sweep()
		if _, err := w.dp.CT4.Lookup(ctKey(client.String(), vip.String(), packet.ProtoTCP)); err == nil {
			return fmt.Errorf("the expired flow is still there")
		}
		if qb, qr := w.rec.QuarantinedIDs(); qb+qr != 0 {
			return fmt.Errorf("%d backend and %d reverse-NAT ids still quarantined", qb, qr)
		}
		return nil
	})
	seen := map[[2]uint32]bool{}
	for i := range 4 {
		f := fe(fmt.Sprintf("10.96.1.%d:80", i), control.TCP)
		w.serve(f, bes(fmt.Sprintf("10.244.3.%d:80", i)))
		b, r := idsOf(f, clientPort(200+i))
		seen[[2]uint32{b, 0}], seen[[2]uint32{0, r}] = true, true
	}
	if !seen[[2]uint32{heldBackend, 0}] || !seen[[2]uint32{0, heldRevNat}] {
		t.Errorf("backend id %d and reverse-NAT id %d were not reused once free (ids handed out: %v)", heldBackend, heldRevNat, seen)
	}
}
