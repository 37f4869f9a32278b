package test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/sluice-lb/sluice/bpf"
	"github.com/sluice-lb/sluice/internal/netlab"
	"github.com/sluice-lb/sluice/internal/testenv"
	"github.com/sluice-lb/sluice/internal/whoami"
	"github.com/sluice-lb/sluice/loader"
	"github.com/sluice-lb/sluice/maps"
)

// Flow lifecycle through the agent's pinned conntrack: what a full table,
// a leaving endpoint and endpoints that appear do to the flows of real
// clients.

// Idle connections survive a flood of new ones: once the conntrack table
// is full, new flows are refused and counted (drop-ct-full), and the idle
// flows keep their entries and carry data both ways.
//
// The agent has no flag for the table's size, so the table is brought to
// the brink by the test instead: after the idle connections are made, it
// is filled with copies of an idle connection's two entries, for clients
// that send no packet, until room flows are left; then 4*room new
// connections arrive.
func TestIdleFlowsSurviveConntrackFlood(t *testing.T) {
	const room, idleConns = 32, 3
	c := newCluster(t, 2, "auto")
	c.write("whoami.yaml", whoamiManifest(1, 2))
	// Nothing the flood makes may expire while the test counts: the
	// collector would make room as the accepted connections close (10 s
	// after their RST by default, soon enough under a VM's emulation).
	c.agentArgs = []string{"--conntrack-tcp-timeout-close", "1h", "--conntrack-tcp-timeout-syn", "1h"}
	c.startAgent()

	var idle []*echoConn
	for range idleConns {
		ec := c.dialEcho(t, vip+":80")
		ec.exchange(t, "before the flood")
		idle = append(idle, ec)
	}

	ct := c.writableConntrack(t)
	capacity := int(ct.Raw().MaxEntries())
	used := countEntries(t, ct)
	if used < 2*idleConns {
		t.Fatalf("conntrack holds %d entries, want at least the %d of the idle connections", used, 2*idleConns)
	}
	if (capacity-used)%2 != 0 {
		t.Fatalf("conntrack holds %d entries: a flow without its pair", used)
	}
	fillConntrack(t, ct, idle[0].forwardKey(), (capacity-used)/2-room)
	t.Logf("conntrack: %d of %d entries taken, room for %d flows", capacity-2*room, capacity, room)

	before := c.counter("drop-ct-full")
	accepted, refused := c.flood(t, vip+":80", 4*room, testenv.Scaled(2*time.Second))
	dropped := c.counter("drop-ct-full") - before
	t.Logf("flood of %d connections: %d accepted, %d refused, drop-ct-full counted %d SYNs",
		4*room, accepted, refused, dropped)
	if accepted != room {
		t.Errorf("%d new connections accepted, want exactly the %d the table had room for", accepted, room)
	}
	if refused != 3*room {
		t.Errorf("%d new connections refused, want %d", refused, 3*room)
	}
	if dropped < uint64(refused) {
		t.Errorf("drop-ct-full counted %d packets, want at least one SYN for each of the %d refused connections",
			dropped, refused)
	}
	if n := countEntries(t, ct); n != capacity {
		t.Errorf("conntrack holds %d entries after the flood, want %d (full)", n, capacity)
	}

	for i, ec := range idle {
		if _, err := ct.Lookup(ec.forwardKey()); err != nil {
			t.Errorf("idle connection %d (%s): forward entry gone: %v", i, ec.conn.LocalAddr(), err)
		}
		ec.exchange(t, fmt.Sprintf("idle %d after the flood", i))
	}
}

// Rule 30, first half: a UDP client keeps sending from one socket; once
// the backend its flow went to leaves the EndpointSlice, its next
// datagram goes to a live backend. The backend that left still runs and
// would answer, so a flow kept on it shows.
func TestUDPFlowLeavesRemovedEndpoint(t *testing.T) {
	c := newCluster(t, 2, "auto")
	c.write("whoami.yaml", whoamiManifest(1, 2))
	c.startAgent()

	conn := c.dialUDP(t, vip+":80")
	first := askOn(t, conn)
	for range 3 { // the flow is tracked: the same backend every time
		if who := askOn(t, conn); who != first {
			t.Fatalf("the same socket was answered by %s, then %s", first, who)
		}
	}
	gone, live := 1, 2
	if first == "backend-2" {
		gone, live = 2, 1
	}
	c.write("whoami.yaml", whoamiManifest(live))
	c.waitBackends(t, vip, 80, unix.IPPROTO_UDP, netlab.BackendAddr(live))

	before := c.counter("backend-gone")
	if who := askOn(t, conn); who != fmt.Sprintf("backend-%d", live) {
		t.Fatalf("after backend-%d left, the socket's next datagram was answered by %s", gone, who)
	}
	t.Logf("backend-gone counted %d", c.counter("backend-gone")-before)
	// Whether the datapath moved the flow (backend-gone) or the agent
	// removed its entries first, the socket's flow now names the live
	// backend.
	fe, err := c.writableConntrack(t).Lookup(udpForwardKey(conn))
	if err != nil {
		t.Fatalf("the socket's flow: %v", err)
	}
	if got := maps.AddrFrom4(fe.BackendAddr); got != netlab.BackendAddr(live) {
		t.Errorf("the socket's flow goes to %s, want %s", got, netlab.BackendAddr(live))
	}
}

// udpForwardKey is the conntrack key of a connected UDP socket's datagrams.
func udpForwardKey(conn net.Conn) bpf.SluiceCt4Key {
	l := conn.LocalAddr().(*net.UDPAddr).AddrPort()
	r := conn.RemoteAddr().(*net.UDPAddr).AddrPort()
	return bpf.SluiceCt4Key{
		Saddr: maps.Addr4(l.Addr().Unmap()), Sport: maps.Port(l.Port()),
		Daddr: maps.Addr4(r.Addr().Unmap()), Dport: maps.Port(r.Port()),
		Proto: unix.IPPROTO_UDP,
	}
}

// Rule 30, second half: datagrams to a UDP service port without endpoints
// are rejected (a connected socket reads ECONNREFUSED), and leave nothing
// behind: once endpoints appear, the same socket's next datagram is
// answered.
func TestUDPFlowAfterEndpointsAppear(t *testing.T) {
	const dnsVIP = "10.96.0.40"
	c := newCluster(t, 1, "auto")
	c.write("dns.yaml", udpServiceManifest(dnsVIP))
	c.startAgent()

	conn := c.dialUDP(t, dnsVIP+":53")
	before := c.counter("reject-no-endpoints")
	for i := range 3 {
		if _, err := conn.Write([]byte("who?")); err != nil && !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("datagram %d: write: %v", i, err)
		}
		conn.SetReadDeadline(time.Now().Add(testenv.Scaled(time.Second)))
		_, err := conn.Read(make([]byte, 2048))
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("datagram %d to a port without endpoints: read %v, want ECONNREFUSED", i, err)
		}
	}
	if n := c.counter("reject-no-endpoints") - before; n != 3 {
		t.Errorf("reject-no-endpoints counted %d, want 3", n)
	}

	c.write("dns.yaml", udpServiceManifest(dnsVIP, 1))
	c.waitBackends(t, dnsVIP, 53, unix.IPPROTO_UDP, netlab.BackendAddr(1))
	if who := askOn(t, conn); who != "backend-1" {
		t.Fatalf("after endpoints appeared: answered by %q, want backend-1", who)
	}
}

// udpServiceManifest is a UDP-only Service on addr:53 and its
// EndpointSlice with the given backends (1-based; none is an empty slice).
func udpServiceManifest(addr string, backends ...int) string {
	s := fmt.Sprintf(`apiVersion: v1
kind: Service
metadata: {name: dns, namespace: e2e}
spec:
  clusterIP: %s
  ports: [{name: dns, port: 53, protocol: UDP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: dns-1, namespace: e2e, labels: {kubernetes.io/service-name: dns}}
addressType: IPv4
ports: [{name: dns, port: 8080, protocol: UDP}]
`, addr)
	if len(backends) == 0 {
		return s + "endpoints: []\n"
	}
	s += "endpoints:\n"
	for _, i := range backends {
		s += fmt.Sprintf("- {addresses: [%s]}\n", netlab.BackendAddr(i))
	}
	return s
}

// dialUDP opens a connected UDP socket from the client pod: one source
// port for every datagram, and ICMP errors reported on it.
func (c *cluster) dialUDP(t *testing.T, addr string) net.Conn {
	t.Helper()
	var conn net.Conn
	if err := c.topo.Client.Do(func() (err error) {
		conn, err = net.Dial("udp", addr)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// askOn sends one whoami datagram on conn and returns who answered.
func askOn(t *testing.T, conn net.Conn) string {
	t.Helper()
	if _, err := conn.Write([]byte("who?")); err != nil {
		t.Fatalf("write: %v", err)
	}
	conn.SetReadDeadline(time.Now().Add(testenv.Scaled(time.Second)))
	buf := make([]byte, 2048)
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatalf("read from %s: %v", conn.RemoteAddr(), err)
	}
	return whoami.Hostname(string(buf[:n]))
}

// waitBackends waits until the agent has programmed exactly want as the
// backends of vip:port/proto, read from the pinned maps.
func (c *cluster) waitBackends(t *testing.T, vip string, port uint16, proto uint8, want ...netip.Addr) {
	t.Helper()
	c.waitFor(fmt.Sprintf("backends %v of %s:%d/%d", want, vip, port, proto), 2*time.Second, func() error {
		dp, closeMaps, err := loader.OpenPinnedMaps(c.pinDir)
		if err != nil {
			return err
		}
		defer closeMaps()
		got := dp.LB4.BackendAddrs(netip.MustParseAddr(vip), port, proto)
		if !slices.Equal(got, want) {
			return fmt.Errorf("programmed %v", got)
		}
		return nil
	})
}

// echoConn is a raw TCP connection to whoami through a service: greeted,
// then echoed, so a test can check data still flows both ways.
type echoConn struct {
	conn net.Conn
	r    *bufio.Reader
	who  string // the backend's name, from its greeting
	seen whoami.Answer
}

func (c *cluster) dialEcho(t *testing.T, addr string) *echoConn {
	t.Helper()
	ec := dialEchoFrom(t, c.topo.Client, addr)
	if ec.seen.RemoteIP() != netlab.ClientAddr.String() {
		t.Errorf("backend saw %q, want the client address", ec.seen.Remote)
	}
	return ec
}

// dialEchoFrom is dialEcho from a connection made in ns, whatever address
// the backend saw it from (in ec.seen).
func dialEchoFrom(t *testing.T, ns *netlab.NS, addr string) *echoConn {
	t.Helper()
	conn, err := dialFrom(ns, addr, testenv.Scaled(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ec := &echoConn{conn: conn, r: bufio.NewReader(conn)}
	conn.SetDeadline(time.Now().Add(testenv.Scaled(5 * time.Second)))
	ec.seen = readAnswer(t, ec.r)
	ec.who = ec.seen.Hostname
	return ec
}

// exchange writes one line and reads it back.
func (ec *echoConn) exchange(t *testing.T, msg string) {
	t.Helper()
	msg += "\n"
	ec.conn.SetDeadline(time.Now().Add(testenv.Scaled(2 * time.Second)))
	if _, err := io.WriteString(ec.conn, msg); err != nil {
		t.Fatalf("%s: write: %v", ec.conn.LocalAddr(), err)
	}
	if got, err := ec.r.ReadString('\n'); err != nil || got != msg {
		t.Fatalf("%s: echo %q (%v), want %q", ec.conn.LocalAddr(), got, err, msg)
	}
}

// forwardKey is the conntrack key of the connection's forward direction.
func (ec *echoConn) forwardKey() bpf.SluiceCt4Key {
	l := ec.conn.LocalAddr().(*net.TCPAddr).AddrPort()
	r := ec.conn.RemoteAddr().(*net.TCPAddr).AddrPort()
	return bpf.SluiceCt4Key{
		Saddr: maps.Addr4(l.Addr().Unmap()), Sport: maps.Port(l.Port()),
		Daddr: maps.Addr4(r.Addr().Unmap()), Dport: maps.Port(r.Port()),
		Proto: unix.IPPROTO_TCP,
	}
}

// flood makes n TCP connections to addr from the client pod at once and
// reports how many were established and how many timed out. Each is
// closed at once; its flow stays in conntrack for the close lifetime.
func (c *cluster) flood(t *testing.T, addr string, n int, timeout time.Duration) (accepted, refused int) {
	t.Helper()
	var (
		mu   sync.Mutex
		wg   sync.WaitGroup
		errs []error
	)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := c.dial(addr, timeout)
			mu.Lock()
			defer mu.Unlock()
			var ne net.Error
			switch {
			case err == nil:
				accepted++
				conn.Close()
			case errors.As(err, &ne) && ne.Timeout():
				refused++
			default:
				errs = append(errs, err)
			}
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d connections failed otherwise than by a timeout, first: %v", len(errs), errs[0])
	}
	return accepted, refused
}

// writableConntrack opens the agent's pinned conntrack map for writing.
func (c *cluster) writableConntrack(t *testing.T) *maps.Map[bpf.SluiceCt4Key, bpf.SluiceCt4Entry] {
	t.Helper()
	m, err := ebpf.LoadPinnedMap(filepath.Join(c.pinDir, bpf.SluiceMapCt4V3), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return maps.New[bpf.SluiceCt4Key, bpf.SluiceCt4Entry](m)
}

func countEntries(t *testing.T, ct *maps.Map[bpf.SluiceCt4Key, bpf.SluiceCt4Entry]) int {
	t.Helper()
	n := 0
	if err := ct.Each(func(bpf.SluiceCt4Key, bpf.SluiceCt4Entry) bool { n++; return true }); err != nil {
		t.Fatal(err)
	}
	return n
}

// fillConntrack adds n flows, each a copy of the forward and reply
// entries of the live flow fwd, for clients in 198.18.0.0/15 (the
// benchmarking range, which no packet of the test carries): to the
// datapath and the agent they are established flows of the same service
// and backend, which never send a packet.
func fillConntrack(t *testing.T, ct *maps.Map[bpf.SluiceCt4Key, bpf.SluiceCt4Entry], fwd bpf.SluiceCt4Key, n int) {
	t.Helper()
	fe, err := ct.Lookup(fwd)
	if err != nil {
		t.Fatalf("forward entry of the template flow: %v", err)
	}
	rev := bpf.SluiceCt4Key{Saddr: fe.BackendAddr, Sport: fe.BackendPort, Daddr: fwd.Saddr, Dport: fwd.Sport, Proto: fwd.Proto}
	re, err := ct.Lookup(rev)
	if err != nil {
		t.Fatalf("reply entry of the template flow: %v", err)
	}
	keys := make([]bpf.SluiceCt4Key, 0, 2*n)
	vals := make([]bpf.SluiceCt4Entry, 0, 2*n)
	for i := range n {
		client := maps.Addr4(netip.AddrFrom4([4]byte{198, 18 + byte(i>>24), byte(i >> 16), byte(i >> 8)}))
		port := maps.Port(uint16(1024 + i&0xff))
		f, r := fwd, rev
		f.Saddr, f.Sport = client, port
		r.Daddr, r.Dport = client, port
		keys = append(keys, f, r)
		vals = append(vals, fe, re)
	}
	if err := ct.PutAll(keys, vals); err != nil {
		t.Fatalf("fill conntrack with %d flows: %v", n, err)
	}
}
