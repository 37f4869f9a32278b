package control

import (
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// NodeInfoOf is what the desired state needs of a Node object, whichever
// source read it (the API server, or a manifest): its name, zone label,
// InternalIPs in the Node's order, pod CIDRs, and whether it is leaving.
// NodePortAddrs is left empty: the agent computes it from the addresses
// the node actually holds.
func NodeInfoOf(n *corev1.Node) NodeInfo {
	var ips []string
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			ips = append(ips, a.Address)
		}
	}
	// spec.podCIDRs is the list (its first entry is spec.podCIDR); an
	// object written before dual stack, or by hand, may have the single
	// field only.
	cidrs := n.Spec.PodCIDRs
	if len(cidrs) == 0 && n.Spec.PodCIDR != "" {
		cidrs = []string{n.Spec.PodCIDR}
	}
	leaving := n.DeletionTimestamp != nil
	for _, t := range n.Spec.Taints {
		leaving = leaving || t.Key == TaintToBeDeleted
	}
	return NodeInfo{
		Name:        n.Name,
		Zone:        n.Labels[corev1.LabelTopologyZone],
		InternalIPs: strings.Join(ips, ","),
		PodCIDRs:    strings.Join(cidrs, ","),
		Leaving:     leaving,
	}
}
