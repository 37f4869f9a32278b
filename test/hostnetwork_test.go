package test

import (
	"net/netip"
	"testing"
	"time"

	"github.com/sluice-lb/sluice/bpf"
)

// Host-network clients (rules 13, 18, 24): processes in a node's own
// namespace (and cgroup, where the agent's socket hooks are attached)
// reach a ClusterIP and the node's NodePorts, TCP and UDP, through the
// net package; the backend, on the other node, sees the node's address.
// Loopback NodePorts are served only when --nodeport-addresses names them.
func TestHostNetworkClients(t *testing.T) {
	c := newMultiCluster(t, 2, 1, "auto")
	c.cgroupRoot = true
	be := c.node(2).pod(1)
	c.write("np.yaml", podService(svcSpec{Name: "np", ClusterIP: vip, NodePort: npPort, Spec: "  type: NodePort"}, be))
	c.startAgents()
	host := c.node(1)
	nodePort := netip.AddrPortFrom(host.IP, npPort).String()
	loopback := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), npPort).String()
	for _, proto := range []string{"tcp", "udp"} {
		for _, addr := range []string{vip + ":80", nodePort} {
			c.waitFor(proto+" from the host to "+addr, 10*time.Second, func() error {
				a, err := host.askFromHost(proto, addr)
				if err == nil && (a.Hostname != be.Name || a.RemoteIP() != host.IP.String()) {
					t.Errorf("%s to %s: %s saw %s; want %s seeing %s", proto, addr, a.Hostname, a.Remote, be.Name, host.IP)
				}
				return err
			})
		}
		if a, err := host.askFromHost(proto, loopback); err == nil {
			t.Errorf("%s to %s answered by %s: loopback NodePorts are not served by default", proto, loopback, a.Hostname)
		}
	}

	host.stopAgent()
	host.startAgent("--nodeport-addresses", "127.0.0.0/8,192.168.50.0/24")
	for _, proto := range []string{"tcp", "udp"} {
		c.waitFor(proto+" from the host to "+loopback, 10*time.Second, func() error {
			a, err := host.askFromHost(proto, loopback)
			if err == nil && a.Hostname != be.Name {
				t.Errorf("%s to %s answered by %s", proto, loopback, a.Hostname)
			}
			return err
		})
	}
}

// BenchmarkLabHostNetworkClusterIP compares a host-network client's TCP
// connects to a ClusterIP (translated at connect time by the socket
// hooks) with the same client's connects straight to the backend.
func BenchmarkLabHostNetworkClusterIP(b *testing.B) {
	c := newMultiCluster(b, 2, 1, "auto")
	c.cgroupRoot = true
	be := c.node(1).pod(1)
	c.write("svc.yaml", podService(svcSpec{Name: "svc", ClusterIP: vip}, be))
	c.startAgents()
	host := c.node(1)
	enableBPFStats(b)
	targets := []struct{ name, addr string }{
		{"floor", netip.AddrPortFrom(be.Addr, 8080).String()},
		{"host-clusterip", vip + ":80"},
	}
	runConnectBench(b, host.pinDir, targets, func(addr string, n, conc int) (connectStats, error) {
		return agenttestStormFrom(host, addr, n, conc)
	}, bpf.SluiceSockProgSluiceSockConnect4)
}
