package netlab

import (
	"errors"
	"fmt"
	"net/netip"
)

// Topology is a node namespace routing between one client "pod" and N
// backend "pods", each pod on its own veth and /24:
//
//	client  eth0 10.244.0.2 <-> c0 10.244.0.1  node
//	backend eth0 10.244.i.2 <-> b<i> 10.244.i.1 node   (i = 1..N)
//	external eth0 192.168.80.2 <-> x0 192.168.80.1 node (AddExternal)
//
// Every pod is inside TopologyPodCIDR, the node's pod CIDR; the external
// client is outside it, as a client outside the cluster is.
type Topology struct {
	Prefix   string
	Node     *NS
	Client   *NS
	Backends []*NS
	// External is the client outside the cluster, nil until AddExternal.
	External *NS
}

// TopologyPodCIDR holds the client's and every backend's address: the
// node's pod CIDR.
var TopologyPodCIDR = netip.MustParsePrefix("10.244.0.0/16")

// ExternalClientAddr and NodeExternalAddr are the two ends of the external
// client's veth.
var (
	ExternalClientAddr = netip.MustParseAddr("192.168.80.2")
	NodeExternalAddr   = netip.MustParseAddr("192.168.80.1")
)

// NodeExternalDev is the node's end of the external client's veth.
const NodeExternalDev = "x0"

// ClientAddr and NodeClientAddr are the two ends of the client's veth.
var (
	ClientAddr     = netip.MustParseAddr("10.244.0.2")
	NodeClientAddr = netip.MustParseAddr("10.244.0.1")
)

// BackendAddr is backend i's address (1-based).
func BackendAddr(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 244, byte(i), 2}) }

// NodeBackendDev is the node's end of backend i's veth.
func NodeBackendDev(i int) string { return fmt.Sprintf("b%d", i) }

// NodeClientDev is the node's end of the client's veth.
const NodeClientDev = "c0"

// NewTopology builds the namespaces and links, replacing any left over from
// an earlier run with the same prefix.
func NewTopology(prefix string, backends int) (t *Topology, err error) {
	if backends < 1 || backends > 250 {
		return nil, fmt.Errorf("backends: %d, want 1-250", backends)
	}
	t = &Topology{Prefix: prefix}
	defer func() {
		if err != nil {
			t.Delete()
		}
	}()
	if t.Node, err = NewNS(prefix + "-node"); err != nil {
		return t, err
	}
	// The agent's health and metrics servers answer on the node's
	// loopback, as a hostNetwork pod's do.
	if err = t.Node.LoopbackUp(); err != nil {
		return t, err
	}
	if t.Client, err = NewNS(prefix + "-client"); err != nil {
		return t, err
	}
	if err := nodeSysctls(t.Node); err != nil {
		return t, err
	}
	if err := t.pod(t.Client, NodeClientDev, NodeClientAddr, ClientAddr); err != nil {
		return t, err
	}
	for range backends {
		if _, err := t.AddBackend(); err != nil {
			return t, err
		}
	}
	return t, nil
}

// AddBackend adds backend pod number len(Backends)+1, as a pod scheduled on
// a running node would appear: a new namespace and a new veth on the node.
func (t *Topology) AddBackend() (*NS, error) {
	i := len(t.Backends) + 1
	if i > 250 {
		return nil, fmt.Errorf("at most 250 backends")
	}
	b, err := NewNS(fmt.Sprintf("%s-be%d", t.Prefix, i))
	if err != nil {
		return nil, err
	}
	t.Backends = append(t.Backends, b)
	return b, t.pod(b, NodeBackendDev(i), netip.AddrFrom4([4]byte{10, 244, byte(i), 1}), BackendAddr(i))
}

// AddExternal adds the client outside the cluster: a namespace on a veth
// of its own, outside the pod CIDR, whose default route is the node (its
// router into the cluster), so it reaches the node's addresses and any
// address routed through the node (a load balancer's).
func (t *Topology) AddExternal() (*NS, error) {
	if t.External != nil {
		return nil, fmt.Errorf("%s: the external client exists", t.Prefix)
	}
	ext, err := NewNS(t.Prefix + "-ext")
	if err != nil {
		return nil, err
	}
	t.External = ext
	return ext, t.pod(ext, NodeExternalDev, NodeExternalAddr, ExternalClientAddr)
}

func (t *Topology) pod(pod *NS, nodeDev string, nodeAddr, podAddr netip.Addr) error {
	if err := podLink(t.Node, nodeDev, netip.PrefixFrom(nodeAddr, 24), pod, netip.PrefixFrom(podAddr, 24)); err != nil {
		return err
	}
	return pod.DefaultRoute(nodeAddr)
}

// Delete removes every namespace of the topology.
func (t *Topology) Delete() error {
	var errs []error
	for _, n := range append([]*NS{t.Node, t.Client, t.External}, t.Backends...) {
		if n != nil {
			errs = append(errs, n.Delete())
		}
	}
	return errors.Join(errs...)
}
