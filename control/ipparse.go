package control

import (
	"net/netip"
	"strconv"
	"strings"
)

// parseIPSloppy parses an address the way Kubernetes' API validation
// historically accepted it (rule 6): surrounding spaces are trimmed and IPv4
// octets may carry leading zeros, read as decimal ("10.180.00.001" is
// 10.180.0.1). A CIDR yields its address part.
func parseIPSloppy(s string) (netip.Addr, bool) {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '/'); i >= 0 {
		s = s[:i]
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap(), true
	}
	parts := strings.Split(s, ".")
	if len(parts) != 4 {
		return netip.Addr{}, false
	}
	var b [4]byte
	for i, p := range parts {
		if p == "" {
			return netip.Addr{}, false
		}
		n, err := strconv.ParseUint(p, 10, 8)
		if err != nil {
			return netip.Addr{}, false
		}
		b[i] = byte(n)
	}
	return netip.AddrFrom4(b), true
}
