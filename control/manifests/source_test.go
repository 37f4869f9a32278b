package manifests

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/sluice-lb/sluice/control"
)

// sink records a Source's calls.
type sink struct {
	mu       sync.Mutex
	calls    []string
	node     control.NodeInfo
	services map[string]*corev1.Service
	changed  chan struct{}
}

func newSink() *sink {
	return &sink{services: map[string]*corev1.Service{}, changed: make(chan struct{})}
}

func (s *sink) record(f func(), format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f != nil {
		f()
	}
	s.calls = append(s.calls, fmt.Sprintf(format, args...))
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *sink) UpsertService(svc *corev1.Service) {
	s.record(func() { s.services[svc.Namespace+"/"+svc.Name] = svc }, "UpsertService %s/%s", svc.Namespace, svc.Name)
}
func (s *sink) DeleteService(ns, name string) {
	s.record(func() { delete(s.services, ns+"/"+name) }, "DeleteService %s/%s", ns, name)
}
func (s *sink) UpsertSlice(es *discoveryv1.EndpointSlice) {
	s.record(nil, "UpsertSlice %s/%s", es.Namespace, es.Name)
}
func (s *sink) DeleteSlice(ns, name string) { s.record(nil, "DeleteSlice %s/%s", ns, name) }
func (s *sink) SetNode(n control.NodeInfo) {
	s.record(func() { s.node = n }, "SetNode %s zone=%s ips=%s cidrs=%s", n.Name, n.Zone, n.InternalIPs, n.PodCIDRs)
}
func (s *sink) Synced() { s.record(nil, "Synced") }
func (s *sink) Skipped(p []control.Problem) {
	s.record(nil, "Skipped %v", p)
}

// waitCall waits for the call c and returns its index.
func (s *sink) waitCall(t *testing.T, c string) int {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		s.mu.Lock()
		ch := s.changed
		for i, got := range s.calls {
			if got == c {
				s.mu.Unlock()
				return i
			}
		}
		calls := strings.Join(s.calls, "\n")
		s.mu.Unlock()
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("never saw %q; calls:\n%s", c, calls)
		}
	}
}

func (s *sink) count(prefix string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, c := range s.calls {
		if strings.HasPrefix(c, prefix) {
			n++
		}
	}
	return n
}

// running runs a Source of dir for node-1 for the test's duration.
func running(t *testing.T, dir string) *sink {
	t.Helper()
	d := open(t, dir)
	s := newSink()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- NewSource(d, "node-1").Run(ctx, s) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return s
}

// nodeDoc is a Node as a lab writes it, with a label and an ExternalIP
// that are no InternalIP.
func nodeDoc(name, zone, podCIDR string, internalIPs ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: v1\nkind: Node\nmetadata:\n  name: %s\n  labels: {kubernetes.io/hostname: %s", name, name)
	if zone != "" {
		fmt.Fprintf(&b, ", topology.kubernetes.io/zone: %s", zone)
	}
	fmt.Fprintf(&b, "}\nspec:\n  podCIDR: %s\n  podCIDRs: [%s]\nstatus:\n  addresses:\n  - {type: Hostname, address: %s}\n  - {type: ExternalIP, address: 203.0.113.9}\n", podCIDR, podCIDR, name)
	for _, ip := range internalIPs {
		fmt.Fprintf(&b, "  - {type: InternalIP, address: %s}\n", ip)
	}
	return b.String()
}

// The directory holds every node's Node; the source describes its own
// node from the one of its name, before Synced, and ignores the others
// without a problem.
func TestSourceNodeFromItsManifest(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "nodes.yaml", nodeDoc("node-0", "z0", "10.244.0.0/24", "192.168.1.10")+"---\n"+
		nodeDoc("node-1", "z1", "10.244.1.0/24", "192.168.1.11", "10.0.0.11")+"---\n"+
		nodeDoc("node-2", "z2", "10.244.2.0/24", "192.168.1.12"))
	write(t, dir, "svc.yaml", svcA)
	s := running(t, dir)
	node := s.waitCall(t, "SetNode node-1 zone=z1 ips=192.168.1.11,10.0.0.11 cidrs=10.244.1.0/24")
	if synced := s.waitCall(t, "Synced"); synced < node {
		t.Errorf("Synced (call %d) before the node (call %d)", synced, node)
	}
	if n := s.count("SetNode"); n != 1 {
		t.Errorf("%d SetNode calls, want 1", n)
	}
	if n := s.count("Skipped"); n != 0 {
		t.Errorf("the other nodes' Nodes were reported: %v", s.calls)
	}
}

// Without a Node of its name the node is its name alone, as before Node
// manifests were read.
func TestSourceNodeWithoutManifest(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "nodes.yaml", nodeDoc("node-0", "z0", "10.244.0.0/24", "192.168.1.10"))
	s := running(t, dir)
	s.waitCall(t, "SetNode node-1 zone= ips= cidrs=")
	s.waitCall(t, "Synced")
}

// The Node's file is followed like any manifest: a new address is a new
// NodeInfo; a rewrite that changes nothing of it, or another node's
// change, is none; the file gone leaves the name alone; the Node
// appearing later describes the node again.
func TestSourceFollowsNodeChanges(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "nodes.yaml", nodeDoc("node-1", "z1", "10.244.1.0/24", "192.168.1.11"))
	s := running(t, dir)
	s.waitCall(t, "SetNode node-1 zone=z1 ips=192.168.1.11 cidrs=10.244.1.0/24")
	s.waitCall(t, "Synced")

	write(t, dir, "nodes.yaml", nodeDoc("node-1", "z1", "10.244.1.0/24", "192.168.1.21"))
	s.waitCall(t, "SetNode node-1 zone=z1 ips=192.168.1.21 cidrs=10.244.1.0/24")
	write(t, dir, "nodes.yaml", nodeDoc("node-1", "z1", "10.244.1.0/24", "192.168.1.21")+"---\n"+nodeDoc("node-2", "z2", "10.244.2.0/24", "192.168.1.12"))
	write(t, dir, "nodes.yaml", nodeDoc("node-1", "z1", "10.244.7.0/24", "192.168.1.21")+"---\n"+nodeDoc("node-2", "z2", "10.244.2.0/24", "192.168.1.12"))
	s.waitCall(t, "SetNode node-1 zone=z1 ips=192.168.1.21 cidrs=10.244.7.0/24")
	if n := s.count("SetNode"); n != 3 {
		t.Errorf("%d SetNode calls, want 3 (one per change of this node): %v", n, s.calls)
	}

	if err := os.Remove(filepath.Join(dir, "nodes.yaml")); err != nil {
		t.Fatal(err)
	}
	s.waitCall(t, "SetNode node-1 zone= ips= cidrs=")
	write(t, dir, "other.yaml", nodeDoc("node-1", "z9", "10.244.9.0/24", "192.168.1.99"))
	s.waitCall(t, "SetNode node-1 zone=z9 ips=192.168.1.99 cidrs=10.244.9.0/24")
}

// A Node that does not decode is reported by name, and keeps its last
// good version, as any manifest object.
func TestSourceBadNodeKeepsLastGood(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "nodes.yaml", nodeDoc("node-1", "z1", "10.244.1.0/24", "192.168.1.11"))
	s := running(t, dir)
	s.waitCall(t, "Synced")
	write(t, dir, "nodes.yaml", "apiVersion: v1\nkind: Node\nmetadata: {name: node-1}\nstatus: {addresses: 7}\n")
	i := s.waitCall(t, "Skipped [manifest nodes.yaml: Node node-1: json: cannot unmarshal number into Go struct field NodeStatus.status.addresses of type []v1.NodeAddress (keeping its previous version)]")
	if n := s.count("SetNode"); n != 1 {
		t.Errorf("%d SetNode calls after call %d, want the first only", n, i)
	}
}

// A Service's status.loadBalancer in a manifest is the Service's, as the
// cloud controller would have written it.
func TestSourceServiceLoadBalancerStatus(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "lb.yaml", `apiVersion: v1
kind: Service
metadata: {name: lb, namespace: ns}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.10
  ports: [{port: 80, nodePort: 30080}]
status:
  loadBalancer:
    ingress: [{ip: 203.0.113.7}, {ip: 203.0.113.8, ipMode: Proxy}]
`)
	s := running(t, dir)
	s.waitCall(t, "UpsertService ns/lb")
	s.mu.Lock()
	ing := s.services["ns/lb"].Status.LoadBalancer.Ingress
	s.mu.Unlock()
	if len(ing) != 2 || ing[0].IP != "203.0.113.7" || ing[1].IP != "203.0.113.8" || ing[1].IPMode == nil || *ing[1].IPMode != corev1.LoadBalancerIPModeProxy {
		t.Errorf("status.loadBalancer.ingress %+v", ing)
	}
}
