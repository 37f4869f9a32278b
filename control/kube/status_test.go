package kube

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sluice-lb/sluice/control"
)

// The Node's pod CIDRs reach the sink, through the informer's transform,
// and a change of them, or of its InternalIPs by a status update, is a
// new NodeInfo.
func TestNodePodCIDRsAndAddressUpdates(t *testing.T) {
	n := node(nodeName, "1", "zone-1", "192.168.0.10")
	n.Spec.PodCIDRs = []string{"10.244.1.0/24"}
	n.Spec.PodCIDR = "10.244.1.0/24"
	api := newFakeAPI(t, n)
	rec, _, _ := startSource(t, api)
	waitSynced(t, rec, api)
	wantNode := func(what string, want control.NodeInfo) {
		t.Helper()
		rec.waitFor(t, what, func() bool { return rec.node == want })
	}
	wantNode("the first Node", control.NodeInfo{Name: nodeName, Zone: "zone-1", InternalIPs: "192.168.0.10", PodCIDRs: "10.244.1.0/24"})

	// A second pod CIDR (dual stack), written to the spec.
	n = n.DeepCopy()
	n.ResourceVersion = "2"
	n.Spec.PodCIDRs = append(n.Spec.PodCIDRs, "fd00:10:244:1::/64")
	if _, err := api.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	wantNode("the second pod CIDR", control.NodeInfo{Name: nodeName, Zone: "zone-1", InternalIPs: "192.168.0.10", PodCIDRs: "10.244.1.0/24,fd00:10:244:1::/64"})

	// The kubelet writes status.addresses through the status subresource.
	n = n.DeepCopy()
	n.ResourceVersion = "3"
	n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "192.168.0.20"}}
	if _, err := api.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	wantNode("the new InternalIP", control.NodeInfo{Name: nodeName, Zone: "zone-1", InternalIPs: "192.168.0.20", PodCIDRs: "10.244.1.0/24,fd00:10:244:1::/64"})
}

// A Service's status.loadBalancer, written by the cloud controller through
// the status subresource after the Service exists, reaches the sink: the
// handler drops only updates whose resource version did not move, and the
// transform keeps the status.
func TestServiceLoadBalancerStatusUpdate(t *testing.T) {
	svc := service("ns", "lb", "1", "10.96.0.10", nil, 80)
	svc.Spec.Type = corev1.ServiceTypeLoadBalancer
	api := newFakeAPI(t, svc)
	rec, _, _ := startSource(t, api)
	waitSynced(t, rec, api)
	rec.waitCall(t, "UpsertService ns/lb rv=1")

	svc = svc.DeepCopy()
	svc.ResourceVersion = "2"
	svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "203.0.113.7"}}
	if _, err := api.CoreV1().Services("ns").UpdateStatus(ctx, svc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	rec.waitCall(t, "UpsertService ns/lb rv=2")
	svcs, _, _ := rec.objects()
	if len(svcs) != 1 || len(svcs[0].Status.LoadBalancer.Ingress) != 1 || svcs[0].Status.LoadBalancer.Ingress[0].IP != "203.0.113.7" {
		t.Fatalf("the sink holds %+v, want ns/lb with ingress 203.0.113.7", svcs)
	}

	// The ingress withdrawn: an update as well.
	svc = svc.DeepCopy()
	svc.ResourceVersion = "3"
	svc.Status.LoadBalancer = corev1.LoadBalancerStatus{}
	if _, err := api.CoreV1().Services("ns").UpdateStatus(ctx, svc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	rec.waitCall(t, "UpsertService ns/lb rv=3")
	if svcs, _, _ = rec.objects(); len(svcs[0].Status.LoadBalancer.Ingress) != 0 {
		t.Errorf("ingress still %+v after it was withdrawn", svcs[0].Status.LoadBalancer.Ingress)
	}
}
