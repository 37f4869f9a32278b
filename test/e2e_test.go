package test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-lb/sluice/internal/netlab"
	"github.com/sluice-lb/sluice/internal/testenv"
	"github.com/sluice-lb/sluice/internal/whoami"
)

// TCP and UDP from the client pod to the ClusterIP reach every programmed
// backend and no other (backend 3 runs whoami but is not in the slice).
func TestServiceTrafficReachesProgrammedBackends(t *testing.T) {
	eachMode(t, 3, whoamiManifest(1, 2), func(t *testing.T, c *cluster) {
		for _, proto := range []string{"tcp", "udp"} {
			hits := map[string]int{}
			for range 40 {
				who, err := c.ask(proto, vip+":80")
				if err != nil {
					t.Fatalf("%s request: %v", proto, err)
				}
				hits[who]++
			}
			if len(hits) != 2 || hits["backend-1"] == 0 || hits["backend-2"] == 0 {
				t.Errorf("%s answers %v: want backend-1 and backend-2 only", proto, hits)
			}
		}
	})
}

// REJECT (rules 14, 15, 17): a TCP client of a service without endpoints,
// or of a port the service IP does not serve, gets ECONNREFUSED at once.
func TestRejectRefusesAtOnce(t *testing.T) {
	eachMode(t, 1, whoamiManifest(1), func(t *testing.T, c *cluster) {
		for _, addr := range []string{emptyVIP + ":80", vip + ":81"} {
			start := time.Now()
			conn, err := c.dial(addr, 3*time.Second)
			took := time.Since(start)
			if conn != nil {
				conn.Close()
			}
			if !errors.Is(err, syscall.ECONNREFUSED) {
				t.Errorf("dial %s: %v, want ECONNREFUSED", addr, err)
			}
			if took > testenv.Scaled(50*time.Millisecond) {
				t.Errorf("dial %s refused after %s, want under 50ms", addr, took)
			}
		}
	})
}

// Adding and removing an endpoint in the manifests is followed within 1 s.
func TestEndpointChangesAreFollowed(t *testing.T) {
	c := newCluster(t, 2, "auto")
	c.write("whoami.yaml", whoamiManifest(1))
	c.startAgent()

	start := time.Now()
	c.write("whoami.yaml", whoamiManifest(1, 2))
	c.waitFor("backend-2 to answer", time.Second, func() error {
		who, err := c.ask("tcp", vip+":80")
		if err != nil || who != "backend-2" {
			return fmt.Errorf("answered by %q (%v)", who, err)
		}
		return nil
	})
	t.Logf("added endpoint serving after %s", time.Since(start))

	start = time.Now()
	c.write("whoami.yaml", whoamiManifest(2))
	c.waitFor("backend-1 to stop answering", time.Second, func() error {
		for range 20 {
			who, err := c.ask("udp", vip+":80")
			if err != nil || who != "backend-2" {
				return fmt.Errorf("answered by %q (%v)", who, err)
			}
		}
		return nil
	})
	t.Logf("removed endpoint gone after %s", time.Since(start))
}

// A long-lived connection through the VIP keeps exchanging data while the
// agent is SIGKILLed and restarted; connections made while it is down
// succeed too: the datapath lives in the kernel, pinned.
func TestConnectionSurvivesAgentKill(t *testing.T) {
	eachMode(t, 2, whoamiManifest(1, 2), func(t *testing.T, c *cluster) {

		conn, err := c.dial(vip+":80", 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		r := bufio.NewReader(conn)
		// whoami greets a silent raw TCP client, then echoes.
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		greeting := readGreeting(t, r)
		n := 0
		exchange := func(phase string) {
			t.Helper()
			for range 20 {
				n++
				msg := fmt.Sprintf("ping %d\n", n)
				conn.SetDeadline(time.Now().Add(2 * time.Second))
				if _, err := io.WriteString(conn, msg); err != nil {
					t.Fatalf("%s: write: %v", phase, err)
				}
				got, err := r.ReadString('\n')
				if err != nil || got != msg {
					t.Fatalf("%s: echo %q (%v), want %q", phase, got, err, msg)
				}
				time.Sleep(5 * time.Millisecond)
			}
		}
		exchange("agent running")

		c.killAgent()
		exchange("agent killed")
		for i := range 10 {
			if who, err := c.ask("tcp", vip+":80"); err != nil {
				t.Fatalf("new connection %d while the agent is down: %v (%s)", i, err, who)
			}
		}

		c.startAgent()
		exchange("agent restarted")
		if _, err := c.ask("tcp", vip+":80"); err != nil {
			t.Fatalf("new connection after restart: %v", err)
		}
		t.Logf("connection to %s exchanged %d messages across the restart", greeting, n)
	})
}

// readGreeting reads a raw TCP whoami greeting and returns the backend's
// name, failing t unless the backend saw the client pod's own address (no
// SNAT).
func readGreeting(t *testing.T, r *bufio.Reader) string {
	t.Helper()
	a := readAnswer(t, r)
	if a.RemoteIP() != netlab.ClientAddr.String() {
		t.Errorf("backend saw %q, want the client address", a.Remote)
	}
	return a.Hostname
}

// readAnswer reads a raw TCP whoami greeting.
func readAnswer(t *testing.T, r *bufio.Reader) whoami.Answer {
	t.Helper()
	a, err := parseGreeting(r)
	if err != nil {
		t.Fatalf("greeting: %v", err)
	}
	return a
}

// parseGreeting is readAnswer for goroutines: the error is returned.
func parseGreeting(r *bufio.Reader) (whoami.Answer, error) {
	var report strings.Builder
	for {
		l, err := r.ReadString('\n')
		if err != nil {
			return whoami.Answer{}, err
		}
		report.WriteString(l)
		if strings.HasPrefix(l, "RemoteAddr: ") {
			return whoami.ParseAnswer(report.String())
		}
	}
}

// A manifest that does not parse is reported and leaves every other
// service serving, including the ones the broken file itself had.
func TestMalformedManifestLeavesOthersServing(t *testing.T) {
	c := newCluster(t, 2, "auto")
	c.write("whoami.yaml", whoamiManifest(1))
	c.startAgent()

	c.writeRaw("broken.yaml", "apiVersion: v1\nkind: Service\nmetadata: {name: [oops\n")
	other := strings.NewReplacer(vip, "10.96.0.30", "whoami", "other", emptyVIP, "10.96.0.31").Replace(whoamiManifest(2))
	c.write("other.yaml", other)
	c.waitFor("the new service next to a broken file", time.Second, func() error {
		who, err := c.ask("tcp", "10.96.0.30:80")
		if err != nil || who != "backend-2" {
			return fmt.Errorf("%q %v", who, err)
		}
		return nil
	})
	// The file that served whoami breaks: whoami keeps its last good state.
	c.writeRaw("whoami.yaml", "{{{ not yaml")
	// Once the agent has read the broken file (it reports it), whoami
	// must still be served from its last good state.
	c.waitFor("the agent to report both files", time.Second, func() error {
		log := c.readAgentLog()
		for _, want := range []string{`object="manifest broken.yaml" reason="does not parse`, `object="manifest whoami.yaml" reason="does not parse`} {
			if !strings.Contains(log, want) {
				return fmt.Errorf("no %q in the agent log", want)
			}
		}
		return nil
	})
	for range 5 {
		if who, err := c.ask("tcp", vip+":80"); err != nil || who != "backend-1" {
			t.Fatalf("whoami after its file broke: %q %v", who, err)
		}
	}
}

// A pod veth that appears after the agent started is attached: replies
// from a backend behind it are reverse-NATed.
func TestNewDeviceIsAttached(t *testing.T) {
	eachMode(t, 1, whoamiManifest(1), func(t *testing.T, c *cluster) {

		be, err := c.topo.AddBackend()
		if err != nil {
			t.Fatal(err)
		}
		if err := serveWhoami(ctx(t), be, "backend-2"); err != nil {
			t.Fatal(err)
		}
		c.write("whoami.yaml", whoamiManifest(2))
		c.waitFor("the new pod to answer through the service", 3*time.Second, func() error {
			who, err := c.ask("tcp", vip+":80")
			if err != nil || who != "backend-2" {
				return fmt.Errorf("%q %v", who, err)
			}
			return nil
		})
	})
}

// A frame whose IPv4 header is cut short is dropped and counted, on the
// real receive path (BPF_PROG_TEST_RUN refuses such frames).
func TestTruncatedIPv4HeaderIsDropped(t *testing.T) {
	c := newCluster(t, 1, "auto")
	c.write("whoami.yaml", whoamiManifest(1))
	c.startAgent()
	node, err := c.topo.Node.Netlink().LinkByName(netlab.NodeClientDev)
	if err != nil {
		t.Fatal(err)
	}
	before := c.counter("drop-malformed-ip")
	frame := make([]byte, 14+12) // Ethernet + 12 of the 20 bytes of IPv4
	copy(frame[0:6], node.Attrs().HardwareAddr)
	frame[12], frame[13] = 0x08, 0x00
	frame[14] = 0x45
	if err := sendRawFrame(c.topo.Client, "eth0", frame, 3); err != nil {
		t.Fatal(err)
	}
	c.waitFor("drop-malformed-ip to count 3 frames", time.Second, func() error {
		if got := c.counter("drop-malformed-ip") - before; got != 3 {
			return fmt.Errorf("counted %d", got)
		}
		return nil
	})
	// The service still works.
	if _, err := c.ask("tcp", vip+":80"); err != nil {
		t.Fatal(err)
	}
}

// After a connection through the VIP ends, by RST or by FIN, a connection
// from the same client port straight to the backend works: the finished
// flow's reply entry does not capture it.
func TestClientPortReuseAfterServiceConnection(t *testing.T) {
	c := newCluster(t, 1, "auto")
	c.write("whoami.yaml", whoamiManifest(1))
	c.startAgent()
	for i, linger := range []int{0, -1} { // RST, then an orderly FIN close
		local := &net.TCPAddr{IP: netlab.ClientAddr.AsSlice(), Port: 40100 + i}
		dialer := net.Dialer{LocalAddr: local, Timeout: 2 * time.Second, Control: reuseAddr}
		for _, target := range []string{vip + ":80", netlab.BackendAddr(1).String() + ":8080"} {
			var conn net.Conn
			err := c.topo.Client.Do(func() (err error) {
				conn, err = dialer.Dial("tcp", target)
				return err
			})
			if err != nil {
				t.Fatalf("close %d: dial %s from port %d: %v", linger, target, local.Port, err)
			}
			conn.(*net.TCPConn).SetLinger(linger)
			conn.Close()
		}
	}
}

// A resolver opens a socket per query, and a new socket may get the port of
// an answered translated flow, which lives 30 s: its datagrams straight to
// the backend must be answered by the backend, not rewritten to come from
// the VIP (which the socket, connected to the backend, would drop).
func TestClientUDPPortReuseAfterServiceFlow(t *testing.T) {
	c := newCluster(t, 1, "auto")
	c.write("whoami.yaml", whoamiManifest(1))
	c.startAgent()
	dialer := net.Dialer{LocalAddr: &net.UDPAddr{IP: netlab.ClientAddr.AsSlice(), Port: 40110}}
	for _, target := range []string{vip + ":80", netlab.BackendAddr(1).String() + ":8080", vip + ":80"} {
		var conn net.Conn
		if err := c.topo.Client.Do(func() (err error) {
			conn, err = dialer.Dial("udp", target)
			return err
		}); err != nil {
			t.Fatalf("dial %s from port 40110: %v", target, err)
		}
		who := askOn(t, conn)
		conn.Close()
		if who != "backend-1" {
			t.Fatalf("%s from port 40110: answered by %q", target, who)
		}
	}
}

// reuseAddr lets a test bind a client port whose previous connection is in
// TIME_WAIT, as a busy client's port allocation does.
func reuseAddr(network, address string, rc syscall.RawConn) error {
	var serr error
	err := rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1)
	})
	if err != nil {
		return err
	}
	return serr
}
