package packet

import (
	"net/netip"
	"testing"
)

// Fragments of a datagram reassemble to it, whatever their order, and
// each carries a valid IPv4 header of its own.
func TestFragmentReassemble(t *testing.T) {
	src, dst := netip.MustParseAddrPort("10.0.0.1:1234"), netip.MustParseAddrPort("10.0.0.2:53")
	payload := make([]byte, 4000)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	whole := Build(Spec{Src: src, Dst: dst, Proto: ProtoUDP, Payload: payload, ID: 0x4242})
	frags := Fragment(whole, 1480)
	if len(frags) != 3 {
		t.Fatalf("%d fragments, want 3", len(frags))
	}
	for i, b := range frags {
		f, err := Parse(b)
		if err != nil || !f.IPChecksumOK() {
			t.Fatalf("fragment %d: %v, IP checksum ok %v", i, err, err == nil && f.IPChecksumOK())
		}
	}
	got, err := Reassemble(frags[2], frags[0], frags[1])
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(whole) {
		t.Error("reassembled datagram differs from the original")
	}
	if _, err := Reassemble(frags[0], frags[2]); err == nil {
		t.Error("a datagram missing its middle fragment reassembled")
	}
}
