package netlab

import (
	"net/netip"
	"time"
)

// podLink joins pod to node with a veth (nodeDev on the node, eth0 in the
// pod), addresses both ends and routes the pod's traffic to the node, as a
// CNI plugin does when a pod starts. nodeAddr is the node's end (the pod's
// gateway) and podAddr the pod's, each with its prefix.
func podLink(node *NS, nodeDev string, nodeAddr netip.Prefix, pod *NS, podAddr netip.Prefix) error {
	if err := Veth(node, nodeDev, pod, "eth0"); err != nil {
		return err
	}
	if err := node.Sysctl("ipv4/conf/"+nodeDev+"/rp_filter", "0"); err != nil {
		return err
	}
	if err := node.AddrAdd(nodeDev, nodeAddr); err != nil {
		return err
	}
	if err := pod.AddrAdd("eth0", podAddr); err != nil {
		return err
	}
	if err := pod.LoopbackUp(); err != nil {
		return err
	}
	if err := pod.WaitUp("eth0", 5*time.Second); err != nil {
		return err
	}
	if err := node.WaitUp(nodeDev, 5*time.Second); err != nil {
		return err
	}
	return nil
}

// nodeSysctls make a namespace forward between pods. rp_filter would drop
// replies whose source the datapath restored to a service IP the node has
// no route for, as it would on any node running a kube-proxy replacement.
func nodeSysctls(node *NS) error {
	for _, kv := range [][2]string{
		{"ipv4/ip_forward", "1"},
		{"ipv4/conf/all/rp_filter", "0"},
		{"ipv4/conf/default/rp_filter", "0"},
	} {
		if err := node.Sysctl(kv[0], kv[1]); err != nil {
			return err
		}
	}
	return nil
}
