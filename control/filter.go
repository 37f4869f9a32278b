package control

import (
	"math/bits"

	"github.com/sluice-lb/sluice/bpf"
)

// The prefilter bitmap (struct lb4_filter, bpf/lib/filter.h). These hashes
// must equal the datapath's: a bit set here for a service IP or backend is
// the bit the datapath tests for a packet to or from it. The datapath
// tests catch any drift, since every translated packet depends on it.

var filterLog2 = bits.TrailingZeros(uint(len(bpf.SluiceLb4Filter{}.Words) * 64))

func filterMix(x uint32) uint32 {
	x *= 0x9E3779B1
	x ^= x >> 15
	x *= 0x85EBCA6B
	return x >> (32 - filterLog2)
}

// filterDst is the bit of a service IP, given as its __be32 map value.
func filterDst(addr uint32) uint32 { return filterMix(addr) }

// filterSrc is the bit of a backend: __be32 address, __be16 port, protocol.
func filterSrc(addr uint32, port uint16, proto uint8) uint32 {
	return filterMix(addr ^ (uint32(port)<<16 | uint32(proto) | 0x100))
}

func filterSet(f *bpf.SluiceLb4Filter, bit uint32) {
	f.Words[bit>>6] |= 1 << (bit & 63)
}
