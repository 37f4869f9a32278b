package trace

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/sluice-lb/sluice/internal/packet"
)

// Protocols a Packet may have.
const (
	ProtoTCP = packet.ProtoTCP
	ProtoUDP = packet.ProtoUDP
)

// TCP flags as the header has them.
const (
	tcpFin = 0x01
	tcpSyn = 0x02
	tcpRst = 0x04
	tcpPsh = 0x08
	tcpAck = 0x10
)

var flagLetters = []struct {
	letter byte
	bit    uint8
}{{'S', tcpSyn}, {'A', tcpAck}, {'F', tcpFin}, {'R', tcpRst}, {'P', tcpPsh}}

// ParseTCPFlags reads flags written as letters: S (SYN), A (ACK), F (FIN),
// R (RST), P (PSH), in any order: "S", "SA", "FA", "R".
func ParseTCPFlags(s string) (uint8, error) {
	var f uint8
	for i := 0; i < len(s); i++ {
		ok := false
		for _, l := range flagLetters {
			if s[i] == l.letter || s[i] == l.letter+'a'-'A' {
				f |= l.bit
				ok = true
			}
		}
		if !ok {
			return 0, fmt.Errorf("tcp flag %q: want letters of S, A, F, R, P", s[i])
		}
	}
	return f, nil
}

// FormatTCPFlags is the inverse of ParseTCPFlags.
func FormatTCPFlags(f uint8) string {
	var b strings.Builder
	for _, l := range flagLetters {
		if f&l.bit != 0 {
			b.WriteByte(l.letter)
		}
	}
	return b.String()
}

// Packet is what to trace: a TCP segment or UDP datagram between two
// IPv4 endpoints.
type Packet struct {
	Proto    uint8 // packet.ProtoTCP or packet.ProtoUDP
	Src, Dst netip.AddrPort
	TCPFlags uint8 // TCP only
	Size     int   // payload bytes
}

// ParsePacket reads PROTO SRC DST ("tcp", "10.244.0.2:40000", "10.96.0.10:80").
func ParsePacket(proto, src, dst string) (Packet, error) {
	p := Packet{}
	switch strings.ToLower(proto) {
	case "tcp":
		p.Proto = packet.ProtoTCP
		p.TCPFlags = tcpSyn
	case "udp":
		p.Proto = packet.ProtoUDP
	default:
		return p, fmt.Errorf("protocol %q: want tcp or udp", proto)
	}
	var err error
	if p.Src, err = parseEndpoint(src); err != nil {
		return p, fmt.Errorf("source: %w", err)
	}
	if p.Dst, err = parseEndpoint(dst); err != nil {
		return p, fmt.Errorf("destination: %w", err)
	}
	return p, nil
}

func parseEndpoint(s string) (netip.AddrPort, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return ap, err
	}
	if !ap.Addr().Is4() {
		return ap, fmt.Errorf("%s: the datapath translates IPv4 only", s)
	}
	return ap, nil
}

// Frame builds the Ethernet frame the programs are run on.
func (p Packet) Frame() []byte {
	return packet.Build(packet.Spec{
		Src: p.Src, Dst: p.Dst, Proto: p.Proto, TCPFlags: p.TCPFlags,
		Payload: make([]byte, p.Size),
	})
}

func (p Packet) tuple() Tuple {
	t := Tuple{Proto: protoName(p.Proto), Src: p.Src.String(), Dst: p.Dst.String()}
	if p.Proto == packet.ProtoTCP {
		t.Flags = FormatTCPFlags(p.TCPFlags)
	}
	return t
}

func protoName(p uint8) string {
	switch p {
	case packet.ProtoTCP:
		return "tcp"
	case packet.ProtoUDP:
		return "udp"
	case packet.ProtoICMP:
		return "icmp"
	}
	return fmt.Sprintf("proto-%d", p)
}
