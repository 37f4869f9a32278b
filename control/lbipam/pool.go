// Package lbipam gives Services of type LoadBalancer an address from a pool
// of the operator's (LB-IPAM) and announces those addresses on the node's
// link (L2 announcement, ARP), for clusters without a cloud load balancer.
//
// The allocator (Allocate) and the choice of the announcing node (Rank)
// are pure functions; Controller (one elected agent) and Announcer (every
// agent) are the thin parts that read the API server and act.
package lbipam

import (
	"fmt"
	"net/netip"
	"strings"
)

// Pool is the addresses LB-IPAM gives out: IPv4 CIDRs, in the order given.
type Pool struct {
	Prefixes []netip.Prefix
}

// ParsePool parses --lb-ip-pool: comma-separated IPv4 CIDRs. Empty is the
// empty pool (the feature off). Overlapping CIDRs are refused: an address
// would be counted twice.
func ParsePool(s string) (Pool, error) {
	var p Pool
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		pfx, err := netip.ParsePrefix(f)
		if err != nil || !pfx.Addr().Is4() {
			return Pool{}, fmt.Errorf("--lb-ip-pool %q: %q is not an IPv4 CIDR", s, f)
		}
		pfx = pfx.Masked()
		for _, q := range p.Prefixes {
			if q.Overlaps(pfx) {
				return Pool{}, fmt.Errorf("--lb-ip-pool %q: %s overlaps %s", s, pfx, q)
			}
		}
		p.Prefixes = append(p.Prefixes, pfx)
	}
	return p, nil
}

// Empty reports whether the pool has no CIDR.
func (p Pool) Empty() bool { return len(p.Prefixes) == 0 }

func (p Pool) String() string {
	s := make([]string, len(p.Prefixes))
	for i, q := range p.Prefixes {
		s[i] = q.String()
	}
	return strings.Join(s, ",")
}

// Contains reports whether a lies in one of the pool's CIDRs (usable or
// not).
func (p Pool) Contains(a netip.Addr) bool {
	for _, q := range p.Prefixes {
		if q.Contains(a) {
			return true
		}
	}
	return false
}

// Usable reports whether a may be given out: in the pool and, in a CIDR of
// /30 or wider, neither its network nor its broadcast address (hosts on
// the link treat those as the subnet's own). A /31 or /32 has no such
// addresses (RFC 3021).
func (p Pool) Usable(a netip.Addr) bool {
	for _, q := range p.Prefixes {
		if q.Contains(a) {
			return q.Bits() > 30 || (a != q.Addr() && a != lastAddr(q))
		}
	}
	return false
}

// each calls fn on every usable address in pool order until it returns
// false.
func (p Pool) each(fn func(netip.Addr) bool) {
	for _, q := range p.Prefixes {
		last := lastAddr(q)
		a := q.Addr()
		for {
			if p.Usable(a) && !fn(a) {
				return
			}
			if a == last {
				break
			}
			a = a.Next()
		}
	}
}

// size is the number of usable addresses.
func (p Pool) size() int {
	n := 0
	for _, q := range p.Prefixes {
		c := 1 << (32 - q.Bits())
		if q.Bits() <= 30 {
			c -= 2
		}
		n += c
	}
	return n
}

func lastAddr(q netip.Prefix) netip.Addr {
	b := q.Addr().As4()
	host := ^uint32(0) >> q.Bits()
	if q.Bits() == 0 {
		host = ^uint32(0)
	}
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}
