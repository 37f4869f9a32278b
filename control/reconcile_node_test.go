package control

import (
	"log/slog"
	"net/netip"
	"slices"
	"testing"

	"github.com/sluice-lb/sluice/bpf"
	"github.com/sluice-lb/sluice/maps"
)

func TestNodeConfigOf(t *testing.T) {
	a4 := func(s string) uint32 { return maps.Addr4(netip.MustParseAddr(s)) }
	cases := []struct {
		n    NodeInfo
		want nodeConfig
	}{
		{NodeInfo{InternalIPs: "fd00::1,192.168.1.10,192.168.1.11", PodCIDRs: "fd01::/64,10.244.1.0/24", NodePortAddrs: "192.168.1.11"},
			nodeConfig{addr: a4("192.168.1.10"), podCIDR: a4("10.244.1.0"), podMask: a4("255.255.255.0")}},
		{NodeInfo{NodePortAddrs: "10.1.0.5,10.1.0.6", PodCIDRs: "10.244.1.7/16"},
			nodeConfig{addr: a4("10.1.0.5"), podCIDR: a4("10.244.0.0"), podMask: a4("255.255.0.0")}},
		{NodeInfo{InternalIPs: "bogus", PodCIDRs: "also bogus"}, nodeConfig{}},
		{NodeInfo{}, nodeConfig{}},
	}
	for _, c := range cases {
		if got := nodeConfigOf(c.n, [2]uint16{}); got != c.want {
			t.Errorf("%+v: %+v, want %+v", c.n, got, c.want)
		}
	}
	if got := nodeConfigOf(NodeInfo{}, [2]uint16{40000, 40999}); got.portMin != 40000 || got.portMax != 40999 {
		t.Errorf("SNAT ports %+v", got)
	}
}

// SetNode writes the node's fields of sluice_config before the frontends
// of the same apply, keeps the loader's service CIDR, sets the prefilter
// bit of the SNAT address, and a full apply repairs the fields when
// changed behind sluice's back; a restarted agent rewrites nothing.
func TestReconcilerWritesNodeConfig(t *testing.T) {
	dp := newDatapath(t, nil)
	lb := dp.LB4
	a4 := func(s string) uint32 { return maps.Addr4(netip.MustParseAddr(s)) }
	loaderCfg := bpf.SluiceDatapathConfig{ServiceCidr4: a4("10.96.0.0"), ServiceCidr4Mask: a4("255.240.0.0")}
	if err := dp.Config.Put(0, loaderCfg); err != nil {
		t.Fatal(err)
	}
	opts := ReconcilerOptions{Config: dp.Config, SNATPorts: [2]uint16{40000, 40999}}
	r, err := NewReconcilerWith(lb, slog.Default(), opts)
	if err != nil {
		t.Fatal(err)
	}
	node := NodeInfo{Name: "n1", InternalIPs: "192.168.1.10", PodCIDRs: "10.244.1.0/24", NodePortAddrs: "192.168.1.10"}
	want := loaderCfg
	want.NodeAddr4, want.PodCidr4, want.PodCidr4Mask = a4("192.168.1.10"), a4("10.244.1.0"), a4("255.255.255.0")
	want.SnatPortMin, want.SnatPortMax = 40000, 40999
	check := func(when string) {
		t.Helper()
		if got, err := dp.Config.Lookup(0); err != nil || got != want {
			t.Errorf("%s: sluice_config %+v (%v), want %+v", when, got, err, want)
		}
	}

	r.SetNode(node)
	var phases []string
	r.afterWrite = func(phase string) { phases = append(phases, phase) }
	mustApply(t, r, state(external(KindNodePort, "192.168.1.10:30080", "10.0.0.1:80")))
	r.afterWrite = nil
	if i := slices.Index(phases, "write node config"); i < 0 || i > slices.Index(phases, "write frontends") {
		t.Errorf("phases %q: the node config is not written before the frontends", phases)
	}
	check("first apply")
	f, _ := lb.Prefilter.Lookup(0)
	if !bitSet(&f, filterDst(a4("192.168.1.10"))) {
		t.Error("prefilter lacks the SNAT address")
	}

	// A change of the node alone is written by the next apply, however
	// small.
	node.InternalIPs = "192.168.1.20"
	r.SetNode(node)
	s := state(external(KindNodePort, "192.168.1.10:30080", "10.0.0.1:80"))
	if _, _, err := r.ApplyFrontends(s, nil); err != nil {
		t.Fatal(err)
	}
	want.NodeAddr4 = a4("192.168.1.20")
	check("node changed")
	f, _ = lb.Prefilter.Lookup(0)
	if !bitSet(&f, filterDst(a4("192.168.1.20"))) {
		t.Error("prefilter lacks the new SNAT address")
	}

	// Changed behind sluice's back: a full apply repairs the node's
	// fields and leaves the service CIDR as it finds it.
	broken := want
	broken.NodeAddr4, broken.PodCidr4Mask, broken.SnatPortMax = 0, 0, 0
	broken.ServiceCidr4, broken.ServiceCidr4Mask = a4("10.100.0.0"), a4("255.255.0.0")
	if err := dp.Config.Put(0, broken); err != nil {
		t.Fatal(err)
	}
	mustApply(t, r, s)
	want.ServiceCidr4, want.ServiceCidr4Mask = broken.ServiceCidr4, broken.ServiceCidr4Mask
	check("repaired")

	// A restarted agent with the same node writes nothing.
	r2, err := NewReconcilerWith(lb, slog.Default(), opts)
	if err != nil {
		t.Fatal(err)
	}
	r2.SetNode(node)
	r2.afterWrite = func(phase string) { t.Errorf("restart with the same node wrote %q", phase) }
	mustApply(t, r2, s)
}
