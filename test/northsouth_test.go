package test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-lb/sluice/internal/agenttest"
	"github.com/sluice-lb/sluice/internal/netlab"
	"github.com/sluice-lb/sluice/internal/testenv"
	"github.com/sluice-lb/sluice/internal/whoami"
)

// North-south traffic on two nodes (rules 13, 14, 18-21, 23-28): the
// external client outside the cluster reaches NodePorts, load-balancer IPs
// and externalIPs; pods reach their own Service and host-network backends.

const (
	npPort     = 30080
	healthPort = 32000
	lbIP       = "192.168.60.1"
	extIP      = "192.168.70.1"
)

// askExternal asks from the external client, from local when valid.
func (c *multiCluster) askExternal(local netip.Addr, proto, addr string) (whoami.Answer, error) {
	var a whoami.Answer
	err := c.external().Do(func() (err error) {
		a, err = whoami.AskAnswerFrom(local, proto, addr, 500*time.Millisecond)
		return err
	})
	return a, err
}

// waitAnswer waits until addr answers from ns, then returns the answer.
func (c *multiCluster) waitAnswer(ns *netlab.NS, proto, addr string) whoami.Answer {
	c.t.Helper()
	var a whoami.Answer
	c.waitFor(proto+" answer from "+addr, 10*time.Second, func() (err error) {
		a, err = c.ask(ns, proto, addr)
		return err
	})
	return a
}

// External client -> NodePort of node 1 -> the only backend, on node 2:
// the flow is SNATed to node 1's address (so the backend's replies come
// back through node 1) and the client sees the NodePort as its peer, over
// TCP and UDP. The same NodePort on node 2, whose backend is local, keeps
// the client's own address (rule 26: no SNAT needed).
func TestNodePortSNATToRemoteBackend(t *testing.T) {
	eachModeMulti(t, 2, 1, func(t *testing.T, c *multiCluster) {
		be := c.node(2).pod(1)
		c.write("np.yaml", podService(svcSpec{Name: "np", ClusterIP: vip, NodePort: npPort, Spec: "  type: NodePort"}, be))
		c.startAgents()
		n1 := netip.AddrPortFrom(c.node(1).IP, npPort).String()
		n2 := netip.AddrPortFrom(c.node(2).IP, npPort).String()
		for _, proto := range []string{"tcp", "udp"} {
			a := c.waitAnswer(c.external(), proto, n1)
			if a.Hostname != be.Name || a.RemoteIP() != c.node(1).IP.String() {
				t.Errorf("%s via node 1: %s saw %s; want %s seeing node 1 (%s)", proto, a.Hostname, a.Remote, be.Name, c.node(1).IP)
			}
			a = c.waitAnswer(c.external(), proto, n2)
			if a.Hostname != be.Name || a.RemoteIP() != netlab.ExternalAddr.String() {
				t.Errorf("%s via node 2: %s saw %s; want %s seeing the client %s", proto, a.Hostname, a.Remote, be.Name, netlab.ExternalAddr)
			}
		}
		// A long-lived TCP flow through the SNAT: its peer is the
		// NodePort, and it keeps flowing both ways.
		ec := c.dialEcho(t, c.external(), n1)
		if got := ec.conn.RemoteAddr().String(); got != n1 {
			t.Errorf("client's peer %s, want the NodePort %s", got, n1)
		}
		ec.exchange(t, "through the SNAT")
		if n := agenttest.Counter(t, c.node(1).pinDir, "snat"); n == 0 {
			t.Error("node 1 counted no SNATed flow")
		}
	})
}

// 1,000 concurrent connections through one NodePort's SNAT to one backend:
// each gets a port of its own, so every connection gets its own replies.
// The connections are all open at once, but at most dialers of them are
// being set up at a time: 1,000 SYNs (and their synchronized
// retransmissions) in one burst overflow the veths' per-CPU backlog
// (netdev_max_backlog) of a starved VM before any program sees them,
// which is a test of the emulator, not of the SNAT. Dialers still race
// each other for ports on both CPUs.
func TestSNATThousandConnections(t *testing.T) {
	c := newMultiCluster(t, 2, 1, "auto")
	be := c.node(2).pod(1)
	c.write("np.yaml", podService(svcSpec{Name: "np", ClusterIP: vip, NodePort: npPort, Spec: "  type: NodePort"}, be))
	c.startAgents()
	n1 := netip.AddrPortFrom(c.node(1).IP, npPort).String()
	c.waitAnswer(c.external(), "tcp", n1)

	const conns, dialers = 1000, 64
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		errs    []string
		seen    = map[string]bool{}
		open    []net.Conn
		start   = make(chan struct{})
		dialing = make(chan struct{}, dialers)
	)
	for i := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			var conn net.Conn
			dialing <- struct{}{}
			err := c.external().Do(func() (err error) {
				conn, err = net.DialTimeout("tcp", n1, testenv.Scaled(10*time.Second))
				return err
			})
			<-dialing
			fail := func(err error) {
				mu.Lock()
				errs = append(errs, fmt.Sprintf("conn %d: %v", i, err))
				mu.Unlock()
			}
			if err != nil {
				fail(err)
				return
			}
			conn.SetDeadline(time.Now().Add(testenv.Scaled(30 * time.Second)))
			r := bufio.NewReader(conn)
			greeting, err := parseGreeting(r)
			if err != nil {
				fail(err)
				conn.Close()
				return
			}
			msg := fmt.Sprintf("conn-%04d\n", i)
			if _, err := io.WriteString(conn, msg); err != nil {
				fail(err)
				conn.Close()
				return
			}
			got := make([]byte, len(msg))
			if _, err := io.ReadFull(r, got); err != nil || string(got) != msg {
				fail(fmt.Errorf("echo %q, %v; want %q", got, err, msg))
				conn.Close()
				return
			}
			mu.Lock()
			seen[greeting.Remote] = true
			open = append(open, conn)
			mu.Unlock()
		}()
	}
	close(start)
	wg.Wait()
	defer func() {
		for _, c := range open {
			c.Close()
		}
	}()
	if len(errs) > 0 {
		t.Fatalf("%d of %d connections failed, e.g. %s; node 1's counters: %v", len(errs), conns,
			strings.Join(errs[:min(5, len(errs))], "; "), agenttest.Counters(t, c.node(1).pinDir))
	}
	// The backend saw 1,000 distinct node-1 ports: no two flows shared one.
	if len(seen) != conns {
		t.Errorf("the backend saw %d distinct client addresses for %d connections", len(seen), conns)
	}
	for r := range seen {
		if !strings.HasPrefix(r, c.node(1).IP.String()+":") {
			t.Errorf("backend saw %s, want node 1's address", r)
			break
		}
	}
}

// externalTrafficPolicy Local (rules 13, 14, 28): the node with the
// endpoint serves the NodePort and the load-balancer IP keeping the
// client's address; the node without one drops; each node's
// healthCheckNodePort says which, byte for byte.
func TestExternalTrafficPolicyLocal(t *testing.T) {
	c := newMultiCluster(t, 2, 1, "auto")
	be := c.node(2).pod(1)
	c.write("local.yaml", podService(svcSpec{Name: "local", ClusterIP: vip, NodePort: npPort, Spec: fmt.Sprintf(
		"  type: LoadBalancer\n  externalTrafficPolicy: Local\n  healthCheckNodePort: %d\nstatus:\n  loadBalancer:\n    ingress: [{ip: %s}]", healthPort, lbIP)}, be))
	c.startAgents()
	n1 := netip.AddrPortFrom(c.node(1).IP, npPort).String()
	n2 := netip.AddrPortFrom(c.node(2).IP, npPort).String()
	for _, proto := range []string{"tcp", "udp"} {
		if a := c.waitAnswer(c.external(), proto, n2); a.Hostname != be.Name || a.RemoteIP() != netlab.ExternalAddr.String() {
			t.Errorf("%s via node 2: %s saw %s; want %s seeing the client's own %s", proto, a.Hostname, a.Remote, be.Name, netlab.ExternalAddr)
		}
	}
	before := agenttest.Counter(t, c.node(1).pinDir, "drop-no-local-endpoints")
	if a, err := c.ask(c.external(), "tcp", n1); err == nil {
		t.Errorf("node 1 without a local endpoint answered: %+v", a)
	}
	if after := agenttest.Counter(t, c.node(1).pinDir, "drop-no-local-endpoints"); after == before {
		t.Error("node 1 counted no drop-no-local-endpoints")
	}
	// The LB IP, routed to node 2 as a load balancer would once node 2's
	// health check passes.
	c.routeExternal(netip.MustParsePrefix(lbIP+"/32"), c.node(2))
	if a := c.waitAnswer(c.external(), "tcp", lbIP+":80"); a.Hostname != be.Name || a.RemoteIP() != netlab.ExternalAddr.String() {
		t.Errorf("LB IP via node 2: %s saw %s; want the client's own address", a.Hostname, a.Remote)
	}

	for i, want := range []struct {
		code int
		n    int
	}{{503, 0}, {200, 1}} {
		n := c.node(i + 1)
		var h agenttest.HTTPAnswer
		c.waitFor(n.Name+" health check", 10*time.Second, func() (err error) {
			h, err = agenttest.HTTPGet(c.external(), netip.AddrPortFrom(n.IP, healthPort).String(), "/any/path", time.Second)
			return err
		})
		wantBody := fmt.Sprintf(`{"service":{"namespace":"e2e","name":"local"},"localEndpoints":%d,"serviceProxyHealthy":true}`, want.n)
		if h != (agenttest.HTTPAnswer{Code: want.code, Body: wantBody, ContentType: "application/json", NoSniff: "nosniff"}) {
			t.Errorf("%s health check: %+v; want %d %q", n.Name, h, want.code, wantBody)
		}
	}
}

// loadBalancerSourceRanges (rule 21): the LB IP admits a client inside a
// range and drops one outside, which the NodePort of the same Service
// still serves (ranges apply to LB IPs only).
func TestLoadBalancerSourceRanges(t *testing.T) {
	c := newMultiCluster(t, 2, 1, "auto")
	be := c.node(1).pod(1)
	other := netip.MustParseAddr("192.168.50.101")
	if err := c.external().AddrAdd(netlab.UnderlayDev, netip.PrefixFrom(other, 24)); err != nil {
		t.Fatal(err)
	}
	c.write("lb.yaml", podService(svcSpec{Name: "lb", ClusterIP: vip, NodePort: npPort, Spec: fmt.Sprintf(
		"  type: LoadBalancer\n  loadBalancerSourceRanges: [%s/32]\nstatus:\n  loadBalancer:\n    ingress: [{ip: %s}]", netlab.ExternalAddr, lbIP)}, be))
	c.startAgents()
	c.routeExternal(netip.MustParsePrefix(lbIP+"/32"), c.node(1))
	c.waitFor("admitted client", 10*time.Second, func() error {
		a, err := c.askExternal(netlab.ExternalAddr, "tcp", lbIP+":80")
		if err == nil && a.Hostname != be.Name {
			err = fmt.Errorf("answered by %s", a.Hostname)
		}
		return err
	})
	before := agenttest.Counter(t, c.node(1).pinDir, "drop-source-range")
	for _, proto := range []string{"tcp", "udp"} {
		if a, err := c.askExternal(other, proto, lbIP+":80"); err == nil {
			t.Errorf("%s from %s outside the range answered: %+v", proto, other, a)
		}
	}
	if after := agenttest.Counter(t, c.node(1).pinDir, "drop-source-range"); after < before+2 {
		t.Errorf("drop-source-range %d -> %d, want +2 at least", before, after)
	}
	if a, err := c.askExternal(other, "tcp", netip.AddrPortFrom(c.node(1).IP, npPort).String()); err != nil || a.Hostname != be.Name {
		t.Errorf("NodePort from %s: %+v, %v; ranges must not apply to it", other, a, err)
	}
}

// externalIPs (rule 19) are translated whether or not the address is on a
// node: here it is on none, and routed to node 1.
func TestExternalIPNotOnAnyNode(t *testing.T) {
	c := newMultiCluster(t, 2, 1, "auto")
	be := c.node(2).pod(1)
	c.write("ext.yaml", podService(svcSpec{Name: "ext", ClusterIP: vip, Spec: "  externalIPs: [" + extIP + "]"}, be))
	c.startAgents()
	c.routeExternal(netip.MustParsePrefix(extIP+"/32"), c.node(1))
	for _, proto := range []string{"tcp", "udp"} {
		if a := c.waitAnswer(c.external(), proto, extIP+":80"); a.Hostname != be.Name || a.RemoteIP() != c.node(1).IP.String() {
			t.Errorf("%s to %s: %s saw %s; want %s seeing node 1 (eTP Cluster, remote backend)", proto, extIP, a.Hostname, a.Remote, be.Name)
		}
	}
}

// Hairpin (rule 25): a pod reaching its own Service, whose only backend is
// itself, is answered by itself, from the service address.
func TestHairpin(t *testing.T) {
	eachModeMulti(t, 2, 1, func(t *testing.T, c *multiCluster) {
		pod := c.node(1).pod(1)
		c.write("self.yaml", podService(svcSpec{Name: "self", ClusterIP: vip}, pod))
		c.startAgents()
		for _, proto := range []string{"tcp", "udp"} {
			if a := c.waitAnswer(pod.NS, proto, vip+":80"); a.Hostname != pod.Name || a.RemoteIP() != c.node(1).IP.String() {
				t.Errorf("%s: %s saw %s; want %s seeing node 1's address (SNAT)", proto, a.Hostname, a.Remote, pod.Name)
			}
		}
	})
}

// A pod reaches a Service whose endpoint is a host-network process on its
// own node (the kubernetes Service of a single-node cluster): the reply
// leaves the node toward the pod and is translated back at egress.
func TestPodToHostNetworkBackend(t *testing.T) {
	c := newMultiCluster(t, 2, 1, "auto")
	n := c.node(1)
	n.serveHostWhoami("apiserver", 6443)
	c.write("kubernetes.yaml", fmt.Sprintf(`apiVersion: v1
kind: Service
metadata: {name: kubernetes, namespace: default}
spec:
  clusterIP: %s
  ports: [{name: https, port: 443, protocol: TCP, targetPort: 6443}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: kubernetes, namespace: default, labels: {kubernetes.io/service-name: kubernetes}}
addressType: IPv4
ports: [{name: https, port: 6443, protocol: TCP}]
endpoints:
- {addresses: [%s], conditions: {ready: true}, nodeName: %s}
`, vip, n.IP, n.Name))
	c.startAgents()
	pod := n.pod(1)
	c.waitFor("pod to kubernetes", 10*time.Second, func() error {
		_, err := c.ask(pod.NS, "tcp", vip+":443")
		return err
	})
	ec := c.dialEcho(t, pod.NS, vip+":443")
	if ec.who != "apiserver" || ec.seen.RemoteIP() != pod.Addr.String() {
		t.Errorf("answered by %s seeing %s; want apiserver seeing the pod %s", ec.who, ec.seen.Remote, pod.Addr)
	}
	if got := ec.conn.RemoteAddr().String(); got != vip+":443" {
		t.Errorf("pod's peer %s, want %s:443", got, vip)
	}
	ec.exchange(t, "to the host")
}
