// Package test holds sluice's privileged end-to-end suites: a node
// namespace running the agent, a client pod and backend pods on veths, and
// real traffic between them. The agent is this test binary re-executed as
// the sluice command, so the suite needs no other binary.
package test

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-lb/sluice/internal/agenttest"
	"github.com/sluice-lb/sluice/internal/cli"
	"github.com/sluice-lb/sluice/internal/netlab"
	"github.com/sluice-lb/sluice/internal/testenv"
	"github.com/sluice-lb/sluice/internal/whoami"
	"github.com/sluice-lb/sluice/loader"
)

const runAsSluice = agenttest.RunAsSluice

func TestMain(m *testing.M) { os.Exit(agenttest.Main(m)) }

const (
	vip      = "10.96.0.10"
	emptyVIP = "10.96.0.20"
)

var clusterSeq atomic.Int32

// cluster is one node running the agent, a client and N backends.
type cluster struct {
	t         testing.TB
	topo      *netlab.Topology
	pinDir    string
	manifests string
	mode      string
	agent     *agenttest.Agent
	agentLog  string
	agentEnv  []string // added to the agent's environment
	agentArgs []string // added to the agent's command line
	stop      context.CancelFunc
}

func newCluster(t testing.TB, backends int, mode string) *cluster {
	t.Helper()
	testenv.Privileged(t)
	prefix := fmt.Sprintf("sle%d-%d", os.Getpid()%100000, clusterSeq.Add(1))
	topo, err := netlab.NewTopology(prefix, backends)
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	c := &cluster{
		t: t, topo: topo, mode: mode, stop: stop,
		pinDir:    filepath.Join(loader.DefaultBPFFS, "sluice-"+prefix),
		manifests: t.TempDir(),
		agentLog:  filepath.Join(t.TempDir(), "agent.log"),
	}
	t.Cleanup(c.close)
	for i, be := range topo.Backends {
		if err := serveWhoami(ctx, be, fmt.Sprintf("backend-%d", i+1)); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// serveWhoami runs a whoami server inside a backend namespace: its
// sockets are created there, then served from this process.
func serveWhoami(ctx context.Context, ns *netlab.NS, name string) error {
	var srv *whoami.Server
	if err := ns.Do(func() (err error) {
		srv, err = whoami.Listen(name, "0.0.0.0:8080")
		return err
	}); err != nil {
		return err
	}
	go srv.Serve(ctx)
	return nil
}

func (c *cluster) close() {
	c.stop()
	c.killAgent()
	agenttest.Teardown(c.t, c.topo, c.pinDir, c.agentLog)
}

func (c *cluster) write(name, content string) {
	c.t.Helper()
	writeManifest(c.t, c.manifests, name, content)
}

// writeManifest writes a manifest file into dir, write-then-rename, so an
// agent never reads a half-written file.
func writeManifest(t testing.TB, dir, name, content string) {
	t.Helper()
	tmp := filepath.Join(dir, "."+name+".tmp")
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		t.Fatal(err)
	}
}

func (c *cluster) writeRaw(name, content string) {
	c.t.Helper()
	if err := os.WriteFile(filepath.Join(c.manifests, name), []byte(content), 0o644); err != nil {
		c.t.Fatal(err)
	}
}

// startAgent starts the agent in the node namespace and waits until it has
// programmed at least one frontend.
func (c *cluster) startAgent() {
	c.t.Helper()
	args := []string{"agent", "--manifests", c.manifests, "--pin-dir", c.pinDir,
		"--node-name", c.topo.Prefix + "-node", "--service-cidr", "10.96.0.0/12", "--attach", c.mode,
		// The tests time how fast a change is followed, not the
		// coalescing of the production default (1 s).
		"--min-sync-period", "10ms"}
	c.agent = agenttest.Start(c.t, c.topo.Node, c.agentLog, c.agentEnv, append(args, c.agentArgs...)...)
	if err := cli.WaitServing(c.topo.Node, cli.DefaultHealthzAddr, testenv.Scaled(10*time.Second)); err != nil {
		c.t.Fatal(err)
	}
}

// killAgent kills the agent with SIGKILL, as a crash or OOM kill would.
func (c *cluster) killAgent() {
	c.agent.Kill()
	c.agent = nil
}

// waitFor polls cond until it holds or the (scaled) timeout passes.
func (c *cluster) waitFor(what string, timeout time.Duration, cond func() error) {
	c.t.Helper()
	testenv.WaitFor(c.t, what, timeout, cond)
}

// ask sends one whoami request from the client pod.
func (c *cluster) ask(proto, addr string) (string, error) {
	return agenttest.Ask(c.topo.Client, proto, addr, 500*time.Millisecond)
}

// dial opens a TCP connection from the client pod.
func (c *cluster) dial(addr string, timeout time.Duration) (net.Conn, error) {
	return dialFrom(c.topo.Client, addr, timeout)
}

// dialFrom opens a TCP connection with its socket made in ns.
func dialFrom(ns *netlab.NS, addr string, timeout time.Duration) (net.Conn, error) {
	var conn net.Conn
	err := ns.Do(func() (err error) {
		conn, err = net.DialTimeout("tcp", addr, timeout)
		return err
	})
	return conn, err
}

// whoamiManifest is a Service with a TCP and a UDP port on vip and an
// EndpointSlice with the given backends (1-based), plus a Service on
// emptyVIP without endpoints.
func whoamiManifest(backends ...int) string {
	var b strings.Builder
	fmt.Fprintf(&b, `apiVersion: v1
kind: Service
metadata: {name: whoami, namespace: e2e}
spec:
  clusterIP: %s
  ports: [{name: http, port: 80, protocol: TCP}, {name: udp, port: 80, protocol: UDP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: whoami-1, namespace: e2e, labels: {kubernetes.io/service-name: whoami}}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}, {name: udp, port: 8080, protocol: UDP}]
endpoints:
`, vip)
	for _, i := range backends {
		fmt.Fprintf(&b, "- {addresses: [%s]}\n", netlab.BackendAddr(i))
	}
	fmt.Fprintf(&b, `---
apiVersion: v1
kind: Service
metadata: {name: empty, namespace: e2e}
spec: {clusterIP: %s, ports: [{name: http, port: 80}]}
`, emptyVIP)
	return b.String()
}

// attachModes are the attach paths every traffic test runs on: TCX and the
// clsact fallback, forced.
var attachModes = []string{"tcx", "tc"}

// eachMode runs f once per attach mode, each time on a new cluster whose
// agent serves manifest as whoami.yaml.
func eachMode(t *testing.T, backends int, manifest string, f func(t *testing.T, c *cluster)) {
	for _, mode := range attachModes {
		t.Run(mode, func(t *testing.T) {
			requireMode(t, mode)
			c := newCluster(t, backends, mode)
			c.write("whoami.yaml", manifest)
			c.startAgent()
			f(t, c)
		})
	}
}

// requireMode skips the TCX runs on kernels older than 6.6, which have no
// TCX; on newer kernels the agent must attach with it.
func requireMode(t *testing.T, mode string) {
	if mode == "tcx" {
		testenv.SkipOnOldKernel(t, "6.6", "TCX")
	}
}
