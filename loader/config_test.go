package loader

import (
	"bytes"
	"net/netip"
	"testing"

	"github.com/sluice-lb/sluice/internal/testenv"
	"github.com/sluice-lb/sluice/maps"
)

// A restarted agent's loader rewrites only the service CIDR of
// sluice_config: the node's fields the previous control plane wrote keep
// serving until the new one's first sync.
func TestLoadKeepsNodeConfig(t *testing.T) {
	testenv.Privileged(t)
	dir := pinDir(t)
	var logs bytes.Buffer
	dp, err := Load(Options{PinDir: dir, ServiceCIDR: netip.MustParsePrefix("10.96.0.0/12"), Log: quietLog(&logs)})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := dp.Maps.Config.Lookup(0)
	if err != nil {
		t.Fatal(err)
	}
	cfg.NodeAddr4 = maps.Addr4(netip.MustParseAddr("192.168.1.10"))
	cfg.PodCidr4, cfg.PodCidr4Mask = maps.Addr4(netip.MustParseAddr("10.244.1.0")), maps.Addr4(netip.MustParseAddr("255.255.255.0"))
	cfg.SnatPortMin, cfg.SnatPortMax = 40000, 40999
	if err := dp.Maps.Config.Put(0, cfg); err != nil {
		t.Fatal(err)
	}
	dp.Close()

	for _, c := range []struct {
		cidr       string
		addr, mask string
	}{
		{"10.100.0.0/16", "10.100.0.0", "255.255.0.0"},
		{"", "0.0.0.0", "0.0.0.0"},
	} {
		var p netip.Prefix
		if c.cidr != "" {
			p = netip.MustParsePrefix(c.cidr)
		}
		dp, err := Load(Options{PinDir: dir, ServiceCIDR: p, Log: quietLog(&logs)})
		if err != nil {
			t.Fatal(err)
		}
		got, err := dp.Maps.Config.Lookup(0)
		dp.Close()
		if err != nil {
			t.Fatal(err)
		}
		want := cfg
		want.ServiceCidr4, want.ServiceCidr4Mask = maps.Addr4(netip.MustParseAddr(c.addr)), maps.Addr4(netip.MustParseAddr(c.mask))
		if got != want {
			t.Errorf("service CIDR %q: sluice_config %+v, want %+v", c.cidr, got, want)
		}
	}
}
