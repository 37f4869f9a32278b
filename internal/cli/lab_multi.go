package cli

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/sluice-lb/sluice/internal/netlab"
)

// The multi-node lab's names beside the single-node lab's.
const (
	labCgroupDir   = labStateDir + "/cgroup2" // the lab's own cgroup2 mount
	labNodesFile   = labStateDir + "/nodes"   // how many nodes the lab has
	labMultiClient = labPrefix + "-n1-pod1"   // the client pod, on node 1
)

// labNodePinDir is node i's agent's pin dir.
func labNodePinDir(i int) string { return fmt.Sprintf("%s-node-%d", labPinDir, i) }

// labBackendName names backend k on node i, so traffic shows where it went.
func labBackendName(k, i int) string { return fmt.Sprintf("backend-%d.node-%d", k, i) }

// labMultiOptions are what `sluice lab up` takes for more than one node.
type labMultiOptions struct {
	nodes, backends int
	attach          string
	// cgroupRoot passes each agent --cgroup-root with its node's cgroup.
	cgroupRoot bool
}

// labUpMulti builds nodes on an underlay (netlab.Cluster): a client pod on
// node 1, backends spread over the nodes round robin, one agent per node in
// the node's namespace and cgroup, all reading one manifests directory that
// also holds the Node objects.
func labUpMulti(o labMultiOptions) error {
	self, manifestDir, err := labPrepare()
	if err != nil {
		return err
	}
	if err := os.WriteFile(labNodesFile, []byte(strconv.Itoa(o.nodes)), 0o644); err != nil {
		return err
	}
	cl, err := netlab.NewCluster(labPrefix, o.nodes)
	if err != nil {
		return err
	}
	root, err := netlab.MountCgroup2(labCgroupDir)
	if err != nil {
		return err
	}
	if err := cl.MakeCgroups(root); err != nil {
		return err
	}
	if _, err := cl.AddPod(cl.Nodes[0]); err != nil { // the client
		return err
	}
	var endpoints []labEndpoint
	for k := 1; k <= o.backends; k++ {
		node := cl.Nodes[(k-1)%o.nodes]
		pod, err := cl.AddPod(node)
		if err != nil {
			return err
		}
		name := labBackendName(k, node.Index)
		if err := labStart(pod, name, self, "whoami", "--listen", fmt.Sprintf("0.0.0.0:%d", labBackPort), "--name", name); err != nil {
			return err
		}
		endpoints = append(endpoints, labEndpoint{netlab.PodAddr(node.Index, len(node.Pods)).String(), node.Name})
	}
	if err := os.WriteFile(filepath.Join(manifestDir, "nodes.yaml"), []byte(cl.NodeManifest()), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(manifestDir, "whoami.yaml"), []byte(labServices(endpoints)), 0o644); err != nil {
		return err
	}
	for _, node := range cl.Nodes {
		args := []string{"agent", "--manifests", manifestDir, "--pin-dir", labNodePinDir(node.Index),
			"--node-name", node.Name, "--service-cidr", "10.96.0.0/12", "--attach", o.attach}
		if o.cgroupRoot {
			args = append(args, "--cgroup-root", node.Cgroup.Path)
		}
		cmd := func(cmd *exec.Cmd) error { return node.NS.StartInCgroup(node.Cgroup, cmd) }
		if err := labStartWith(cmd, "agent-"+node.Name, self, args...); err != nil {
			return err
		}
	}
	for _, node := range cl.Nodes {
		if err := WaitServing(node.NS, DefaultHealthzAddr, 10*time.Second); err != nil {
			return fmt.Errorf("%s: %w (agent log: %s)", node.Name, err, filepath.Join(labStateDir, "agent-"+node.Name+".log"))
		}
	}
	labPrintMulti(cl, o, manifestDir)
	return nil
}

func labPrintMulti(cl *netlab.Cluster, o labMultiOptions, manifestDir string) {
	fmt.Printf("lab up: %d nodes on the underlay %s-underlay (bridge br0), external client %s-ext %s\n",
		o.nodes, labPrefix, labPrefix, netlab.ExternalAddr)
	for _, n := range cl.Nodes {
		fmt.Printf("  %-7s netns %s  eth0 %s  pods %s  cgroup %s  pins %s\n",
			n.Name, n.NS.Name, n.IP, n.PodCIDR, n.Cgroup.Path, labNodePinDir(n.Index))
	}
	fmt.Printf(`  client pod %[1]s %[2]s on node-1; %[3]d backends running whoami on :%[4]d, spread round robin
  service demo/whoami       %[5]s:%[6]d TCP+UDP -> %[3]d backends
  service demo/nobody-home  %[7]s:%[6]d TCP (no endpoints: connections are refused)
  manifests: %[8]s (Node objects in nodes.yaml); logs: %[9]s/*.log
try:
  sluice lab traffic
  sluice lb list --pin-dir %[10]s
  ip netns exec %[1]s curl -s http://%[5]s/
`, labMultiClient, netlab.PodAddr(1, 1), o.backends, labBackPort, labVIP, labPort, labEmptyVIP, manifestDir, labStateDir, labNodePinDir(1))
}

// labEndpoint is one backend pod: its address and its node.
type labEndpoint struct{ addr, node string }

// labServices is the demo: a service over every backend (TCP and UDP),
// each endpoint with its node, and a service without endpoints, whose
// clients are refused at once.
func labServices(eps []labEndpoint) string {
	var b strings.Builder
	fmt.Fprintf(&b, `apiVersion: v1
kind: Service
metadata: {name: whoami, namespace: demo}
spec:
  clusterIP: %s
  ports:
  - {name: http, port: %d, protocol: TCP, targetPort: %d}
  - {name: udp, port: %d, protocol: UDP, targetPort: %d}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: whoami-1
  namespace: demo
  labels: {kubernetes.io/service-name: whoami}
addressType: IPv4
ports:
- {name: http, port: %d, protocol: TCP}
- {name: udp, port: %d, protocol: UDP}
endpoints:
`, labVIP, labPort, labBackPort, labPort, labBackPort, labBackPort, labBackPort)
	for _, e := range eps {
		fmt.Fprintf(&b, "- {addresses: [%s], conditions: {ready: true}, nodeName: %s}\n", e.addr, e.node)
	}
	fmt.Fprintf(&b, `---
apiVersion: v1
kind: Service
metadata: {name: nobody-home, namespace: demo}
spec:
  clusterIP: %s
  ports:
  - {name: http, port: %d, protocol: TCP}
`, labEmptyVIP, labPort)
	return b.String()
}

// labNodes is how many nodes the running lab has (1 for the single-node
// lab, which writes no nodes file).
func labNodes() int {
	b, err := os.ReadFile(labNodesFile)
	if err != nil {
		return 1
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || n < 1 {
		return 1
	}
	return n
}
