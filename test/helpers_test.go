package test

import (
	"context"
	"net"
	"os"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/sluice-lb/sluice/internal/agenttest"
	"github.com/sluice-lb/sluice/internal/netlab"
)

// ctx is cancelled when the test ends.
func ctx(t testing.TB) context.Context {
	c, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return c
}

func (c *cluster) readAgentLog() string {
	b, _ := os.ReadFile(c.agentLog)
	return string(b)
}

// counter reads one datapath counter, by reason name, from the pinned maps.
func (c *cluster) counter(reason string) uint64 {
	c.t.Helper()
	return agenttest.Counter(c.t, c.pinDir, reason)
}

// sendRawFrame sends an Ethernet frame as it is, n times, out of a device
// in a namespace, through an AF_PACKET socket.
func sendRawFrame(ns *netlab.NS, dev string, frame []byte, n int) error {
	return ns.Do(func() error {
		ifi, err := net.InterfaceByName(dev)
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		sa := &unix.SockaddrLinklayer{Ifindex: ifi.Index, Halen: 6}
		copy(sa.Addr[:], frame[0:6])
		for range n {
			if err := unix.Sendto(fd, frame, 0, sa); err != nil {
				return err
			}
		}
		return nil
	})
}
