package maps

import (
	"net/netip"

	"github.com/sluice-lb/sluice/bpf"
)

// SourceRangeKey is the lb4_source_ranges key of one allowed source CIDR
// of the frontend with reverse-NAT id revNat: the trie's prefix covers the
// 32 bits of the id, then the CIDR's own bits, so one longest-prefix
// lookup of (id, source) finds whether any range of that frontend holds
// the source. p must be IPv4; it is masked.
func SourceRangeKey(revNat uint32, p netip.Prefix) bpf.SluiceLb4SrcRangeKey {
	p = p.Masked()
	return bpf.SluiceLb4SrcRangeKey{
		Prefixlen: 32 + uint32(p.Bits()),
		RevNatId:  revNat,
		Addr:      Addr4(p.Addr()),
	}
}

// SourceRangeFrom is the inverse of SourceRangeKey. ok is false for a key
// SourceRangeKey cannot have made (a prefix length outside 32..64).
func SourceRangeFrom(k bpf.SluiceLb4SrcRangeKey) (revNat uint32, p netip.Prefix, ok bool) {
	if k.Prefixlen < 32 || k.Prefixlen > 64 {
		return 0, netip.Prefix{}, false
	}
	return k.RevNatId, netip.PrefixFrom(AddrFrom4(k.Addr), int(k.Prefixlen-32)).Masked(), true
}
