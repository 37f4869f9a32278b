package test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-lb/sluice/internal/netlab"
	"github.com/sluice-lb/sluice/internal/testenv"
)

const (
	icmpVIP = "10.96.0.40"
	// The backend link's MTU on the node: below the client's 1500, and
	// only on the node's end, so the backend still offers a 1460-byte MSS
	// and the client's full-size segments cannot be forwarded to it.
	backendLinkMTU = 1280
	bulk           = 64 << 10
)

// icmpManifest serves icmpVIP with backend 1: TCP 90 to a sink on 9000,
// UDP 91 to port 9001, where nothing listens, UDP 92 to a socket on 9002.
func icmpManifest() string {
	return fmt.Sprintf(`apiVersion: v1
kind: Service
metadata: {name: sink, namespace: e2e}
spec:
  clusterIP: %s
  ports: [{name: sink, port: 90, protocol: TCP}, {name: closed, port: 91, protocol: UDP}, {name: open, port: 92, protocol: UDP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: sink-1, namespace: e2e, labels: {kubernetes.io/service-name: sink}}
addressType: IPv4
ports: [{name: sink, port: 9000, protocol: TCP}, {name: closed, port: 9001, protocol: UDP}, {name: open, port: 9002, protocol: UDP}]
endpoints:
- {addresses: [%s]}
`, icmpVIP, netlab.BackendAddr(1))
}

// serveSink runs, in a backend namespace, a TCP server that reads each
// connection to its end and answers with the count: its own segments stay
// small, whatever the client sends.
func serveSink(t *testing.T, ns *netlab.NS, addr string) {
	t.Helper()
	var ln net.Listener
	if err := ns.Do(func() (err error) {
		ln, err = net.Listen("tcp", addr)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				conn.SetDeadline(time.Now().Add(testenv.Scaled(30 * time.Second)))
				n, _ := io.Copy(io.Discard, conn)
				fmt.Fprintf(conn, "got %d\n", n)
			}()
		}
	}()
}

// Path MTU discovery through a ClusterIP (rule 23): the node cannot forward
// the client's full-size segments to the backend and answers with
// fragmentation needed, quoting them as translated (client -> backend).
// Only translated back (client -> VIP) does the client's socket find it and
// send smaller segments; untranslated, the transfer black-holes.
func TestPathMTUThroughServiceIP(t *testing.T) {
	eachMode(t, 1, icmpManifest(), func(t *testing.T, c *cluster) {
		serveSink(t, c.topo.Backends[0], "0.0.0.0:9000")
		nl := c.topo.Node.Netlink()
		link, err := nl.LinkByName(netlab.NodeBackendDev(1))
		if err != nil {
			t.Fatal(err)
		}
		if err := nl.LinkSetMTU(link, backendLinkMTU); err != nil {
			t.Fatal(err)
		}
		before := c.counter("icmp-error-to-client")

		conn, err := c.dial(icmpVIP+":90", 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(testenv.Scaled(10 * time.Second)))
		if _, err := conn.Write(bytes.Repeat([]byte("x"), bulk)); err != nil {
			t.Fatalf("write %d bytes: %v", bulk, err)
		}
		if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(conn)
		if want := fmt.Sprintf("got %d\n", bulk); err != nil || string(got) != want {
			t.Fatalf("sink answered %q (%v), want %q: the transfer black-holed", got, err, want)
		}
		if moved := c.counter("icmp-error-to-client") - before; moved == 0 {
			t.Error("icmp-error-to-client did not move")
		}
		// The client learnt the path MTU for the address it knows.
		routes, err := c.topo.Client.Netlink().RouteGet(net.ParseIP(icmpVIP))
		if err != nil || len(routes) == 0 {
			t.Fatalf("client's route to %s: %v", icmpVIP, err)
		}
		if routes[0].MTU != backendLinkMTU {
			t.Errorf("client's path MTU to %s: %d, want %d", icmpVIP, routes[0].MTU, backendLinkMTU)
		}
	})
}

// A UDP client of a service whose backend has no socket on the port gets
// ECONNREFUSED on its connected socket (rule 23): the backend's port
// unreachable reaches it as coming from the VIP and about its datagram.
func TestUDPPortUnreachableThroughServiceIP(t *testing.T) {
	eachMode(t, 1, icmpManifest(), func(t *testing.T, c *cluster) {
		before := c.counter("icmp-error-to-client")
		var conn net.Conn
		if err := c.topo.Client.Do(func() (err error) {
			conn, err = net.Dial("udp", icmpVIP+":91")
			return err
		}); err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(testenv.Scaled(5 * time.Second)))
		if _, err := conn.Write([]byte("anyone?")); err != nil {
			t.Fatal(err)
		}
		_, err := conn.Read(make([]byte, 64))
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("read: %v, want ECONNREFUSED", err)
		}
		if moved := c.counter("icmp-error-to-client") - before; moved != 1 {
			t.Errorf("icmp-error-to-client moved by %d, want 1", moved)
		}
	})
}

// The other way (rule 23): the client's port unreachable for a backend's
// reply, sent to the VIP the reply came from, reaches the backend about the
// datagram it sent. The client's socket is gone when the reply arrives;
// the backend's socket asks for ICMP errors (IP_RECVERR), so its next read
// fails with ECONNREFUSED.
func TestClientPortUnreachableReachesBackend(t *testing.T) {
	eachMode(t, 1, icmpManifest(), func(t *testing.T, c *cluster) {
		var srv *net.UDPConn
		if err := c.topo.Backends[0].Do(func() error {
			conn, err := net.ListenPacket("udp4", "0.0.0.0:9002")
			if err != nil {
				return err
			}
			srv = conn.(*net.UDPConn)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		defer srv.Close()
		rc, err := srv.SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, syscall.IP_RECVERR, 1)
		}); err != nil || serr != nil {
			t.Fatalf("IP_RECVERR: %v %v", err, serr)
		}

		var cli net.Conn
		if err := c.topo.Client.Do(func() (err error) {
			cli, err = net.Dial("udp", icmpVIP+":92")
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if _, err := cli.Write([]byte("hello")); err != nil {
			t.Fatal(err)
		}
		srv.SetDeadline(time.Now().Add(testenv.Scaled(5 * time.Second)))
		buf := make([]byte, 64)
		_, from, err := srv.ReadFrom(buf)
		if err != nil {
			t.Fatalf("backend read: %v", err)
		}
		cli.Close() // nothing listens on the client's port any more

		before := c.counter("icmp-error-to-backend")
		if _, err := srv.WriteTo([]byte("too late"), from); err != nil {
			t.Fatal(err)
		}
		if _, _, err := srv.ReadFrom(buf); !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("backend read after its reply: %v, want ECONNREFUSED", err)
		}
		if moved := c.counter("icmp-error-to-backend") - before; moved != 1 {
			t.Errorf("icmp-error-to-backend moved by %d, want 1", moved)
		}
	})
}
