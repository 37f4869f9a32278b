package control

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// Labels that hide an object from sluice (rule 1).
const (
	LabelServiceProxyName = "service.kubernetes.io/service-proxy-name"
	LabelHeadless         = "service.kubernetes.io/headless"
)

// Visible reports whether an object with these labels is one sluice serves
// (rule 1): the label selector
// "!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless".
func Visible(labels map[string]string) bool {
	_, proxied := labels[LabelServiceProxyName]
	_, headless := labels[LabelHeadless]
	return !proxied && !headless
}

// Desired computes the IPv4 datapath state for a set of Services and
// EndpointSlices. It is a pure function: same inputs, in any order, give the
// same state and the same problems in the same order.
func Desired(services []*corev1.Service, endpointSlices []*discoveryv1.EndpointSlice, node NodeInfo) (*State, []Problem) {
	var c DesiredCache
	return c.Compute(services, endpointSlices, node)
}

// DesiredCache computes what Desired computes, reusing the result of every
// Service whose Service object, EndpointSlice objects (by identity) and node
// are those of the previous call. A source that keeps unchanged objects
// (the manifests directory, an informer's store) thus pays for what changed.
// Objects must not be modified once passed in.
type DesiredCache struct {
	entries map[serviceRef]*serviceResult
}

type serviceRef struct{ namespace, name string }

// serviceResult is one Service's share of the state, a pure function of its
// inputs.
type serviceResult struct {
	svc      *corev1.Service
	slices   []*discoveryv1.EndpointSlice
	node     NodeInfo
	ports    []*ServicePort
	problems []Problem
}

// Compute returns the same as Desired(services, endpointSlices, node).
func (c *DesiredCache) Compute(services []*corev1.Service, endpointSlices []*discoveryv1.EndpointSlice, node NodeInfo) (*State, []Problem) {
	var problems []Problem
	bySvc := make(map[serviceRef][]*discoveryv1.EndpointSlice, len(endpointSlices))
	for _, es := range endpointSlices {
		// A slice belongs to a Service through its service-name label
		// in its namespace (rule 4); IPv4 slices only (rule 3).
		if !Visible(es.Labels) || es.AddressType != discoveryv1.AddressTypeIPv4 {
			continue
		}
		name := es.Labels[discoveryv1.LabelServiceName]
		if name == "" {
			problems = append(problems, problemf("EndpointSlice", es.Namespace, es.Name, "no %s label: belongs to no Service", discoveryv1.LabelServiceName))
			continue
		}
		ref := serviceRef{es.Namespace, name}
		bySvc[ref] = append(bySvc[ref], es)
	}
	for _, list := range bySvc {
		if len(list) > 1 {
			slices.SortFunc(list, func(a, b *discoveryv1.EndpointSlice) int { return cmp.Compare(a.Name, b.Name) })
		}
	}

	state := &State{Ports: make(map[Frontend]*ServicePort, len(services))}
	next := make(map[serviceRef]*serviceResult, len(services))
	for _, svc := range services {
		ref := serviceRef{svc.Namespace, svc.Name}
		r := c.entries[ref]
		if r == nil || r.svc != svc || r.node != node || !slices.Equal(r.slices, bySvc[ref]) {
			r = computeService(svc, bySvc[ref], node)
		}
		next[ref] = r
		problems = append(problems, r.problems...)
		// A frontend claimed twice goes to the first Service by
		// namespace/name, whatever the input order.
		for _, sp := range r.ports {
			other, taken := state.Ports[sp.Frontend]
			if !taken {
				state.Ports[sp.Frontend] = sp
				continue
			}
			winner, loser := other.Name, sp.Name
			if cmp.Or(cmp.Compare(sp.Name.Namespace, other.Name.Namespace), cmp.Compare(sp.Name.Name, other.Name.Name)) < 0 {
				winner, loser = sp.Name, other.Name
				state.Ports[sp.Frontend] = sp
			}
			problems = append(problems, problemf("Service", loser.Namespace, loser.Name, "port %q: %s already served by %s", loser.Port, sp.Frontend, winner))
		}
	}
	c.entries = next
	slices.SortStableFunc(problems, func(a, b Problem) int {
		return cmp.Or(cmp.Compare(a.Object, b.Object), cmp.Compare(a.Reason, b.Reason))
	})
	return state, problems
}

func problemf(kind, ns, name, format string, args ...any) Problem {
	return Problem{Object: kind + " " + ns + "/" + name, Reason: fmt.Sprintf(format, args...)}
}

// computeService is one Service's frontends and their backends.
func computeService(svc *corev1.Service, endpointSlices []*discoveryv1.EndpointSlice, node NodeInfo) *serviceResult {
	r := &serviceResult{svc: svc, slices: endpointSlices, node: node}
	if !Visible(svc.Labels) || svc.Spec.Type == corev1.ServiceTypeExternalName {
		return r
	}
	vip, ok, reason := clusterIPv4(svc)
	if !ok {
		if reason != "" {
			r.problems = append(r.problems, problemf("Service", svc.Namespace, svc.Name, "%s", reason))
		}
		return r
	}
	seen := map[Frontend]bool{}
	for _, sp := range svc.Spec.Ports {
		proto, err := protocolOf(sp.Protocol)
		if err != nil {
			r.problems = append(r.problems, problemf("Service", svc.Namespace, svc.Name, "port %q: %v", sp.Name, err))
			continue
		}
		if sp.Port < 1 || sp.Port > 65535 {
			r.problems = append(r.problems, problemf("Service", svc.Namespace, svc.Name, "port %q: port %d out of range 1-65535", sp.Name, sp.Port))
			continue
		}
		fe := Frontend{Addr: vip, Port: uint16(sp.Port), Proto: proto}
		if seen[fe] {
			r.problems = append(r.problems, problemf("Service", svc.Namespace, svc.Name, "port %q: %s listed twice", sp.Name, fe))
			continue
		}
		seen[fe] = true
		name := ServicePortName{Namespace: svc.Namespace, Name: svc.Name, Port: sp.Name, Proto: proto}
		backends, bad := clusterSet(endpointSlices, name)
		r.problems = append(r.problems, bad...)
		r.ports = append(r.ports, &ServicePort{Name: name, Frontend: fe, Backends: backends})
	}
	return r
}

// clusterIPv4 picks the Service's IPv4 cluster IP (rules 2, 3). ok is false
// for headless Services and Services without an IPv4 cluster IP; reason is
// set when that is an error rather than a choice.
func clusterIPv4(svc *corev1.Service) (addr netip.Addr, ok bool, reason string) {
	ips := svc.Spec.ClusterIPs
	if len(ips) == 0 && svc.Spec.ClusterIP != "" {
		ips = []string{svc.Spec.ClusterIP}
	}
	for _, s := range ips {
		if s == "" || s == corev1.ClusterIPNone {
			return netip.Addr{}, false, ""
		}
		a, parsed := parseIPSloppy(s)
		if !parsed {
			return netip.Addr{}, false, fmt.Sprintf("clusterIP %q is not an IP address", s)
		}
		if a.Is4() {
			return a, true, ""
		}
	}
	return netip.Addr{}, false, ""
}

func protocolOf(p corev1.Protocol) (Protocol, error) {
	switch p {
	case corev1.ProtocolTCP, "":
		return TCP, nil
	case corev1.ProtocolUDP:
		return UDP, nil
	case corev1.ProtocolSCTP:
		return SCTP, fmt.Errorf("protocol SCTP is not supported by the datapath yet")
	}
	return 0, fmt.Errorf("unknown protocol %q", p)
}

// endpointCandidate is one endpoint of a service port, before the ready /
// serving / terminating selection of rule 9.
type endpointCandidate struct {
	backend     Backend
	ready       bool
	serving     bool
	terminating bool
}

// clusterSet returns the backends of one service port (rules 5-9): the
// union over the Service's slices, deduplicated by IP:port with the
// non-terminating copy winning (else the first), then the ready endpoints,
// or if there are none the serving-and-terminating ones.
func clusterSet(endpointSlices []*discoveryv1.EndpointSlice, name ServicePortName) (backends []Backend, problems []Problem) {
	var cands []endpointCandidate
	for _, es := range endpointSlices {
		port, ok := slicePort(es, name)
		if !ok {
			continue
		}
		for _, ep := range es.Endpoints {
			if len(ep.Addresses) == 0 {
				continue
			}
			addr, parsed := parseIPSloppy(ep.Addresses[0])
			if !parsed || !addr.Is4() {
				problems = append(problems, problemf("EndpointSlice", es.Namespace, es.Name, "endpoint address %q is not an IPv4 address", ep.Addresses[0]))
				continue
			}
			cands = append(cands, endpointCandidate{
				backend:     Backend{Addr: addr, Port: port},
				ready:       ep.Conditions.Ready == nil || *ep.Conditions.Ready,
				serving:     ep.Conditions.Serving == nil || *ep.Conditions.Serving,
				terminating: ep.Conditions.Terminating != nil && *ep.Conditions.Terminating,
			})
		}
	}
	// Stable sort by backend, non-terminating copies first: the first of
	// each run is the copy that counts.
	slices.SortStableFunc(cands, func(a, b endpointCandidate) int {
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
	var ready, terminating []Backend
	for i, c := range cands {
		if i > 0 && cands[i-1].backend == c.backend {
			continue
		}
		switch {
		case c.ready:
			ready = append(ready, c.backend)
		case c.serving && c.terminating:
			terminating = append(terminating, c.backend)
		}
	}
	if len(ready) == 0 {
		return terminating, problems
	}
	return ready, problems
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
