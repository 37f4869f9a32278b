package kube

import (
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/sluice-lb/sluice/control"
)

// strip is the informers' transform: it drops what neither the cache nor
// the desired state reads, before the object is stored. Informers call it
// with each object fresh from the API (nobody else holds it yet), so it
// may change the object in place; it is idempotent.
func strip(obj any) (any, error) {
	switch o := obj.(type) {
	case *corev1.Service:
		stripMeta(&o.ObjectMeta)
	case *discoveryv1.EndpointSlice:
		stripMeta(&o.ObjectMeta)
	case *corev1.Node:
		return slimNode(o), nil
	case cache.DeletedFinalStateUnknown, *cache.DeletedFinalStateUnknown:
		// A tombstone's object is already in the cache, stripped, and
		// shared: it must not be touched again.
	}
	return obj, nil
}

// stripMeta drops managedFields and every annotation but the EndpointSlice
// controller's last-change-trigger-time, from which network programming
// latency is measured.
func stripMeta(m *metav1.ObjectMeta) {
	m.ManagedFields = nil
	if len(m.Annotations) == 0 {
		return
	}
	t, ok := m.Annotations[corev1.EndpointsLastChangeTriggerTime]
	if !ok {
		m.Annotations = nil
		return
	}
	if len(m.Annotations) > 1 {
		m.Annotations = map[string]string{corev1.EndpointsLastChangeTriggerTime: t}
	}
}

// slimNode keeps of a Node what nodeInfo reads: its name, its zone label,
// its addresses, its pod CIDRs, and whether it is leaving (deletion
// timestamp, the autoscaler's taint) (and the resource version, by which
// an unchanged object is recognised).
func slimNode(n *corev1.Node) *corev1.Node {
	slim := &corev1.Node{
		TypeMeta: n.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{
			Name:              n.Name,
			UID:               n.UID,
			ResourceVersion:   n.ResourceVersion,
			DeletionTimestamp: n.DeletionTimestamp,
		},
		Spec:   corev1.NodeSpec{PodCIDR: n.Spec.PodCIDR, PodCIDRs: n.Spec.PodCIDRs},
		Status: corev1.NodeStatus{Addresses: n.Status.Addresses},
	}
	// Only the taint that says the node is leaving.
	for _, t := range n.Spec.Taints {
		if t.Key == control.TaintToBeDeleted {
			slim.Spec.Taints = append(slim.Spec.Taints, t)
		}
	}
	if zone, ok := n.Labels[corev1.LabelTopologyZone]; ok {
		slim.Labels = map[string]string{corev1.LabelTopologyZone: zone}
	}
	return slim
}
