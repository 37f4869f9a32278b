package test

import (
	"net/netip"
	"testing"

	"github.com/sluice-lb/sluice/control/manifests"
	"github.com/sluice-lb/sluice/internal/netlab"
)

// The multi-node manifests read as what they mean, through the manifests
// source the agents use, with no problem reported (the Node objects
// included, which the source leaves to the node source).
func TestMultiNodeManifests(t *testing.T) {
	node := &mnode{Node: &netlab.Node{Index: 2, Name: "node-2"}}
	pod := &mpod{Name: "n2-pod1", Addr: netip.MustParseAddr("10.244.2.2"), Node: node}
	cl := &netlab.Cluster{Nodes: []*netlab.Node{node.Node}}
	dir := t.TempDir()
	writeManifest(t, dir, "nodes.yaml", cl.NodeManifest())
	writeManifest(t, dir, "svc.yaml", podService(svcSpec{Name: "np", ClusterIP: vip, NodePort: 30080,
		Spec: "  type: NodePort\n  externalTrafficPolicy: Local"}, pod))
	d, err := manifests.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	s := d.Snapshot()
	if len(s.Problems) != 0 {
		t.Fatalf("problems: %v", s.Problems)
	}
	if len(s.Services) != 1 || len(s.Slices) != 1 {
		t.Fatalf("%d services, %d slices, want 1 and 1", len(s.Services), len(s.Slices))
	}
	svc, es := s.Services[0], s.Slices[0]
	if svc.Spec.Type != "NodePort" || svc.Spec.ExternalTrafficPolicy != "Local" || svc.Spec.ClusterIP != vip ||
		len(svc.Spec.Ports) != 2 || svc.Spec.Ports[0].NodePort != 30080 || svc.Spec.Ports[1].NodePort != 30080 {
		t.Errorf("service spec %+v", svc.Spec)
	}
	if len(es.Endpoints) != 1 || es.Endpoints[0].NodeName == nil || *es.Endpoints[0].NodeName != "node-2" ||
		es.Endpoints[0].Addresses[0] != "10.244.2.2" {
		t.Errorf("endpoints %+v", es.Endpoints)
	}
}
