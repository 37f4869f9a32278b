package packet

import (
	"encoding/binary"
	"errors"
	"net/netip"
)

// ICMP error types and codes the datapath translates.
const (
	ICMPDestUnreach  = 3
	ICMPTimeExceeded = 11
	ICMPParamProblem = 12

	ICMPPortUnreach = 3 // code of ICMPDestUnreach
	ICMPFragNeeded  = 4 // code of ICMPDestUnreach; the next-hop MTU in the low 16 bits of rest
)

// ICMPError describes an ICMP error message to build.
type ICMPError struct {
	Src, Dst   netip.Addr
	Type, Code uint8
	Rest       uint32 // the header's second word: next-hop MTU, parameter pointer, or unused
	Quote      []byte // the head of the offending IP datagram, as its sender's peer saw it
}

// Quoting returns the first n bytes of a frame's IP datagram (all of it if
// it is shorter), the part of it an ICMP error quotes: routers quote the IP
// header and 8 bytes, Linux hosts as much as fits in 576 bytes.
func Quoting(frame []byte, n int) []byte {
	ip := frame[14:]
	if n > len(ip) {
		n = len(ip)
	}
	return append([]byte(nil), ip[:n]...)
}

// BuildICMPError returns an Ethernet frame carrying the error, with its
// IPv4 and ICMP checksums right.
func BuildICMPError(e ICMPError) []byte {
	msg := make([]byte, 8+len(e.Quote))
	msg[0], msg[1] = e.Type, e.Code
	binary.BigEndian.PutUint32(msg[4:], e.Rest)
	copy(msg[8:], e.Quote)
	binary.BigEndian.PutUint16(msg[2:], Checksum(msg))

	f := make([]byte, 14+20+len(msg))
	copy(f[0:6], NodeMAC[:])
	copy(f[6:12], ClientMAC[:])
	binary.BigEndian.PutUint16(f[12:], EtherTypeIPv4)
	ip := f[14:34]
	ip[0] = 0x45
	ip[1] = 0xc0
	binary.BigEndian.PutUint16(ip[2:], uint16(20+len(msg)))
	ip[8] = 64
	ip[9] = ProtoICMP
	src, dst := e.Src.As4(), e.Dst.As4()
	copy(ip[12:], src[:])
	copy(ip[16:], dst[:])
	binary.BigEndian.PutUint16(ip[10:], Checksum(ip))
	copy(f[34:], msg)
	return f
}

// Quoted is the datagram head an ICMP error quotes.
type Quoted struct {
	IP               []byte // its IPv4 header
	L4               []byte // the rest of the quote
	Src, Dst         netip.Addr
	Proto            uint8
	SrcPort, DstPort uint16
}

// Quote parses the quote of an ICMP error frame.
func (f *Frame) Quote() (*Quoted, error) {
	if f.Proto != ProtoICMP || len(f.L4) < 8+20 {
		return nil, errors.New("no ICMP error with a quoted IPv4 header")
	}
	b := f.L4[8:]
	ihl := int(b[0]&0x0f) * 4
	if b[0]>>4 != 4 || ihl < 20 || len(b) < ihl+4 {
		return nil, errors.New("bad quoted IPv4 header")
	}
	q := &Quoted{IP: b[:ihl], L4: b[ihl:], Proto: b[9]}
	q.Src = netip.AddrFrom4([4]byte(b[12:16]))
	q.Dst = netip.AddrFrom4([4]byte(b[16:20]))
	q.SrcPort = binary.BigEndian.Uint16(q.L4[0:])
	q.DstPort = binary.BigEndian.Uint16(q.L4[2:])
	return q, nil
}

// IPChecksumOK verifies the quoted IPv4 header checksum.
func (q *Quoted) IPChecksumOK() bool { return Checksum(q.IP) == 0 }
