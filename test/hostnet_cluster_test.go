package test

import (
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"

	"github.com/sluice-lb/sluice/internal/agenttest"
	"github.com/sluice-lb/sluice/internal/netlab"
	"github.com/sluice-lb/sluice/internal/testenv"
)

// A host-network client (a process of the node's namespace, in the cgroup
// the agent serves with --cgroup-root) reaches a ClusterIP's backends in
// their pods and is refused by one without endpoints, through the socket
// programs: no tc hook sees its connects. A process outside the cgroup
// is not translated. (TestHostNetworkClients covers NodePorts across two
// nodes.)
func TestHostNetworkClientReachesClusterIP(t *testing.T) {
	testenv.Privileged(t)
	cgPath := testenv.Cgroup(t) // before the cluster: removed after its agent is
	cg := &netlab.Cgroup{Path: cgPath}
	c := newCluster(t, 3, "tc")
	c.agentArgs = []string{"--cgroup-root", cgPath}
	c.write("whoami.yaml", whoamiManifest(1, 2))
	c.startAgent()
	if log := c.readAgentLog(); !strings.Contains(log, "socket-level load balancing attached") {
		t.Fatalf("agent did not attach the socket programs; log:\n%s", log)
	}

	for _, proto := range []string{"tcp", "udp"} {
		hits := map[string]int{}
		for range 20 {
			a, err := agenttest.AskFrom(c.topo.Node, cg, proto, vip+":80", time.Second)
			if err != nil {
				t.Fatalf("%s from the node: %v", proto, err)
			}
			hits[a.Hostname]++
		}
		if len(hits) != 2 || hits["backend-1"] == 0 || hits["backend-2"] == 0 {
			t.Errorf("%s answers %v: want backend-1 and backend-2 only", proto, hits)
		}
	}
	if n := c.counter("sock-connect"); n < 40 {
		t.Errorf("sock-connect counted %d, want at least 40", n)
	}

	want := "operation not permitted"
	if features.HaveProgramHelper(ebpf.CGroupSockAddr, asm.FnSetRetval) == nil {
		want = "connection refused"
	}
	if _, err := agenttest.AskFrom(c.topo.Node, cg, "tcp", emptyVIP+":80", time.Second); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("no endpoints, from the node: %v, want %q", err, want)
	}
	if a, err := agenttest.AskFrom(c.topo.Node, nil, "tcp", vip+":80", 300*time.Millisecond); err == nil {
		t.Errorf("a process outside the cgroup reached %s: want it untranslated", a.Hostname)
	}
}
