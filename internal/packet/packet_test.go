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
