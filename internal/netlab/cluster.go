package netlab

import (
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// Cluster is N nodes on one underlay, the network of a multi-node cluster,
// and a client outside it:
//
//	underlay: bridge br0 192.168.50.1/24 (the router)
//	          veth n<i> -> node i's eth0 192.168.50.(10+i)/24
//	          veth ext  -> external client's eth0 192.168.50.100/24
//	node i:   pod CIDR 10.244.i.0/24; pod j on veth p<j>, 10.244.i.(1+j),
//	          gateway 10.244.i.1; a route to every other node's pod CIDR
//	          via that node's underlay address; default route via the
//	          router; ip_forward on
//
// The router answers ARP and forwards nothing: a node's default route
// resolves, as a real node's does, so traffic a node's own processes send
// to a service address leaves through eth0 (where the datapath sees it)
// rather than failing as unreachable, and whatever is not translated dies
// there. The external client has no route to any pod CIDR, nor a default
// one: it reaches the cluster through node addresses only, and through the
// addresses RouteVia gives it.
type Cluster struct {
	Prefix   string
	Underlay *NS // holds the bridge and the router address, nothing else
	External *NS
	Nodes    []*Node
	cgroups  *Cgroup // <prefix> under the root, parent of the nodes' cgroups
}

// Node is one node of a Cluster.
type Node struct {
	Index   int    // 1-based
	Name    string // node-<Index>, the Node object's name
	NS      *NS
	IP      netip.Addr // on the underlay, the Node's InternalIP
	PodCIDR netip.Prefix
	Pods    []*NS
	// Cgroup holds the node's host-network processes (its agent, a
	// hostNetwork server): what the agent attaches to the node's cgroup
	// sees their sockets and no one else's. Nil until MakeCgroups.
	Cgroup *Cgroup
}

const (
	underlayBridge = "br0"
	externalDev    = "ext"
	// UnderlayDev is a node's (and the external client's) underlay device.
	UnderlayDev = "eth0"
)

// ExternalAddr is the external client's underlay address; RouterAddr the
// underlay bridge's, the nodes' default gateway.
var (
	ExternalAddr = netip.MustParseAddr("192.168.50.100")
	RouterAddr   = netip.MustParseAddr("192.168.50.1")
)

// NodeIP is node i's underlay address (1-based).
func NodeIP(i int) netip.Addr { return netip.AddrFrom4([4]byte{192, 168, 50, byte(10 + i)}) }

// NodePodCIDR is node i's pod CIDR.
func NodePodCIDR(i int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, byte(i), 0}), 24)
}

// PodAddr is pod j's address on node i (both 1-based).
func PodAddr(i, j int) netip.Addr { return netip.AddrFrom4([4]byte{10, 244, byte(i), byte(1 + j)}) }

// podGateway is node i's end of each of its pods' veths.
func podGateway(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 244, byte(i), 1}) }

// NodePodDev is the node's end of its pod j's veth.
func NodePodDev(j int) string { return fmt.Sprintf("p%d", j) }

// NewCluster builds the underlay, n nodes and the external client,
// replacing namespaces left from an earlier run with the same prefix.
// Pods are added with AddPod.
func NewCluster(prefix string, n int) (c *Cluster, err error) {
	if n < 1 || n > 80 {
		return nil, fmt.Errorf("nodes: %d, want 1-80", n)
	}
	c = &Cluster{Prefix: prefix}
	defer func() {
		if err != nil {
			c.Delete()
		}
	}()
	if c.Underlay, err = NewNS(prefix + "-underlay"); err != nil {
		return c, err
	}
	if err := c.Underlay.Bridge(underlayBridge); err != nil {
		return c, err
	}
	if err := c.Underlay.AddrAdd(underlayBridge, netip.PrefixFrom(RouterAddr, 24)); err != nil {
		return c, err
	}
	if c.External, err = NewNS(prefix + "-ext"); err != nil {
		return c, err
	}
	if err := c.join(c.External, externalDev, ExternalAddr); err != nil {
		return c, err
	}
	for i := 1; i <= n; i++ {
		if err := c.addNode(i); err != nil {
			return c, err
		}
	}
	for _, a := range c.Nodes {
		for _, b := range c.Nodes {
			if a != b {
				if err := a.NS.RouteVia(b.PodCIDR, b.IP); err != nil {
					return c, err
				}
			}
		}
	}
	return c, nil
}

func (c *Cluster) addNode(i int) error {
	ns, err := NewNS(fmt.Sprintf("%s-node-%d", c.Prefix, i))
	if err != nil {
		return err
	}
	node := &Node{Index: i, Name: fmt.Sprintf("node-%d", i), NS: ns, IP: NodeIP(i), PodCIDR: NodePodCIDR(i)}
	c.Nodes = append(c.Nodes, node)
	// The agent's health and metrics servers answer on the node's
	// loopback, as a hostNetwork pod's do.
	if err := ns.LoopbackUp(); err != nil {
		return err
	}
	if err := nodeSysctls(ns); err != nil {
		return err
	}
	if err := c.join(ns, fmt.Sprintf("n%d", i), node.IP); err != nil {
		return err
	}
	return ns.DefaultRoute(RouterAddr)
}

// join plugs ns into the underlay bridge as UnderlayDev with addr/24.
func (c *Cluster) join(ns *NS, bridgeDev string, addr netip.Addr) error {
	if err := Veth(ns, UnderlayDev, c.Underlay, bridgeDev); err != nil {
		return err
	}
	if err := c.Underlay.SetMaster(bridgeDev, underlayBridge); err != nil {
		return err
	}
	if err := ns.AddrAdd(UnderlayDev, netip.PrefixFrom(addr, 24)); err != nil {
		return err
	}
	if err := ns.LoopbackUp(); err != nil {
		return err
	}
	if err := ns.WaitUp(UnderlayDev, 5*time.Second); err != nil {
		return err
	}
	return c.Underlay.WaitUp(bridgeDev, 5*time.Second)
}

// AddPod adds pod number len(Pods)+1 to the node, as a pod scheduled there
// would appear: a new namespace, a veth on the node, a /32 address in the
// node's pod CIDR routed to that veth.
func (c *Cluster) AddPod(node *Node) (*NS, error) {
	j := len(node.Pods) + 1
	if j > 250 {
		return nil, fmt.Errorf("%s: at most 250 pods", node.Name)
	}
	pod, err := NewNS(fmt.Sprintf("%s-n%d-pod%d", c.Prefix, node.Index, j))
	if err != nil {
		return nil, err
	}
	node.Pods = append(node.Pods, pod)
	gw, addr := podGateway(node.Index), PodAddr(node.Index, j)
	// Every pod veth carries the same gateway address, so a pod's view is
	// the same whatever veth it is on; the node routes each pod's /32.
	if err := podLink(node.NS, NodePodDev(j), netip.PrefixFrom(gw, 32), pod, netip.PrefixFrom(addr, 32)); err != nil {
		return nil, err
	}
	if err := node.NS.RouteDev(netip.PrefixFrom(addr, 32), NodePodDev(j)); err != nil {
		return nil, err
	}
	if err := pod.RouteDev(netip.PrefixFrom(gw, 32), "eth0"); err != nil {
		return nil, err
	}
	return pod, pod.DefaultRoute(gw)
}

// RouteVia gives the external client a route to dst (an externalIP, a load
// balancer's address) through node, as a router in front of the cluster
// would have.
func (c *Cluster) RouteVia(dst netip.Prefix, node *Node) error {
	return c.External.RouteVia(dst, node.IP)
}

// MakeCgroups makes one cgroup per node, root/<prefix>/node-<i>, for the
// node's host-network processes (NS.StartInCgroup). Delete removes them.
func (c *Cluster) MakeCgroups(root *Cgroup2Root) error {
	base, err := root.NewCgroup(c.Prefix)
	if err != nil {
		return err
	}
	c.cgroups = base
	for _, n := range c.Nodes {
		if n.Cgroup, err = root.NewCgroup(c.Prefix + "/" + n.Name); err != nil {
			return err
		}
	}
	return nil
}

// Namespaces lists every namespace of the cluster.
func (c *Cluster) Namespaces() []*NS {
	all := []*NS{c.Underlay, c.External}
	for _, n := range c.Nodes {
		all = append(all, n.NS)
		all = append(all, n.Pods...)
	}
	return all
}

// Delete removes every namespace of the cluster.
func (c *Cluster) Delete() error {
	var errs []error
	if c.cgroups != nil {
		// Kills what still runs in the nodes' cgroups: only what was
		// started there.
		errs = append(errs, c.cgroups.Remove())
	}
	for _, n := range c.Namespaces() {
		if n != nil {
			errs = append(errs, n.Delete())
		}
	}
	return errors.Join(errs...)
}
