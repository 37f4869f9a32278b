package maps

import (
	"encoding/binary"
	"net/netip"
)

// The datapath keeps addresses and ports in network byte order (__be32,
// __be16) while the generated Go fields are plain integers written in host
// order. These convert so that the bytes in the map are the wire bytes.

// Addr4 returns the __be32 field value for an IPv4 address.
func Addr4(a netip.Addr) uint32 {
	b := a.As4()
	return binary.NativeEndian.Uint32(b[:])
}

// AddrFrom4 is the inverse of Addr4.
func AddrFrom4(v uint32) netip.Addr {
	var b [4]byte
	binary.NativeEndian.PutUint32(b[:], v)
	return netip.AddrFrom4(b)
}

// Port returns the __be16 field value for a port number.
func Port(p uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], p)
	return binary.NativeEndian.Uint16(b[:])
}

// PortFrom is the inverse of Port.
func PortFrom(v uint16) uint16 {
	var b [2]byte
	binary.NativeEndian.PutUint16(b[:], v)
	return binary.BigEndian.Uint16(b[:])
}
