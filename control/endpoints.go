package control

import (
	"slices"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// endpoint is one endpoint of a service port after deduplication, with
// what rules 8-11 decide on.
type endpoint struct {
	backend     Backend
	ready       bool
	serving     bool
	terminating bool
	local       bool                  // as backend.Local
	zones       []discoveryv1.ForZone // hints; nil when none
	nodes       []discoveryv1.ForNode
}

// usable: an endpoint that some set may use (ready, or serving and
// terminating). Non-serving endpoints are never used (rule 9).
func (e *endpoint) usable() bool { return e.ready || (e.serving && e.terminating) }

// endpointsOf collects the endpoints of one service port (rules 5-8): the
// union over the Service's slices, deduplicated by IP:port with the
// non-terminating copy winning (else the first, slices in name order).
func endpointsOf(endpointSlices []*discoveryv1.EndpointSlice, name ServicePortName, node NodeInfo) (eps []endpoint, problems []Problem) {
	for _, es := range endpointSlices {
		port, ok := slicePort(es, name)
		if !ok {
			continue
		}
		for i := range es.Endpoints {
			ep := &es.Endpoints[i]
			if len(ep.Addresses) == 0 {
				continue
			}
			addr, parsed := parseIPSloppy(ep.Addresses[0])
			if !parsed || !addr.Is4() {
				problems = append(problems, problemf("EndpointSlice", es.Namespace, es.Name, SkipInvalidIP,
					"endpoint address %q is not an IPv4 address", ep.Addresses[0]))
				continue
			}
			local := ep.NodeName != nil && *ep.NodeName == node.Name && node.Name != ""
			e := endpoint{
				backend:     Backend{Addr: addr, Port: port, Local: local},
				ready:       ep.Conditions.Ready == nil || *ep.Conditions.Ready,
				serving:     ep.Conditions.Serving == nil || *ep.Conditions.Serving,
				terminating: ep.Conditions.Terminating != nil && *ep.Conditions.Terminating,
				local:       local,
			}
			if ep.Hints != nil {
				e.zones, e.nodes = ep.Hints.ForZones, ep.Hints.ForNodes
			}
			eps = append(eps, e)
		}
	}
	// Stable sort by backend, non-terminating copies first: the first of
	// each run is the copy that counts.
	slices.SortStableFunc(eps, func(a, b endpoint) int {
		if c := a.backend.Compare(b.backend); c != 0 {
			return c
		}
		switch {
		case a.terminating == b.terminating:
			return 0
		case !a.terminating:
			return -1
		}
		return 1
	})
	// Compare, not ==: copies on different nodes are one endpoint too.
	return slices.CompactFunc(eps, func(a, b endpoint) bool { return a.backend.Compare(b.backend) == 0 }), problems
}

// topology is the hint filter of rule 11.
type topology int

const (
	topologyNone topology = iota
	topologySameNode
	topologySameZone
)

// topologyOf decides the hint filter of the Cluster set (rule 11): node
// hints first, then zone hints, each used only when every ready endpoint
// carries one and at least one names this node (zone). PreferClose and
// PreferSameZone/PreferSameNode trafficDistribution work through the hints
// the EndpointSlice controller sets.
func topologyOf(eps []endpoint, node NodeInfo) topology {
	allNodes, forNode := true, false
	allZones, forZone := true, false
	any := false
	for i := range eps {
		e := &eps[i]
		if !e.ready {
			continue
		}
		any = true
		if len(e.nodes) == 0 {
			allNodes = false
		} else if hasNodeHint(e.nodes, node.Name) {
			forNode = true
		}
		if len(e.zones) == 0 {
			allZones = false
		} else if hasZoneHint(e.zones, node.Zone) {
			forZone = true
		}
	}
	switch {
	case !any:
		return topologyNone
	case allNodes && forNode && node.Name != "":
		return topologySameNode
	case allZones && forZone && node.Zone != "":
		return topologySameZone
	}
	return topologyNone
}

func hasNodeHint(hints []discoveryv1.ForNode, name string) bool {
	return slices.ContainsFunc(hints, func(h discoveryv1.ForNode) bool { return h.Name == name })
}

func hasZoneHint(hints []discoveryv1.ForZone, zone string) bool {
	return slices.ContainsFunc(hints, func(h discoveryv1.ForZone) bool { return h.Name == zone })
}

// clusterSet is rule 9 with rule 11: the ready endpoints the topology
// allows; if none, every serving-and-terminating endpoint cluster-wide
// (topology does not apply to that fallback).
func clusterSet(eps []endpoint, node NodeInfo) []Backend {
	topo := topologyOf(eps, node)
	var out []Backend
	for i := range eps {
		e := &eps[i]
		if !e.ready {
			continue
		}
		switch {
		case topo == topologySameNode && !hasNodeHint(e.nodes, node.Name):
			continue
		case topo == topologySameZone && !hasZoneHint(e.zones, node.Zone):
			continue
		}
		out = append(out, e.backend)
	}
	if len(out) > 0 {
		return out
	}
	for i := range eps {
		if e := &eps[i]; e.serving && e.terminating {
			out = append(out, e.backend)
		}
	}
	return out
}

// localSet is rule 10: the local ready endpoints; if none, the local
// serving-and-terminating ones.
func localSet(eps []endpoint) []Backend {
	var out, fallback []Backend
	for i := range eps {
		e := &eps[i]
		switch {
		case !e.local:
		case e.ready:
			out = append(out, e.backend)
		case e.serving && e.terminating:
			fallback = append(fallback, e.backend)
		}
	}
	if len(out) > 0 {
		return out
	}
	return fallback
}

// slicePort finds the slice port that applies to a service port: same name
// and protocol (rule 5). Ports with a nil name or a nil or zero port number
// are ignored (rule 6).
func slicePort(es *discoveryv1.EndpointSlice, name ServicePortName) (uint16, bool) {
	for _, p := range es.Ports {
		if p.Name == nil || p.Port == nil || *p.Port <= 0 || *p.Port > 65535 {
			continue
		}
		proto := corev1.ProtocolTCP
		if p.Protocol != nil {
			proto = *p.Protocol
		}
		pp, err := protocolOf(proto)
		if err != nil && pp == 0 {
			continue
		}
		if *p.Name == name.Port && pp == name.Proto {
			return uint16(*p.Port), true
		}
	}
	return 0, false
}
