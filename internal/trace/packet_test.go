package trace

import "testing"

func TestParseTCPFlags(t *testing.T) {
	for _, c := range []struct {
		in   string
		want uint8
		ok   bool
	}{
		{"S", tcpSyn, true}, {"SA", tcpSyn | tcpAck, true}, {"as", tcpSyn | tcpAck, true},
		{"FA", tcpFin | tcpAck, true}, {"R", tcpRst, true}, {"PA", tcpPsh | tcpAck, true},
		{"", 0, true}, {"X", 0, false}, {"S A", 0, false},
	} {
		got, err := ParseTCPFlags(c.in)
		if (err == nil) != c.ok || got != c.want {
			t.Errorf("ParseTCPFlags(%q) = %#x, %v; want %#x, ok %v", c.in, got, err, c.want, c.ok)
		}
		if c.ok && c.in != "" && FormatTCPFlags(got) == "" {
			t.Errorf("FormatTCPFlags(%#x) is empty", got)
		}
	}
}

func TestParsePacket(t *testing.T) {
	p, err := ParsePacket("tcp", "10.244.0.2:40000", "10.96.0.10:80")
	if err != nil || p.Proto != ProtoTCP || p.TCPFlags != tcpSyn || p.Dst.Port() != 80 {
		t.Errorf("tcp packet: %+v, %v", p, err)
	}
	if p, err := ParsePacket("UDP", "10.244.0.2:1", "10.96.0.10:53"); err != nil || p.Proto != ProtoUDP || p.TCPFlags != 0 {
		t.Errorf("udp packet: %+v, %v", p, err)
	}
	for _, bad := range [][3]string{
		{"icmp", "10.0.0.1:1", "10.0.0.2:2"},
		{"tcp", "10.0.0.1", "10.0.0.2:2"},
		{"tcp", "10.0.0.1:1", "[fd00::1]:80"},
	} {
		if _, err := ParsePacket(bad[0], bad[1], bad[2]); err == nil {
			t.Errorf("ParsePacket(%q) accepted", bad)
		}
	}
}
