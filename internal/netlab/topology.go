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
type Topology struct {
	Prefix   string
	Node     *NS
	Client   *NS
	Backends []*NS
}

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

func (t *Topology) pod(pod *NS, nodeDev string, nodeAddr, podAddr netip.Addr) error {
	if err := podLink(t.Node, nodeDev, netip.PrefixFrom(nodeAddr, 24), pod, netip.PrefixFrom(podAddr, 24)); err != nil {
		return err
	}
	return pod.DefaultRoute(nodeAddr)
}

// Delete removes every namespace of the topology.
func (t *Topology) Delete() error {
	var errs []error
	for _, n := range append([]*NS{t.Node, t.Client}, t.Backends...) {
		if n != nil {
			errs = append(errs, n.Delete())
		}
	}
	return errors.Join(errs...)
}
