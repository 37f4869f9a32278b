// Package packet builds and parses the Ethernet/IPv4/TCP/UDP/ICMP frames
// the datapath tests feed through BPF_PROG_TEST_RUN, and checks their
// checksums with its own RFC 1071 arithmetic, independently of the kernel.
package packet

import (
	"encoding/binary"
	"errors"
	"net/netip"
)

const (
	ProtoICMP = 1
	ProtoTCP  = 6
	ProtoUDP  = 17

	EtherTypeIPv4 = 0x0800
	EtherTypeARP  = 0x0806

	TCPSyn = 0x02
	TCPAck = 0x10
)

var (
	ClientMAC = [6]byte{0x02, 0, 0, 0, 0, 0x01}
	NodeMAC   = [6]byte{0x02, 0, 0, 0, 0, 0x02}
)

// Spec describes a frame to build. Zero values give sane defaults.
type Spec struct {
	Src, Dst   netip.AddrPort
	Proto      uint8
	TCPFlags   uint8
	Payload    []byte
	FragOff    uint16 // flags+offset field as on the wire (0x2000 = MF)
	ID         uint16 // IPv4 identification; 0 gives 0x1234
	IPOptions  []byte // multiple of 4 bytes
	ZeroUDPSum bool   // send UDP without a checksum
}

// Build returns an Ethernet frame with correct IP and L4 checksums.
func Build(s Spec) []byte {
	ihl := 20 + len(s.IPOptions)
	var l4 []byte
	switch s.Proto {
	case ProtoTCP:
		l4 = make([]byte, 20+len(s.Payload))
		binary.BigEndian.PutUint16(l4[0:], s.Src.Port())
		binary.BigEndian.PutUint16(l4[2:], s.Dst.Port())
		binary.BigEndian.PutUint32(l4[4:], 0x01020304)
		l4[12] = 5 << 4
		l4[13] = s.TCPFlags
		binary.BigEndian.PutUint16(l4[14:], 64240)
		copy(l4[20:], s.Payload)
	case ProtoUDP:
		l4 = make([]byte, 8+len(s.Payload))
		binary.BigEndian.PutUint16(l4[0:], s.Src.Port())
		binary.BigEndian.PutUint16(l4[2:], s.Dst.Port())
		binary.BigEndian.PutUint16(l4[4:], uint16(len(l4)))
		copy(l4[8:], s.Payload)
	default:
		l4 = append([]byte{8, 0, 0, 0, 0, 1, 0, 1}, s.Payload...) // ICMP echo
	}
	f := make([]byte, 14+ihl+len(l4))
	copy(f[0:6], NodeMAC[:])
	copy(f[6:12], ClientMAC[:])
	binary.BigEndian.PutUint16(f[12:], EtherTypeIPv4)
	ip := f[14 : 14+ihl]
	ip[0] = 0x40 | byte(ihl/4)
	binary.BigEndian.PutUint16(ip[2:], uint16(ihl+len(l4)))
	id := s.ID
	if id == 0 {
		id = 0x1234
	}
	binary.BigEndian.PutUint16(ip[4:], id)
	binary.BigEndian.PutUint16(ip[6:], s.FragOff)
	ip[8] = 64
	ip[9] = s.Proto
	src, dst := s.Src.Addr().As4(), s.Dst.Addr().As4()
	copy(ip[12:], src[:])
	copy(ip[16:], dst[:])
	copy(ip[20:], s.IPOptions)
	binary.BigEndian.PutUint16(ip[10:], Checksum(ip))
	copy(f[14+ihl:], l4)
	l4 = f[14+ihl:]
	switch s.Proto {
	case ProtoTCP:
		binary.BigEndian.PutUint16(l4[16:], l4Checksum(ip, l4))
	case ProtoUDP:
		if !s.ZeroUDPSum {
			c := l4Checksum(ip, l4)
			if c == 0 {
				c = 0xffff
			}
			binary.BigEndian.PutUint16(l4[6:], c)
		}
	default:
		binary.BigEndian.PutUint16(l4[2:], Checksum(l4))
	}
	return f
}

// Checksum is the Internet checksum of the concatenated data.
func Checksum(data ...[]byte) uint16 {
	return ^fold(sum(0, data...))
}

func sum(s uint32, data ...[]byte) uint32 {
	var odd []byte
	for _, d := range data {
		if len(odd) > 0 {
			d = append(odd, d...)
			odd = nil
		}
		for len(d) >= 2 {
			s += uint32(binary.BigEndian.Uint16(d))
			d = d[2:]
		}
		if len(d) == 1 {
			odd = []byte{d[0]}
		}
	}
	if len(odd) == 1 {
		s += uint32(odd[0]) << 8
	}
	return s
}

func fold(s uint32) uint16 {
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}

func pseudoHeader(ip []byte, l4len int) []byte {
	p := make([]byte, 12)
	copy(p[0:8], ip[12:20])
	p[9] = ip[9]
	binary.BigEndian.PutUint16(p[10:], uint16(l4len))
	return p
}

// l4Checksum computes a TCP/UDP checksum with the checksum field zeroed.
func l4Checksum(ip, l4 []byte) uint16 {
	c := make([]byte, len(l4))
	copy(c, l4)
	off := 16
	if ip[9] == ProtoUDP {
		off = 6
	}
	c[off], c[off+1] = 0, 0
	return Checksum(pseudoHeader(ip, len(l4)), c)
}

// Frame is a parsed Ethernet/IPv4 frame.
type Frame struct {
	DstMAC, SrcMAC [6]byte
	EtherType      uint16
	IP             []byte // IPv4 header, options included
	L4             []byte // everything after the IP header, up to tot_len
	Src, Dst       netip.Addr
	Proto          uint8
	SrcPort        uint16 // TCP/UDP only
	DstPort        uint16
}

// Parse decodes an IPv4 frame.
func Parse(b []byte) (*Frame, error) {
	if len(b) < 34 {
		return nil, errors.New("frame too short for IPv4")
	}
	f := &Frame{EtherType: binary.BigEndian.Uint16(b[12:])}
	copy(f.DstMAC[:], b[0:6])
	copy(f.SrcMAC[:], b[6:12])
	if f.EtherType != EtherTypeIPv4 {
		return nil, errors.New("not IPv4")
	}
	ihl := int(b[14]&0x0f) * 4
	tot := int(binary.BigEndian.Uint16(b[16:]))
	if ihl < 20 || 14+tot > len(b) || tot < ihl {
		return nil, errors.New("bad IPv4 header")
	}
	f.IP = b[14 : 14+ihl]
	f.L4 = b[14+ihl : 14+tot]
	f.Src = netip.AddrFrom4([4]byte(f.IP[12:16]))
	f.Dst = netip.AddrFrom4([4]byte(f.IP[16:20]))
	f.Proto = f.IP[9]
	if (f.Proto == ProtoTCP || f.Proto == ProtoUDP) && len(f.L4) >= 4 {
		f.SrcPort = binary.BigEndian.Uint16(f.L4[0:])
		f.DstPort = binary.BigEndian.Uint16(f.L4[2:])
	}
	return f, nil
}

// IPChecksumOK verifies the IPv4 header checksum.
func (f *Frame) IPChecksumOK() bool { return Checksum(f.IP) == 0 }

// L4ChecksumOK verifies the TCP, UDP or ICMP checksum. A zero UDP checksum
// ("none") is reported as ok.
func (f *Frame) L4ChecksumOK() bool {
	switch f.Proto {
	case ProtoTCP:
		return Checksum(pseudoHeader(f.IP, len(f.L4)), f.L4) == 0
	case ProtoUDP:
		if binary.BigEndian.Uint16(f.L4[6:]) == 0 {
			return true
		}
		return Checksum(pseudoHeader(f.IP, len(f.L4)), f.L4) == 0
	}
	return Checksum(f.L4) == 0
}

// UDPChecksum returns the UDP checksum field.
func (f *Frame) UDPChecksum() uint16 { return binary.BigEndian.Uint16(f.L4[6:]) }
