package netlab

import (
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
)

// Veth creates a veth pair with one end, aName, in a and the other, bName,
// in b, both up. Like a CNI plugin, it creates the pair in b and moves aName
// into a, so a (the node) only ever sees its own end appear.
func Veth(a *NS, aName string, b *NS, bName string) error {
	lb := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: bName}, PeerName: aName}
	if err := b.nl.LinkAdd(lb); err != nil {
		return fmt.Errorf("add veth %s/%s in %s: %w", bName, aName, b.Name, err)
	}
	if a != b {
		peer, err := b.nl.LinkByName(aName)
		if err != nil {
			return err
		}
		if err := b.nl.LinkSetNsFd(peer, int(a.handle)); err != nil {
			return fmt.Errorf("move %s to %s: %w", aName, a.Name, err)
		}
	}
	if err := a.up(aName); err != nil {
		return err
	}
	return b.up(bName)
}

func (n *NS) up(name string) error {
	l, err := n.nl.LinkByName(name)
	if err != nil {
		return fmt.Errorf("%s in %s: %w", name, n.Name, err)
	}
	return n.nl.LinkSetUp(l)
}

// LoopbackUp brings lo up.
func (n *NS) LoopbackUp() error { return n.up("lo") }

// AddrAdd assigns an address with prefix ("10.244.1.2/24") to a device.
func (n *NS) AddrAdd(dev string, p netip.Prefix) error {
	l, err := n.nl.LinkByName(dev)
	if err != nil {
		return fmt.Errorf("%s in %s: %w", dev, n.Name, err)
	}
	a := &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}}
	if err := n.nl.AddrAdd(l, a); err != nil {
		return fmt.Errorf("address %s on %s in %s: %w", p, dev, n.Name, err)
	}
	return nil
}

// DefaultRoute routes everything via gw.
func (n *NS) DefaultRoute(gw netip.Addr) error {
	r := &netlink.Route{Gw: gw.AsSlice()}
	if err := n.nl.RouteReplace(r); err != nil {
		return fmt.Errorf("default route via %s in %s: %w", gw, n.Name, err)
	}
	return nil
}

// WaitUp waits until the device reports carrier (operstate up), so the first
// frame sent is not lost while the kernel swaps in the device's qdisc.
func (n *NS) WaitUp(dev string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		l, err := n.nl.LinkByName(dev)
		if err == nil && l.Attrs().OperState == netlink.OperUp {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s in %s not up after %s", dev, n.Name, timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Bridge creates a Linux bridge, up.
func (n *NS) Bridge(name string) error {
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}
	if err := n.nl.LinkAdd(br); err != nil {
		return fmt.Errorf("add bridge %s in %s: %w", name, n.Name, err)
	}
	return n.up(name)
}

// SetMaster makes dev a port of the bridge master.
func (n *NS) SetMaster(dev, master string) error {
	l, err := n.nl.LinkByName(dev)
	if err != nil {
		return fmt.Errorf("%s in %s: %w", dev, n.Name, err)
	}
	m, err := n.nl.LinkByName(master)
	if err != nil {
		return fmt.Errorf("%s in %s: %w", master, n.Name, err)
	}
	if err := n.nl.LinkSetMaster(l, m); err != nil {
		return fmt.Errorf("%s into %s in %s: %w", dev, master, n.Name, err)
	}
	return nil
}

// RouteVia routes dst via gw.
func (n *NS) RouteVia(dst netip.Prefix, gw netip.Addr) error {
	r := &netlink.Route{Dst: ipNet(dst), Gw: gw.AsSlice()}
	if err := n.nl.RouteReplace(r); err != nil {
		return fmt.Errorf("route %s via %s in %s: %w", dst, gw, n.Name, err)
	}
	return nil
}

// RouteDev routes dst straight out of dev (scope link), as a CNI plugin
// routes a pod's address to its veth.
func (n *NS) RouteDev(dst netip.Prefix, dev string) error {
	l, err := n.nl.LinkByName(dev)
	if err != nil {
		return fmt.Errorf("%s in %s: %w", dev, n.Name, err)
	}
	r := &netlink.Route{Dst: ipNet(dst), LinkIndex: l.Attrs().Index, Scope: netlink.SCOPE_LINK}
	if err := n.nl.RouteReplace(r); err != nil {
		return fmt.Errorf("route %s dev %s in %s: %w", dst, dev, n.Name, err)
	}
	return nil
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}
