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
	// Local: the endpoint is on this node (rule 8). A new flow of a
	// frontend with SNATRemote to a backend that is not local is SNATed.
	// Not part of the backend's identity in the maps (address, port,
	// protocol): a change rewrites its entry's flags.
	Local bool
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

// FrontendKind is what a frontend is to its Service; the values are the
// datapath's enum lb_frontend_kind.
type FrontendKind uint8

const (
	KindClusterIP    FrontendKind = 0 // spec.clusterIP(s)
	KindNodePort     FrontendKind = 1 // a node address and spec.ports[].nodePort (rule 18)
	KindExternalIP   FrontendKind = 2 // spec.externalIPs (rule 19)
	KindLoadBalancer FrontendKind = 3 // status.loadBalancer.ingress[].ip (rule 20)
)

func (k FrontendKind) String() string {
	switch k {
	case KindClusterIP:
		return "ClusterIP"
	case KindNodePort:
		return "NodePort"
	case KindExternalIP:
		return "ExternalIP"
	case KindLoadBalancer:
		return "LoadBalancer"
	}
	return strconv.Itoa(int(k))
}

// External reports whether traffic to the frontend is external traffic
// for traffic policy and SNAT (rules 13, 19, 26).
func (k FrontendKind) External() bool { return k != KindClusterIP }

// ScopeSet is the backend set one class of clients of a frontend gets.
type ScopeSet struct {
	Backends  []Backend // sorted, unique
	DropEmpty bool      // as ServicePort.DropEmpty
	// SNATRemote: a new flow to a backend that is not Local is SNATed to
	// the node's address, so that its replies come back here (rules 13
	// and 26).
	SNATRemote bool
}

// ServicePort is one frontend and the backends new flows to it are spread
// over. An empty Backends means REJECT, or DROP with DropEmpty.
type ServicePort struct {
	Name     ServicePortName
	Frontend Frontend
	Kind     FrontendKind
	Backends []Backend // sorted, unique: the set that applies (rules 9-13)
	// DropEmpty: Backends is empty although the Service has usable
	// endpoints elsewhere: the set its policy asks for (the Local set of
	// internalTrafficPolicy or externalTrafficPolicy Local) is empty, so
	// DROP, not REJECT (rule 14).
	DropEmpty bool
	// AffinityTimeout is the ClientIP session affinity timeout in seconds
	// (rule 22); 0 means no affinity.
	AffinityTimeout uint32
	// SNATRemote: new flows to a backend that is not Local are SNATed to
	// the node's address (external frontends with externalTrafficPolicy
	// Cluster, rule 26).
	SNATRemote bool
	// Internal is set on an external frontend with externalTrafficPolicy
	// Local: Backends (above) is then the Local set external clients get,
	// and Internal the Cluster set this node's pods and the node itself
	// get, SNATed when the backend is remote (rule 13). The datapath holds
	// it as the frontend's scope 1 entries.
	Internal *ScopeSet
	// SourceRanges: a LoadBalancer frontend's loadBalancerSourceRanges
	// (rule 21), sorted; new flows from elsewhere are dropped. Empty: no
	// restriction.
	SourceRanges []netip.Prefix
}

// HealthCheck is one healthCheckNodePort server (rule 28): a Service of
// type LoadBalancer with externalTrafficPolicy Local.
type HealthCheck struct {
	Namespace, Name string
	Port            uint16
	LocalEndpoints  int // distinct IPs of local ready endpoints
}

// State is the whole desired datapath state.
type State struct {
	Ports map[Frontend]*ServicePort
	// HealthChecks by port, one per health-checked Service.
	HealthChecks map[uint16]HealthCheck
}

// NodeInfo is what the desired state depends on about the node sluice runs
// on: its name (endpoint locality, node hints), its
// topology.kubernetes.io/zone label (zone hints), its InternalIPs and pod
// CIDRs, and the addresses NodePorts are served on. Comparable, so a
// change is one ==. Lists are comma separated (a string keeps NodeInfo
// comparable).
type NodeInfo struct {
	Name string
	Zone string
	// InternalIPs in the Node object's order, comma separated.
	InternalIPs string
	// PodCIDRs: the Node's spec.podCIDRs, comma separated: this node's
	// pods, the internal sources of rule 13.
	PodCIDRs string
	// NodePortAddrs: the addresses NodePorts are served on (rule 18),
	// sorted, comma separated: the InternalIPs with --nodeport-addresses
	// primary (the default), else the node's local addresses inside the
	// flag's CIDRs (127.0.0.0/8 only when a CIDR names it). Computed by
	// the agent (NodePortAddresses), so that the desired state stays a
	// function of the Node and the flag.
	NodePortAddrs string
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
	SkipLBHostname      = "lb-hostname"
	SkipHealthCheck     = "health-check-port"
)

func (p Problem) String() string { return p.Object + ": " + p.Reason }
