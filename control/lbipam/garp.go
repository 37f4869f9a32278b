package lbipam

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"
)

// Gratuitous ARP after a takeover: GARPCount requests, GARPInterval
// apart, so that neighbours whose cache still names the previous node's
// MAC move to this one (a lost frame is covered by the next).
const (
	GARPCount    = 3
	GARPInterval = time.Second
)

// GratuitousARP builds the gratuitous ARP request announcing addr at mac:
// sender and target address both addr, to the broadcast address (RFC 5227
// 3's announcement).
func GratuitousARP(addr netip.Addr, mac net.HardwareAddr) []byte {
	b := make([]byte, 0, 42)
	b = append(b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)
	b = append(b, mac[:6]...)
	b = binary.BigEndian.AppendUint16(b, unix.ETH_P_ARP)
	b = binary.BigEndian.AppendUint16(b, 1) // Ethernet
	b = binary.BigEndian.AppendUint16(b, unix.ETH_P_IP)
	b = append(b, 6, 4)
	b = binary.BigEndian.AppendUint16(b, 1) // request
	b = append(b, mac[:6]...)
	b = append(b, addr.AsSlice()...)
	b = append(b, 0, 0, 0, 0, 0, 0)
	return append(b, addr.AsSlice()...)
}

// SendGratuitousARP sends one gratuitous ARP for addr out of the device
// ifindex, through an AF_PACKET socket.
func SendGratuitousARP(ifindex int, addr netip.Addr, mac net.HardwareAddr) error {
	if len(mac) != 6 || !addr.Is4() {
		return fmt.Errorf("gratuitous ARP for %s at %q: want an IPv4 address and an Ethernet MAC", addr, mac)
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("gratuitous ARP: packet socket: %w", err)
	}
	defer unix.Close(fd)
	sa := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ARP), Ifindex: ifindex, Halen: 6}
	copy(sa.Addr[:], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	if err := unix.Sendto(fd, GratuitousARP(addr, mac), 0, sa); err != nil {
		return fmt.Errorf("gratuitous ARP for %s on ifindex %d: %w", addr, ifindex, err)
	}
	return nil
}

// AnnounceTakeover sends GARPCount gratuitous ARPs for addr, GARPInterval
// apart, until ctx ends; send errors are returned by report, not fatal.
func AnnounceTakeover(ctx context.Context, ifindex int, addr netip.Addr, mac net.HardwareAddr, report func(error)) {
	for i := range GARPCount {
		if i > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(GARPInterval):
			}
		}
		if err := SendGratuitousARP(ifindex, addr, mac); err != nil && report != nil {
			report(err)
		}
	}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
