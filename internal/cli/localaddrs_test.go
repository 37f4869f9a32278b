package cli

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/sluice-lb/sluice/control"
	"github.com/sluice-lb/sluice/internal/netlab"
	"github.com/sluice-lb/sluice/internal/testenv"
)

// The NodeInfo follows the addresses of a real namespace: an address
// added or removed, and primary's fallback to the default route's device,
// through the netlink subscription.
func TestLocalAddrsFollowANamespace(t *testing.T) {
	testenv.Privileged(t)
	ns, err := netlab.NewNS("sln-cli-addrs")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Delete() })
	h, err := netns.GetFromName(ns.Name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	nl := ns.Netlink()
	if err := ns.LoopbackUp(); err != nil {
		t.Fatal(err)
	}
	// A veth pair stands for a device (the dummy module may be absent).
	device := func(name string) netlink.Link {
		t.Helper()
		if err := nl.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: name + "p"}); err != nil {
			t.Fatal(err)
		}
		for _, n := range []string{name + "p", name} {
			l, err := nl.LinkByName(n)
			if err != nil {
				t.Fatal(err)
			}
			if err := nl.LinkSetUp(l); err != nil {
				t.Fatal(err)
			}
		}
		l, err := nl.LinkByName(name)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	up0 := device("up0")
	if err := ns.AddrAdd("up0", netip.MustParsePrefix("192.0.2.10/24")); err != nil {
		t.Fatal(err)
	}

	lister := netlinkAddrs{nl: nl, ns: &h}
	cidrs := control.NewStore(nil)
	primary := control.NewStore(nil)
	sinks := []*nodeAddrSink{
		newNodeAddrSink(cidrs, "192.0.2.0/24,198.51.100.0/24", lister, slog.New(slog.DiscardHandler)),
		newNodeAddrSink(primary, "primary", lister, slog.New(slog.DiscardHandler)),
	}
	for _, s := range sinks {
		s.SetNode(control.NodeInfo{Name: "n1"}) // no InternalIPs
	}
	subscribed := make(chan struct{})
	first := true
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		lister.watch(ctx, slog.New(slog.DiscardHandler), func() {
			for _, s := range sinks {
				s.LocalAddrsChanged()
			}
			if first {
				first = false
				close(subscribed)
			}
		})
	}()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-subscribed:
	case <-time.After(10 * time.Second):
		t.Fatal("never subscribed")
	}

	wait := func(st *control.Store, want string) {
		t.Helper()
		testenv.WaitFor(t, "NodePortAddrs "+want, 10*time.Second, func() error {
			if got := st.Take(false).Node.NodePortAddrs; got != want {
				return fmt.Errorf("NodePortAddrs %q", got)
			}
			return nil
		})
	}
	wait(cidrs, "192.0.2.10")
	// No default route: every non-loopback address.
	wait(primary, "192.0.2.10")

	if err := ns.AddrAdd("up0", netip.MustParsePrefix("198.51.100.7/24")); err != nil {
		t.Fatal(err)
	}
	wait(cidrs, "192.0.2.10,198.51.100.7")
	wait(primary, "192.0.2.10,198.51.100.7")

	// A second device holds the default route: primary serves its
	// addresses only.
	up1 := device("up1")
	if err := ns.AddrAdd("up1", netip.MustParsePrefix("203.0.113.5/24")); err != nil {
		t.Fatal(err)
	}
	if err := nl.RouteAdd(&netlink.Route{LinkIndex: up1.Attrs().Index, Gw: netip.MustParseAddr("203.0.113.1").AsSlice()}); err != nil {
		t.Fatal(err)
	}
	wait(primary, "203.0.113.5")

	// An address removed.
	a, _ := netlink.ParseAddr("192.0.2.10/24")
	if err := nl.AddrDel(up0, a); err != nil {
		t.Fatal(err)
	}
	wait(cidrs, "198.51.100.7")
}
