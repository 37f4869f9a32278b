package packet

import (
	"encoding/hex"
	"net/netip"
	"testing"
)

// Known answers: the tests' checksum verifier must itself be right.
func TestChecksumKnownAnswers(t *testing.T) {
	// An IPv4 header whose checksum field holds 0xb861.
	hdr, _ := hex.DecodeString("450000730000400040110000c0a80001c0a800c7")
	if got := Checksum(hdr); got != 0xb861 {
		t.Errorf("IPv4 header checksum %#04x, want 0xb861", got)
	}
	// RFC 1071 section 3: the one's complement sum of 0001 f203 f4f5 f6f7
	// is ddf2, so the checksum is its complement, 220d.
	data, _ := hex.DecodeString("0001f203f4f5f6f7")
	if got := Checksum(data); got != 0x220d {
		t.Errorf("RFC 1071 example %#04x, want 0x220d", got)
	}
	// An odd length is padded with a zero byte.
	if Checksum([]byte{0x01}) != Checksum([]byte{0x01, 0x00}) {
		t.Error("odd length not padded")
	}
}

func TestBuiltFramesVerify(t *testing.T) {
	src, dst := netip.MustParseAddrPort("10.0.0.1:1234"), netip.MustParseAddrPort("10.0.0.2:80")
	for _, proto := range []uint8{ProtoTCP, ProtoUDP, ProtoICMP} {
		f, err := Parse(Build(Spec{Src: src, Dst: dst, Proto: proto, Payload: []byte("abc")}))
		if err != nil {
			t.Fatal(err)
		}
		if !f.IPChecksumOK() || !f.L4ChecksumOK() {
			t.Errorf("proto %d: built frame does not verify", proto)
		}
		// A flipped payload bit must be caught.
		f.L4[len(f.L4)-1] ^= 1
		if f.L4ChecksumOK() {
			t.Errorf("proto %d: corrupted frame verifies", proto)
		}
	}
}

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
