package test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/sluice-lb/sluice/internal/netlab"
)

// echoManifest is a UDP Service on vip port 53 whose one endpoint, backend
// 1, echoes on port 5353.
const echoManifest = `apiVersion: v1
kind: Service
metadata: {name: echo, namespace: e2e}
spec:
  clusterIP: ` + vip + `
  ports: [{name: dns, port: 53, protocol: UDP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: echo-1, namespace: e2e, labels: {kubernetes.io/service-name: echo}}
addressType: IPv4
ports: [{name: dns, port: 5353, protocol: UDP}]
endpoints:
- {addresses: [10.244.1.2]}
`

// serveUDPEcho answers every datagram to port 5353 in ns with the same
// bytes, until ctx ends.
func serveUDPEcho(ctx context.Context, t *testing.T, ns *netlab.NS) {
	t.Helper()
	var pc net.PacketConn
	if err := ns.Do(func() (err error) {
		pc, err = net.ListenPacket("udp4", "0.0.0.0:5353")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	go func() { <-ctx.Done(); pc.Close() }()
	go func() {
		buf := make([]byte, 65536)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(buf[:n], from)
		}
	}()
}

// exchange sends one datagram from the client pod to vip:53 and returns
// the answer, which the connected socket takes only from vip:53.
func exchange(c *cluster, msg []byte) ([]byte, error) {
	var conn net.Conn
	if err := c.topo.Client.Do(func() (err error) {
		conn, err = net.Dial("udp4", vip+":53")
		return err
	}); err != nil {
		return nil, err
	}
	defer conn.Close()
	if _, err := conn.Write(msg); err != nil {
		return nil, err
	}
	conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	buf := make([]byte, 65536)
	n, err := conn.Read(buf)
	if err != nil {
		return nil, err
	}
	return buf[:n], nil
}

// mtu is a device's MTU inside a namespace.
func mtu(t *testing.T, ns *netlab.NS, dev string) int {
	t.Helper()
	var m int
	if err := ns.Do(func() error {
		ifi, err := net.InterfaceByName(dev)
		if err == nil {
			m = ifi.MTU
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return m
}

// Item 6, rule 23: a 4000-byte datagram to a VIP over 1500-byte links is
// fragmented by the client's kernel, and its 4000-byte answer by the
// backend's; no one on the way reassembles (the namespaces load no
// netfilter defragmentation). The datapath translates every fragment, and
// the client reassembles the answer from the VIP, checksum and all.
func TestFragmentedUDPThroughVIP(t *testing.T) {
	eachMode(t, 1, echoManifest, func(t *testing.T, c *cluster) {
		for _, m := range []int{mtu(t, c.topo.Client, "eth0"), mtu(t, c.topo.Backends[0], "eth0")} {
			if m != 1500 {
				t.Fatalf("pod MTU %d, want 1500: the datagrams would not be fragmented as the test means", m)
			}
		}
		serveUDPEcho(ctx(t), t, c.topo.Backends[0])
		msg := make([]byte, 4000)
		for i := range msg {
			msg[i] = byte(i*13) ^ byte(i>>8)
		}

		c.waitFor("the echo through the VIP", 5*time.Second, func() error {
			got, err := exchange(c, msg)
			if err != nil {
				return err
			}
			if !bytes.Equal(got, msg) {
				return fmt.Errorf("echo of %d bytes differs from the %d sent", len(got), len(msg))
			}
			return nil
		})

		// One more exchange, counted: 4028-byte IP datagrams leave as
		// three fragments each way, every one translated.
		before := map[string]uint64{}
		reasons := []string{"fragment", "drop-fragment", "drop-frag-untracked"}
		for _, r := range reasons {
			before[r] = c.counter(r)
		}
		got, err := exchange(c, msg)
		if err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("second exchange: %d bytes back, %v", len(got), err)
		}
		want := map[string]uint64{"fragment": 6, "drop-fragment": 0, "drop-frag-untracked": 0}
		for _, r := range reasons {
			if d := c.counter(r) - before[r]; d != want[r] {
				t.Errorf("%s moved by %d, want %d", r, d, want[r])
			}
		}
	})
}
