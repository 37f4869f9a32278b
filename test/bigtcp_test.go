package test

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/sluice-lb/sluice/internal/testenv"
	"github.com/sluice-lb/sluice/loader"
)

// IPv4 BIG TCP (Linux 6.3+): a client whose device allows GSO packets over
// 64 KiB sends them with an IPv4 total length of 0, and they reach the
// node's devices whole. The datapath takes their length from the skb
// instead of dropping them as malformed, so a bulk transfer through a
// ClusterIP goes on.
func TestBigTCPThroughClusterIP(t *testing.T) {
	const bigGSO = 185000
	if k := os.Getenv("SLUICE_VMTEST_KERNEL"); k != "" {
		// Under the matrix's software emulation an 8 MiB transfer takes
		// minutes; the host run of make test covers it.
		t.Skipf("kernel matrix VM (%s): bulk transfer too slow under emulation", k)
	}
	c := newCluster(t, 1, "auto")
	c.write("whoami.yaml", whoamiManifest(1))
	err := c.topo.Client.Do(func() error {
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		if err := netlink.LinkSetGSOIPv4MaxSize(l, bigGSO); err != nil {
			return err
		}
		// A kernel without the attribute may ignore it: read it back.
		if l, err = netlink.LinkByName("eth0"); err != nil {
			return err
		}
		if l.Attrs().GSOIPv4MaxSize != bigGSO {
			return fmt.Errorf("gso_ipv4_max_size reads %d: %w", l.Attrs().GSOIPv4MaxSize, unix.EOPNOTSUPP)
		}
		return nil
	})
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP) {
		t.Skipf("kernel without IPv4 BIG TCP (6.3+): %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	c.startAgent()

	established := func() (packets, bytes uint64) {
		dp, done, err := loader.OpenPinnedMaps(c.pinDir)
		if err != nil {
			t.Fatal(err)
		}
		defer done()
		counts, err := dp.ReadCounters()
		if err != nil {
			t.Fatal(err)
		}
		for _, rc := range counts {
			if rc.Reason == "established" {
				return rc.Packets, rc.Bytes
			}
		}
		t.Fatal("no established counter")
		return 0, 0
	}
	// The node's end of the client's veth sees frames as the client sent
	// them, before the datapath does.
	capt, err := openCapture(c.topo.Node, "c0")
	if err != nil {
		t.Fatal(err)
	}
	defer capt.close()
	largest := make(chan int, 1)
	stop := make(chan struct{})
	go func() { largest <- capt.largestReceived(stop) }()

	ec := c.dialEcho(t, vip+":80")
	ec.exchange(t, "hello")
	_, b0 := established()
	// The backend echoes what it reads: the client drains the echo while
	// it writes, or both ends' buffers fill and the transfer stalls.
	const size = 8 << 20
	ec.conn.SetDeadline(time.Now().Add(testenv.Scaled(10 * time.Second)))
	drained := make(chan error, 1)
	go func() {
		_, err := io.CopyN(io.Discard, ec.r, size)
		drained <- err
	}()
	if _, err := ec.conn.Write([]byte(strings.Repeat("x", size))); err != nil {
		t.Fatalf("write %d bytes through the ClusterIP: %v", size, err)
	}
	if err := <-drained; err != nil {
		t.Fatalf("read the %d bytes' echo back through the ClusterIP: %v", size, err)
	}
	close(stop)
	c.waitFor("the data counted as established", testenv.Scaled(5*time.Second), func() error {
		if _, b := established(); b-b0 < size {
			return fmt.Errorf("established bytes moved %d", b-b0)
		}
		return nil
	})
	if n := c.counter("drop-malformed-ip"); n != 0 {
		t.Errorf("drop-malformed-ip moved %d times", n)
	}
	// A frame of at most 64 KiB of IP is 65,549 bytes: a larger one is a
	// BIG TCP packet, whose total length field reads 0.
	n := <-largest
	if n <= 65549 {
		t.Fatalf("the largest frame the client sent was %d bytes: no packet over 64 KiB, so BIG TCP was not exercised", n)
	}
	t.Logf("the largest frame the client sent through the ClusterIP: %d bytes", n)
}

// largestReceived is the length of the largest frame the device received
// (not sent) until stop closes. MSG_TRUNC returns a frame's whole length
// whatever the buffer holds.
func (c *capture) largestReceived(stop <-chan struct{}) int {
	tv := unix.NsecToTimeval((100 * time.Millisecond).Nanoseconds())
	unix.SetsockoptTimeval(c.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	buf := make([]byte, 128)
	largest := 0
	for {
		select {
		case <-stop:
			return largest
		default:
		}
		n, from, err := unix.Recvfrom(c.fd, buf, unix.MSG_TRUNC)
		if err != nil {
			continue
		}
		if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		largest = max(largest, n)
	}
}
