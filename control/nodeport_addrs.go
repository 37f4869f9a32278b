package control

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// NodePortAddresses is the set of addresses NodePorts are served on (rule
// 18), sorted and unique, from the --nodeport-addresses flag: "primary"
// (or empty) gives internalIPs (the Node's InternalIPs); a comma separated
// list of CIDRs gives the local addresses inside any of them, a loopback
// address only when a CIDR inside 127.0.0.0/8 names it (0.0.0.0/0 does not).
//
// A small stand-in, replaced by the desired state's own.
func NodePortAddresses(flag string, internalIPs, local []netip.Addr) ([]netip.Addr, error) {
	var out []netip.Addr
	if flag == "" || flag == "primary" {
		for _, a := range internalIPs {
			if a = a.Unmap(); a.IsValid() {
				out = append(out, a)
			}
		}
	} else {
		var cidrs []netip.Prefix
		for _, f := range strings.Split(flag, ",") {
			p, err := netip.ParsePrefix(strings.TrimSpace(f))
			if err != nil {
				return nil, fmt.Errorf("--nodeport-addresses %q: %q is neither a CIDR nor primary", flag, f)
			}
			cidrs = append(cidrs, p.Masked())
		}
		for _, a := range local {
			a = a.Unmap()
			for _, p := range cidrs {
				names := !a.IsLoopback() || (p.Bits() >= 8 && p.Addr().IsLoopback())
				if names && p.Contains(a) {
					out = append(out, a)
					break
				}
			}
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out), nil
}
