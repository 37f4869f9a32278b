package packet

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
)

// IPv4 flags and fragment offset field (RFC 791).
const (
	IPMoreFragments = 0x2000
	ipOffsetMask    = 0x1fff
)

// Fragment splits a frame built without IP options into fragments as a
// sender's kernel would: each carries at most size bytes of the IP payload
// (size a multiple of 8), the first one the L4 header and its checksum
// over the whole datagram, every one its own IPv4 header and checksum.
func Fragment(frame []byte, size int) [][]byte {
	if size <= 0 || size%8 != 0 {
		panic(fmt.Sprintf("fragment size %d: want a positive multiple of 8", size))
	}
	hdr := frame[:14+20]
	payload := frame[14+20:]
	var out [][]byte
	for off := 0; off < len(payload); off += size {
		end := min(off+size, len(payload))
		f := append(slices.Clone(hdr), payload[off:end]...)
		ip := f[14:34]
		field := uint16(off / 8)
		if end < len(payload) {
			field |= IPMoreFragments
		}
		binary.BigEndian.PutUint16(ip[2:], uint16(20+end-off))
		binary.BigEndian.PutUint16(ip[6:], field)
		ip[10], ip[11] = 0, 0
		binary.BigEndian.PutUint16(ip[10:], Checksum(ip))
		out = append(out, f)
	}
	return out
}

// Reassemble joins the fragments of one datagram, in any order, into one
// unfragmented frame, as the receiver's kernel would: the IPv4 header of
// the first fragment, the payloads at their offsets. Fragments that do not
// share source, destination, protocol and identification, or do not
// cover the datagram exactly, are an error.
func Reassemble(frags ...[]byte) ([]byte, error) {
	type piece struct {
		off  int
		more bool
		data []byte
	}
	var pieces []piece
	var first []byte
	for i, b := range frags {
		f, err := Parse(b)
		if err != nil {
			return nil, fmt.Errorf("fragment %d: %w", i, err)
		}
		if len(f.IP) != 20 {
			return nil, fmt.Errorf("fragment %d: IP options", i)
		}
		if i > 0 {
			p, _ := Parse(frags[0])
			if f.Src != p.Src || f.Dst != p.Dst || f.Proto != p.Proto ||
				binary.BigEndian.Uint16(f.IP[4:]) != binary.BigEndian.Uint16(p.IP[4:]) {
				return nil, fmt.Errorf("fragment %d: not of the datagram of fragment 0", i)
			}
		}
		field := binary.BigEndian.Uint16(f.IP[6:])
		pc := piece{off: int(field&ipOffsetMask) * 8, more: field&IPMoreFragments != 0, data: f.L4}
		if pc.off == 0 {
			first = b[:14+20]
		}
		pieces = append(pieces, pc)
	}
	if first == nil {
		return nil, errors.New("no first fragment")
	}
	slices.SortFunc(pieces, func(a, b piece) int { return a.off - b.off })
	var payload []byte
	for i, pc := range pieces {
		if pc.off != len(payload) {
			return nil, fmt.Errorf("fragment at offset %d, want %d", pc.off, len(payload))
		}
		if pc.more != (i < len(pieces)-1) {
			return nil, fmt.Errorf("fragment at offset %d: MF %v", pc.off, pc.more)
		}
		payload = append(payload, pc.data...)
	}
	out := append(slices.Clone(first), payload...)
	ip := out[14:34]
	binary.BigEndian.PutUint16(ip[2:], uint16(20+len(payload)))
	binary.BigEndian.PutUint16(ip[6:], 0)
	ip[10], ip[11] = 0, 0
	binary.BigEndian.PutUint16(ip[10:], Checksum(ip))
	return out, nil
}
