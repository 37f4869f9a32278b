// Package control turns Kubernetes Services and EndpointSlices into the one
// state the datapath must hold (Desired, a pure function) and reconciles
// the BPF maps to that state (Reconciler).
package control

import (
	"fmt"
	"net/netip"
	"strconv"
)

// Protocol is an IANA protocol number, as the datapath matches it.
type Protocol uint8

const (
	TCP  Protocol = 6
	UDP  Protocol = 17
	SCTP Protocol = 132
)

func (p Protocol) String() string {
	switch p {
	case TCP:
		return "TCP"
	case UDP:
		return "UDP"
	case SCTP:
		return "SCTP"
	}
	return strconv.Itoa(int(p))
}

// Frontend is what a packet is matched on: destination address, port and
// protocol.
type Frontend struct {
	Addr  netip.Addr
	Port  uint16
	Proto Protocol
}

func (f Frontend) String() string {
	return fmt.Sprintf("%s/%s", netip.AddrPortFrom(f.Addr, f.Port), f.Proto)
}

// Backend is an endpoint address and the port traffic is translated to. Its
// protocol is its frontend's.
type Backend struct {
	Addr netip.Addr
	Port uint16
}

func (b Backend) String() string { return netip.AddrPortFrom(b.Addr, b.Port).String() }

// Compare orders backends by address then port.
func (b Backend) Compare(o Backend) int {
	if c := b.Addr.Compare(o.Addr); c != 0 {
		return c
	}
	return int(b.Port) - int(o.Port)
}

// ServicePortName identifies one port of a Service (rule 5).
type ServicePortName struct {
	Namespace string
	Name      string
	Port      string
	Proto     Protocol
}

func (n ServicePortName) String() string {
	s := n.Namespace + "/" + n.Name
	if n.Port != "" {
		s += ":" + n.Port
	}
	return s + "/" + n.Proto.String()
}

// ServicePort is one frontend and the backends new flows to it are spread
// over. An empty Backends means REJECT, or DROP with DropEmpty.
type ServicePort struct {
	Name     ServicePortName
	Frontend Frontend
	Backends []Backend // sorted, unique: the set that applies (rules 9-12)
	// DropEmpty: Backends is empty although the Service has usable
	// endpoints elsewhere: the set its policy asks for (the Local set of
	// internalTrafficPolicy: Local) is empty, so DROP, not REJECT (rule 14).
	DropEmpty bool
	// AffinityTimeout is the ClientIP session affinity timeout in seconds
	// (rule 22); 0 means no affinity.
	AffinityTimeout uint32
}

// State is the whole desired datapath state.
type State struct {
	Ports map[Frontend]*ServicePort
}

// NodeInfo is what the desired state depends on about the node sluice runs
// on: its name (endpoint locality, node hints), its
// topology.kubernetes.io/zone label (zone hints) and its InternalIPs
// (NodePort frontends, later). Comparable, so a change is one ==.
type NodeInfo struct {
	Name string
	Zone string
	// InternalIPs in the Node object's order, comma separated (a string
	// keeps NodeInfo comparable).
	InternalIPs string
	// Leaving: the Node is being deleted or drained by the cluster
	// autoscaler (its ToBeDeletedByClusterAutoscaler taint): /healthz
	// reports nodeEligible false, so load balancers stop sending here.
	// The desired state does not depend on it.
	Leaving bool
}

// TaintToBeDeleted is the taint the cluster autoscaler puts on a node it
// is about to remove.
const TaintToBeDeleted = "ToBeDeletedByClusterAutoscaler"

// Problem is an object, or part of one, that was skipped, and why.
type Problem struct {
	Object string // "Service ns/name", "EndpointSlice ns/name"
	Reason string
	// Kind is the reason's class, a metric label: one of the Skip*
	// constants.
	Kind string
}

// Classes of skipped objects, the "reason" label of the skipped-objects
// metric.
const (
	SkipInvalidIP       = "invalid-ip"
	SkipInvalidPort     = "invalid-port"
	SkipProtocol        = "unsupported-protocol"
	SkipNoService       = "no-service"
	SkipConflict        = "frontend-conflict"
	SkipAffinity        = "invalid-affinity"
	SkipMapFull         = "map-full"
	SkipInvalidManifest = "invalid-manifest"
)

func (p Problem) String() string { return p.Object + ": " + p.Reason }
