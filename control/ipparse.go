package control

import (
	"net/netip"
	"strings"

	netutils "k8s.io/utils/net"
)

// parseIPSloppy parses an address the way Kubernetes' API validation
// historically accepted it (rule 6), with k8s.io/utils' parser: IPv4
// octets may carry leading zeros, read as decimal ("10.180.00.001" is
// 10.180.0.1). Surrounding spaces are trimmed; a CIDR yields its address
// part.
func parseIPSloppy(s string) (netip.Addr, bool) {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '/'); i >= 0 {
		s = s[:i]
	}
	ip := netutils.ParseIPSloppy(s)
	if ip == nil {
		return netip.Addr{}, false
	}
	a, ok := netip.AddrFromSlice(ip)
	return a.Unmap(), ok
}
