package bpf_test

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/sluice-lb/sluice/bpf"
	"github.com/sluice-lb/sluice/maps"
)

// BPF_PROG_TEST_RUN runs a tc program on the loopback device of the
// test's namespace: the ifindex ARP requests "arrive on".
const testRunIfindex = 1

var (
	announcedIP  = netip.MustParseAddr("192.168.50.200")
	announcedMAC = [6]byte{0x02, 0x51, 0x1c, 0xe0, 0x00, 0x01}
	requesterIP  = netip.MustParseAddr("192.168.50.100")
	requesterMAC = [6]byte{0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee}
)

// arpFrame is an ARP packet for IPv4 over Ethernet, padded as a minimal
// Ethernet frame is on the wire.
func arpFrame(op uint16, dst, sha [6]byte, sip netip.Addr, tha [6]byte, tip netip.Addr) []byte {
	b := make([]byte, 0, 60)
	b = append(b, dst[:]...)
	b = append(b, sha[:]...)
	b = binary.BigEndian.AppendUint16(b, 0x0806)
	b = binary.BigEndian.AppendUint16(b, 1)      // Ethernet
	b = binary.BigEndian.AppendUint16(b, 0x0800) // IPv4
	b = append(b, 6, 4)
	b = binary.BigEndian.AppendUint16(b, op)
	b = append(b, sha[:]...)
	b = append(b, sip.AsSlice()...)
	b = append(b, tha[:]...)
	b = append(b, tip.AsSlice()...)
	return append(b, make([]byte, 60-len(b))...)
}

var broadcast = [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

func TestARPAnnounce(t *testing.T) {
	w := newWorld(t)
	m := maps.New[bpf.SluiceL2Announce4Key, bpf.SluiceL2Announce4](w.objs.L2Announce4)
	for _, k := range []bpf.SluiceL2Announce4Key{
		{Ifindex: testRunIfindex, Addr: maps.Addr4(announcedIP)},
		// Announced on another device only: not answered here.
		{Ifindex: testRunIfindex + 100, Addr: maps.Addr4(netip.MustParseAddr("192.168.50.201"))},
	} {
		if err := m.Put(k, bpf.SluiceL2Announce4{Mac: announcedMAC}); err != nil {
			t.Fatal(err)
		}
	}
	request := arpFrame(1, broadcast, requesterMAC, requesterIP, [6]byte{}, announcedIP)
	reply := arpFrame(2, requesterMAC, announcedMAC, announcedIP, requesterMAC, requesterIP)
	other := netip.MustParseAddr("192.168.50.202")
	for _, tc := range []struct {
		name   string
		in     []byte
		want   []byte // nil: passed untouched
		reason string
	}{
		{"request for the announced address", request, reply, "l2-announce-reply"},
		{"unicast request (a cache refresh)",
			arpFrame(1, [6]byte(announcedMAC), requesterMAC, requesterIP, announcedMAC, announcedIP), reply, "l2-announce-reply"},
		{"request for another address", arpFrame(1, broadcast, requesterMAC, requesterIP, [6]byte{}, other), nil, "pass"},
		{"announced on another device", arpFrame(1, broadcast, requesterMAC, requesterIP, [6]byte{},
			netip.MustParseAddr("192.168.50.201")), nil, "pass"},
		{"a reply", arpFrame(2, announcedMAC, requesterMAC, requesterIP, announcedMAC, announcedIP), nil, "pass"},
		{"gratuitous request for the address", arpFrame(1, broadcast, requesterMAC, announcedIP, [6]byte{}, announcedIP), nil, "pass"},
		{"gratuitous reply", arpFrame(2, broadcast, requesterMAC, announcedIP, broadcast, announcedIP), nil, "pass"},
		{"short packet", request[:14+20], nil, "pass"},
		{"not IPv4 over Ethernet", func() []byte {
			b := bytes.Clone(request)
			b[14+2] = 0x86 // protocol type 0x86dd
			b[14+3] = 0xdd
			return b
		}(), nil, "pass"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := w.counts()
			ret, out := w.run(t, tc.in)
			if d := delta(before, w.counts()); len(d) != 1 || d[tc.reason] != 1 {
				t.Errorf("counters moved %v, want %s once", d, tc.reason)
			}
			if tc.want == nil {
				if ret != tcActPass {
					t.Errorf("verdict %d, want pass", ret)
				}
				if !bytes.Equal(out, tc.in) {
					t.Errorf("passed packet changed:\n got %x\nwant %x", out, tc.in)
				}
				return
			}
			if ret != tcActRedirect {
				t.Errorf("verdict %d, want redirect", ret)
			}
			if !bytes.Equal(out, tc.want) {
				t.Errorf("reply:\n got %x\nwant %x", out, tc.want)
			}
		})
	}
}
