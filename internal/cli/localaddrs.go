package cli

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// netlinkAddrs is the addrLister of a network namespace, and its
// subscription to changes.
type netlinkAddrs struct {
	nl *netlink.Handle
	// ns is the namespace to subscribe in; nil: the agent's.
	ns *netns.NsHandle
}

// agentAddrs lists the addresses of the agent's network namespace.
func agentAddrs() netlinkAddrs { return netlinkAddrs{nl: &netlink.Handle{}} }

func (n netlinkAddrs) Local() ([]netip.Addr, error) {
	list, err := n.nl.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("list the node's addresses: %w", err)
	}
	return ipv4Of(list), nil
}

func (n netlinkAddrs) DefaultRoute() ([]netip.Addr, string, error) {
	routes, err := n.nl.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		return nil, "", fmt.Errorf("list the node's routes: %w", err)
	}
	// Of several default routes, the one the kernel prefers: the lowest
	// metric.
	var best *netlink.Route
	for i, r := range routes {
		if isDefault(r) && r.LinkIndex > 0 && (best == nil || r.Priority < best.Priority) {
			best = &routes[i]
		}
	}
	if best == nil {
		return nil, "", nil
	}
	link, err := n.nl.LinkByIndex(best.LinkIndex)
	if err != nil {
		return nil, "", fmt.Errorf("the default route's device %d: %w", best.LinkIndex, err)
	}
	list, err := n.nl.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		return nil, "", fmt.Errorf("list the addresses of %s: %w", link.Attrs().Name, err)
	}
	return ipv4Of(list), link.Attrs().Name, nil
}

func isDefault(r netlink.Route) bool {
	if r.Dst == nil {
		return true
	}
	ones, _ := r.Dst.Mask.Size()
	return ones == 0
}

func ipv4Of(list []netlink.Addr) []netip.Addr {
	var out []netip.Addr
	for _, a := range list {
		if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap().Is4() {
			out = append(out, ip.Unmap())
		}
	}
	return out
}

// watch calls changed after every change of the namespace's IPv4
// addresses or default routes (the fallback of primary follows the default
// route), until ctx ends, and once as soon as it is subscribed, for the
// changes made before. A subscription that fails is made again after a
// pause, and changed called again for what it may have missed.
func (n netlinkAddrs) watch(ctx context.Context, log *slog.Logger, changed func()) {
	for ctx.Err() == nil {
		err := n.subscribe(ctx, changed)
		if ctx.Err() != nil {
			return
		}
		log.Warn("watching the node's addresses failed; subscribing again", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

// subscribe runs one address and route subscription until ctx ends (nil)
// or it fails.
func (n netlinkAddrs) subscribe(ctx context.Context, changed func()) error {
	done := make(chan struct{})
	defer close(done)
	errc := make(chan error, 2)
	report := func(err error) {
		select {
		case errc <- err:
		default:
		}
	}
	addrs := make(chan netlink.AddrUpdate, 64)
	if err := netlink.AddrSubscribeWithOptions(addrs, done, netlink.AddrSubscribeOptions{Namespace: n.ns, ErrorCallback: report}); err != nil {
		return fmt.Errorf("subscribe to address changes: %w", err)
	}
	routes := make(chan netlink.RouteUpdate, 64)
	if err := netlink.RouteSubscribeWithOptions(routes, done, netlink.RouteSubscribeOptions{Namespace: n.ns, ErrorCallback: report}); err != nil {
		return fmt.Errorf("subscribe to route changes: %w", err)
	}
	changed()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-errc:
			return err
		case u, ok := <-addrs:
			if !ok {
				return fmt.Errorf("address subscription closed")
			}
			if u.LinkAddress.IP.To4() != nil {
				changed()
			}
		case u, ok := <-routes:
			if !ok {
				return fmt.Errorf("route subscription closed")
			}
			if u.Family == unix.AF_INET && isDefault(u.Route) {
				changed()
			}
		}
	}
}
