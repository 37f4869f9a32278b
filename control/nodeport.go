package control

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// NodePortAddresses is the IPv4 addresses NodePorts are served on (rule
// 18), sorted and unique, for NodeInfo.NodePortAddrs. flag is
// --nodeport-addresses: "" or "primary" means the node's IPv4
// InternalIPs; otherwise it is a comma-separated list of CIDRs (parsed
// leniently, rule 6) and every local IPv4 address inside one of them
// serves NodePorts. With no IPv4 CIDR in the list (an IPv6-only list),
// the primary addresses serve, as kube-proxy does for a family the list
// does not name. Loopback addresses (127.0.0.0/8) serve only through a
// CIDR inside 127.0.0.0/8: 0.0.0.0/0 means every address of the node's
// interfaces, not its loopback, since a NodePort on 127.0.0.1 would be
// open to every local process and kube-proxy's nftables mode, the
// reference, never serves it. An unparsable CIDR, or "primary" next to
// CIDRs, is an error naming it.
func NodePortAddresses(flag string, internalIPs []netip.Addr, local []netip.Addr) (addrs []netip.Addr, err error) {
	flag = strings.TrimSpace(flag)
	if flag == "" || flag == "primary" {
		return primaryAddrs(internalIPs), nil
	}
	var cidrs []netip.Prefix
	for f := range strings.SplitSeq(flag, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if f == "primary" {
			return nil, fmt.Errorf("--nodeport-addresses %q: \"primary\" cannot be combined with CIDRs", flag)
		}
		p, ok := parseCIDRSloppy(f)
		if !ok {
			return nil, fmt.Errorf("--nodeport-addresses: %q is not a CIDR", f)
		}
		if p.Addr().Is4() {
			cidrs = append(cidrs, p)
		}
	}
	if len(cidrs) == 0 {
		return primaryAddrs(internalIPs), nil
	}
	loopback := netip.MustParsePrefix("127.0.0.0/8")
	for _, a := range local {
		a = a.Unmap()
		if !a.Is4() {
			continue
		}
		if slices.ContainsFunc(cidrs, func(p netip.Prefix) bool {
			return p.Contains(a) && (!loopback.Contains(a) || (p.Bits() >= loopback.Bits() && loopback.Contains(p.Addr())))
		}) {
			addrs = append(addrs, a)
		}
	}
	return sortedUnique(addrs), nil
}

// primaryAddrs: the IPv4 InternalIPs, never loopback ones (rule 18).
func primaryAddrs(internalIPs []netip.Addr) []netip.Addr {
	var out []netip.Addr
	for _, a := range internalIPs {
		if a = a.Unmap(); a.Is4() && !a.IsLoopback() {
			out = append(out, a)
		}
	}
	return sortedUnique(out)
}
