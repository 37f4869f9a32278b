package test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sluice-lb/sluice/internal/agenttest"
	"github.com/sluice-lb/sluice/internal/cli"
	"github.com/sluice-lb/sluice/internal/netlab"
	"github.com/sluice-lb/sluice/internal/testenv"
	"github.com/sluice-lb/sluice/internal/whoami"
	"github.com/sluice-lb/sluice/loader"
)

// multiCluster is N nodes on an underlay (netlab.Cluster), each running
// its own agent from one shared manifests directory, whoami pods on every
// node, and an external client outside the cluster. Each node has a cgroup
// of its own for its host-network processes (agent, hostNetwork servers
// and clients), under a cgroup v2 hierarchy the test mounts when the
// machine has none.
type multiCluster struct {
	t         testing.TB
	net       *netlab.Cluster
	cgroups   *netlab.Cgroup2Root
	cgroupDir string // where cgroups is mounted when the test mounted it
	nodes     []*mnode
	manifests string
	mode      string
	ctx       context.Context
	stop      context.CancelFunc
	// cgroupRoot passes each agent --cgroup-root with its node's cgroup.
	cgroupRoot bool
	agentArgs  []string // added to every agent's command line
}

// mnode is one node of a multiCluster.
type mnode struct {
	*netlab.Node
	c        *multiCluster
	pinDir   string
	agent    *agenttest.Agent
	agentLog string
	pods     []*mpod
}

// mpod is a pod serving whoami on :8080 under its name.
type mpod struct {
	Name string // n<node>-pod<j>
	NS   *netlab.NS
	Addr netip.Addr
	Node *mnode
}

// newMultiCluster builds nodes nodes with podsPerNode whoami pods each and
// writes the Node objects (nodes.yaml); no agent runs yet (startAgents).
func newMultiCluster(t testing.TB, nodes, podsPerNode int, mode string) *multiCluster {
	t.Helper()
	testenv.Privileged(t)
	prefix := fmt.Sprintf("slm%d-%d", os.Getpid()%100000, clusterSeq.Add(1))
	ctx, stop := context.WithCancel(context.Background())
	c := &multiCluster{t: t, mode: mode, manifests: t.TempDir(), ctx: ctx, stop: stop,
		cgroupDir: filepath.Join("/run", "sluice-"+prefix, "cgroup2")}
	t.Cleanup(c.close)
	net, err := netlab.NewCluster(prefix, nodes) // removes what it made if it fails
	if err != nil {
		t.Fatal(err)
	}
	c.net = net
	if c.cgroups, err = netlab.MountCgroup2(c.cgroupDir); err != nil {
		t.Fatal(err)
	}
	if err := c.net.MakeCgroups(c.cgroups); err != nil {
		t.Fatal(err)
	}
	logs := t.TempDir()
	for _, n := range c.net.Nodes {
		c.nodes = append(c.nodes, &mnode{Node: n, c: c,
			pinDir:   filepath.Join(loader.DefaultBPFFS, "sluice-"+prefix+"-"+n.Name),
			agentLog: filepath.Join(logs, n.Name+"-agent.log")})
	}
	for _, n := range c.nodes {
		for range podsPerNode {
			n.addPod()
		}
	}
	c.write("nodes.yaml", c.net.NodeManifest())
	return c
}

// node is node i (1-based).
func (c *multiCluster) node(i int) *mnode { return c.nodes[i-1] }

// addPod adds a whoami pod to the node.
func (n *mnode) addPod() *mpod {
	t := n.c.t
	t.Helper()
	ns, err := n.c.net.AddPod(n.Node)
	if err != nil {
		t.Fatal(err)
	}
	j := len(n.Pods)
	p := &mpod{Name: fmt.Sprintf("n%d-pod%d", n.Index, j), NS: ns, Addr: netlab.PodAddr(n.Index, j), Node: n}
	if err := serveWhoami(n.c.ctx, ns, p.Name); err != nil {
		t.Fatal(err)
	}
	n.pods = append(n.pods, p)
	return p
}

// pod is pod j (1-based) of the node.
func (n *mnode) pod(j int) *mpod { return n.pods[j-1] }

func (c *multiCluster) write(name, content string) {
	c.t.Helper()
	writeManifest(c.t, c.manifests, name, content)
}

// startAgents starts every node's agent and waits until each serves.
func (c *multiCluster) startAgents(extra ...string) {
	c.t.Helper()
	for _, n := range c.nodes {
		n.startAgent(extra...)
	}
}

// startAgent starts the node's agent, in the node's namespace and cgroup,
// with extra arguments added, and waits for its /healthz.
func (n *mnode) startAgent(extra ...string) {
	c := n.c
	c.t.Helper()
	args := []string{"agent", "--manifests", c.manifests, "--pin-dir", n.pinDir,
		"--node-name", n.Name, "--service-cidr", "10.96.0.0/12", "--attach", c.mode,
		"--min-sync-period", "10ms"}
	if c.cgroupRoot {
		args = append(args, "--cgroup-root", n.Cgroup.Path)
	}
	args = append(append(args, c.agentArgs...), extra...)
	n.agent = agenttest.StartIn(c.t, n.NS, n.Cgroup, n.agentLog, nil, args...)
	if err := cli.WaitServing(n.NS, cli.DefaultHealthzAddr, testenv.Scaled(10*time.Second)); err != nil {
		c.t.Fatalf("%s: %v", n.Name, err)
	}
}

// stopAgent stops the node's agent with SIGTERM; killAgent with SIGKILL.
func (n *mnode) stopAgent() { n.agent.Stop(); n.agent = nil }
func (n *mnode) killAgent() { n.agent.Kill(); n.agent = nil }

// startHost runs `sluice args...` as a host-network process of the node:
// in its namespace and born in its cgroup. It is killed when the test
// ends; its output goes to a log shown if the test fails.
func (n *mnode) startHost(name string, args ...string) *agenttest.Agent {
	t := n.c.t
	t.Helper()
	logPath := filepath.Join(t.TempDir(), n.Name+"-"+name+".log")
	p := agenttest.StartIn(t, n.NS, n.Cgroup, logPath, nil, args...)
	t.Cleanup(func() {
		p.Kill()
		agenttest.ShowLogOnFailure(t, n.Name+" "+name, logPath)
	})
	return p
}

// serveHostWhoami runs a hostNetwork whoami server on the node, named
// name, on port (TCP and UDP, every address), and waits until it answers.
func (n *mnode) serveHostWhoami(name string, port int) {
	n.c.t.Helper()
	n.startHost(name, "whoami", "--listen", fmt.Sprintf("0.0.0.0:%d", port), "--name", name)
	addr := netip.AddrPortFrom(n.IP, uint16(port)).String()
	n.c.waitFor(name+" listening", 5*time.Second, func() error {
		_, err := agenttest.AskAnswer(n.NS, "tcp", addr, time.Second)
		return err
	})
}

// askFromHost asks from a new host-network process of the node (its
// namespace and cgroup), as a hostNetwork client would.
func (n *mnode) askFromHost(proto, addr string) (whoami.Answer, error) {
	return agenttest.AskFrom(n.NS, n.Cgroup, proto, addr, 2*time.Second)
}

// ask asks from inside a namespace (a pod, the external client, a node).
func (c *multiCluster) ask(ns *netlab.NS, proto, addr string) (whoami.Answer, error) {
	return agenttest.AskAnswer(ns, proto, addr, 500*time.Millisecond)
}

// dialEcho opens a raw TCP connection to whoami from inside ns: greeted
// with the backend's name, then echoed (echoConn), for long-lived flows.
func (c *multiCluster) dialEcho(t *testing.T, ns *netlab.NS, addr string) *echoConn {
	t.Helper()
	return dialEchoFrom(t, ns, addr)
}

// external is the client outside the cluster.
func (c *multiCluster) external() *netlab.NS { return c.net.External }

// routeExternal routes dst from the external client through node.
func (c *multiCluster) routeExternal(dst netip.Prefix, n *mnode) {
	c.t.Helper()
	if err := c.net.RouteVia(dst, n.Node); err != nil {
		c.t.Fatal(err)
	}
}

func (c *multiCluster) waitFor(what string, timeout time.Duration, cond func() error) {
	c.t.Helper()
	testenv.WaitFor(c.t, what, timeout, cond)
}

// close stops the agents and removes their pins, the namespaces, the
// cgroups (killing what still runs there) and the cgroup2 mount.
func (c *multiCluster) close() {
	c.stop()
	for _, n := range c.nodes {
		n.agent.Kill()
		agenttest.Uninstall(c.t, n.NS, n.pinDir)
		agenttest.ShowLogOnFailure(c.t, n.Name+" agent", n.agentLog)
	}
	if c.net != nil {
		if err := c.net.Delete(); err != nil {
			c.t.Errorf("delete cluster: %v", err)
		}
	}
	if err := c.cgroups.Unmount(); err != nil {
		c.t.Errorf("unmount cgroup2: %v", err)
	}
	os.Remove(filepath.Dir(c.cgroupDir))
}
