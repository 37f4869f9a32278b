package bpf_test

import (
	"log/slog"
	"net/netip"
	"testing"

	"github.com/sluice-lb/sluice/control"
	"github.com/sluice-lb/sluice/internal/packet"
)

// North-south frontends programmed by the real reconciler, with the
// node's fields it writes to sluice_config, and real packets: the entries
// it derives (kinds without markers, scopes, source ranges, locality) are
// the ones the datapath acts on as rules 13, 17 and 21 say.
func TestIngressNorthSouthAsReconciled(t *testing.T) {
	w := newWorld(t)
	rec, err := control.NewReconcilerWith(w.dp.LB4, slog.Default(), control.ReconcilerOptions{Config: w.dp.Config})
	if err != nil {
		t.Fatal(err)
	}
	w.rec = rec
	w.setServiceCIDR(netip.MustParsePrefix("10.96.0.0/12"))
	// client (10.244.0.2) is one of this node's pods.
	rec.SetNode(control.NodeInfo{Name: "n1", InternalIPs: "192.168.1.10", PodCIDRs: "10.244.0.0/24", NodePortAddrs: "192.168.1.10"})
	local := func(addr string) control.Backend {
		b := backends(addr)[0]
		b.Local = true
		return b
	}
	nodePort := frontend("192.168.1.10:30080", control.TCP)
	lbIP := frontend("203.0.113.5:80", control.TCP)
	cip := frontend(vip, control.TCP)
	w.ports[nodePort] = &control.ServicePort{Name: control.ServicePortName{Namespace: "t", Name: "np"}, Frontend: nodePort,
		Kind: control.KindNodePort, DropEmpty: true, // eTP=Local, no local endpoint
		Internal: &control.ScopeSet{Backends: []control.Backend{local(be1)}}}
	w.ports[lbIP] = &control.ServicePort{Name: control.ServicePortName{Namespace: "t", Name: "lb"}, Frontend: lbIP,
		Kind: control.KindLoadBalancer, Backends: []control.Backend{local(be2)},
		SourceRanges: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}}
	w.ports[cip] = &control.ServicePort{Name: control.ServicePortName{Namespace: "t", Name: "cip"}, Frontend: cip,
		Backends: backends(be1)}
	w.apply()

	outside := netip.MustParseAddrPort("203.0.113.9:40000")
	allowed := netip.MustParseAddrPort("198.51.100.7:40000")
	cases := []struct {
		name    string
		src     netip.AddrPort
		dst     string
		verdict uint32
		reason  string
		to      string // translated destination, for a new flow
	}{
		{"NodePort, external client: the empty Local set drops", outside, "192.168.1.10:30080", tcActShot, "drop-no-local-endpoints", ""},
		{"NodePort, this node's pod: the internal set", client, "192.168.1.10:30080", tcActPass, "new-flow", be1},
		{"node address, another port: not a service IP, passed", outside, "192.168.1.10:22", tcActPass, "pass", ""},
		{"ClusterIP, another port: rejected", outside, "10.96.0.10:81", tcActRedirect, "reject-unknown-port", ""},
		{"load balancer, source outside its ranges: dropped", outside, "203.0.113.5:80", tcActShot, "drop-source-range", ""},
		{"load balancer, source inside its ranges", allowed, "203.0.113.5:80", tcActPass, "new-flow", be2},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in := packet.Build(packet.Spec{Src: c.src, Dst: netip.MustParseAddrPort(c.dst), Proto: packet.ProtoTCP, TCPFlags: packet.TCPSyn})
			before := w.counts()
			verdict, out := w.run(t, in)
			if verdict != c.verdict {
				t.Errorf("verdict %d, want %d", verdict, c.verdict)
			}
			if d := delta(before, w.counts()); d[c.reason] != 1 {
				t.Errorf("counters moved %v, want %s +1", d, c.reason)
			}
			if c.to != "" {
				if f := parse(t, out); netip.AddrPortFrom(f.Dst, f.DstPort).String() != c.to || f.Src != c.src.Addr() {
					t.Errorf("translated to %s from %s, want %s from %s (no SNAT)", netip.AddrPortFrom(f.Dst, f.DstPort), f.Src, c.to, c.src.Addr())
				}
			}
		})
	}
}
