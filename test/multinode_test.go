package test

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-lb/sluice/internal/netlab"
)

// eachModeMulti runs f once per attach mode, each time on a new cluster of
// nodes nodes with podsPerNode whoami pods each, no agent started.
func eachModeMulti(t *testing.T, nodes, podsPerNode int, f func(t *testing.T, c *multiCluster)) {
	for _, mode := range attachModes {
		t.Run(mode, func(t *testing.T) {
			requireMode(t, mode)
			f(t, newMultiCluster(t, nodes, podsPerNode, mode))
		})
	}
}

// A pod on node 1 reaches a ClusterIP whose backends are a pod on node 1
// and a pod on node 2, over TCP and UDP: both are chosen, each sees the
// client pod's own address (no SNAT on the east-west path), and every
// answer comes back from the service address (the dial is to it, and a
// connected UDP socket takes replies from nowhere else).
func TestMultiNodeClusterIPAcrossNodes(t *testing.T) {
	eachModeMulti(t, 2, 2, func(t *testing.T, c *multiCluster) {
		client, local, remote := c.node(1).pod(1), c.node(1).pod(2), c.node(2).pod(1)
		// The underlay routes pod to pod across nodes before any agent
		// runs: what follows tests the service, not the lab.
		if a, err := c.ask(client.NS, "tcp", remote.Addr.String()+":8080"); err != nil || a.Hostname != remote.Name {
			t.Fatalf("pod to pod across nodes: %+v, %v", a, err)
		}
		c.write("whoami.yaml", podService(svcSpec{Name: "whoami", ClusterIP: vip}, local, remote))
		c.startAgents()
		for _, proto := range []string{"tcp", "udp"} {
			c.waitFor(proto+" through "+vip, 5*time.Second, func() error {
				_, err := c.ask(client.NS, proto, vip+":80")
				return err
			})
			seen := map[string]int{}
			for i := 0; i < 200 && (seen[local.Name] == 0 || seen[remote.Name] == 0); i++ {
				a, err := c.ask(client.NS, proto, vip+":80")
				if err != nil {
					t.Fatalf("%s request %d: %v", proto, i, err)
				}
				if a.Hostname != local.Name && a.Hostname != remote.Name {
					t.Fatalf("%s: answered by %q, not a backend", proto, a.Hostname)
				}
				if a.RemoteIP() != client.Addr.String() {
					t.Fatalf("%s: %s saw the client as %s, want the pod's own %s", proto, a.Hostname, a.Remote, client.Addr)
				}
				seen[a.Hostname]++
			}
			if seen[local.Name] == 0 || seen[remote.Name] == 0 {
				t.Fatalf("%s: answers %v, want both the node-1 and the node-2 backend", proto, seen)
			}
			t.Logf("%s: %s", proto, fmt.Sprint(seen))
		}
		// A long-lived flow to the node-2 backend keeps flowing both ways.
		for i := 0; ; i++ {
			ec := c.dialEcho(t, client.NS, vip+":80")
			if ec.who == remote.Name {
				if ec.seen.RemoteIP() != client.Addr.String() {
					t.Errorf("%s saw the client as %s, want %s", remote.Name, ec.seen.Remote, client.Addr)
				}
				ec.exchange(t, "across nodes")
				break
			}
			ec.conn.Close()
			if i == 100 {
				t.Fatalf("100 connections, none to %s", remote.Name)
			}
		}
	})
}

// The lab the north-south tests stand on: each agent runs in its node's
// cgroup; a hostNetwork server on node 2 answers a hostNetwork client of
// node 1 (itself in node 1's cgroup) and the external client, each seen
// from its own underlay address; the external client has no route to any
// pod, and reaches one only once the lab routes its address via a node.
func TestMultiNodeLab(t *testing.T) {
	c := newMultiCluster(t, 2, 1, "auto")
	c.write("whoami.yaml", podService(svcSpec{Name: "whoami", ClusterIP: vip}, c.node(2).pod(1)))
	c.startAgents()
	for _, n := range c.nodes {
		pids, err := n.Cgroup.Pids()
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(pids, n.agent.Pid()) {
			t.Errorf("%s: agent %d not in its cgroup %s (%v)", n.Name, n.agent.Pid(), n.Cgroup.Path, pids)
		}
	}
	c.node(2).serveHostWhoami("host-2", 9000)
	server := netip.AddrPortFrom(c.node(2).IP, 9000).String()
	a, err := c.node(1).askFromHost("tcp", server)
	if err != nil || a.Hostname != "host-2" || a.RemoteIP() != c.node(1).IP.String() {
		t.Errorf("node 1 host to node 2 host: %+v, %v; want host-2 seeing %s", a, err, c.node(1).IP)
	}
	a, err = c.ask(c.external(), "udp", server)
	if err != nil || a.Hostname != "host-2" || a.RemoteIP() != netlab.ExternalAddr.String() {
		t.Errorf("external to node 2 host: %+v, %v; want host-2 seeing %s", a, err, netlab.ExternalAddr)
	}
	pod := c.node(2).pod(1)
	if _, err := c.ask(c.external(), "tcp", pod.Addr.String()+":8080"); !errors.Is(err, syscall.ENETUNREACH) {
		t.Errorf("external to pod %s without a route: %v, want network unreachable", pod.Addr, err)
	}
	c.routeExternal(netip.PrefixFrom(pod.Addr, 32), c.node(2))
	if a, err := c.ask(c.external(), "tcp", pod.Addr.String()+":8080"); err != nil || a.Hostname != pod.Name {
		t.Errorf("external to pod %s routed via node 2: %+v, %v", pod.Addr, a, err)
	}
}
