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
// EndpointSlices. It is a pure function: same inputs, same state and the
// same problems, in the same order.
func Desired(services []*corev1.Service, endpointSlices []*discoveryv1.EndpointSlice, node NodeInfo) (*State, []Problem) {
	d := desiredBuilder{
		state:  &State{Ports: map[Frontend]*ServicePort{}},
		slices: map[serviceRef][]*discoveryv1.EndpointSlice{},
		node:   node,
	}
	for _, es := range sortedSlices(endpointSlices) {
		d.addSlice(es)
	}
	for _, svc := range sortedServices(services) {
		d.addService(svc)
	}
	return d.state, d.problems
}

type serviceRef struct{ namespace, name string }

type desiredBuilder struct {
	state    *State
	slices   map[serviceRef][]*discoveryv1.EndpointSlice
	node     NodeInfo
	problems []Problem
}

func (d *desiredBuilder) problem(kind, ns, name, format string, args ...any) {
	d.problems = append(d.problems, Problem{
		Object: kind + " " + ns + "/" + name,
		Reason: fmt.Sprintf(format, args...),
	})
}

// addSlice indexes a slice by the Service it belongs to: the
// kubernetes.io/service-name label in the slice's namespace (rule 4), IPv4
// slices only (rule 3).
func (d *desiredBuilder) addSlice(es *discoveryv1.EndpointSlice) {
	if !Visible(es.Labels) || es.AddressType != discoveryv1.AddressTypeIPv4 {
		return
	}
	svcName := es.Labels[discoveryv1.LabelServiceName]
	if svcName == "" {
		d.problem("EndpointSlice", es.Namespace, es.Name, "no %s label: belongs to no Service", discoveryv1.LabelServiceName)
		return
	}
	ref := serviceRef{es.Namespace, svcName}
	d.slices[ref] = append(d.slices[ref], es)
}

func (d *desiredBuilder) addService(svc *corev1.Service) {
	if !Visible(svc.Labels) || svc.Spec.Type == corev1.ServiceTypeExternalName {
		return
	}
	vip, ok, reason := clusterIPv4(svc)
	if !ok {
		if reason != "" {
			d.problem("Service", svc.Namespace, svc.Name, "%s", reason)
		}
		return
	}
	seen := map[Frontend]bool{}
	for _, sp := range svc.Spec.Ports {
		proto, err := protocolOf(sp.Protocol)
		if err != nil {
			d.problem("Service", svc.Namespace, svc.Name, "port %q: %v", sp.Name, err)
			continue
		}
		if sp.Port < 1 || sp.Port > 65535 {
			d.problem("Service", svc.Namespace, svc.Name, "port %q: port %d out of range 1-65535", sp.Name, sp.Port)
			continue
		}
		fe := Frontend{Addr: vip, Port: uint16(sp.Port), Proto: proto}
		if seen[fe] {
			d.problem("Service", svc.Namespace, svc.Name, "port %q: %s listed twice", sp.Name, fe)
			continue
		}
		seen[fe] = true
		name := ServicePortName{Namespace: svc.Namespace, Name: svc.Name, Port: sp.Name, Proto: proto}
		if other, taken := d.state.Ports[fe]; taken {
			d.problem("Service", svc.Namespace, svc.Name, "port %q: %s already served by %s", sp.Name, fe, other.Name)
			continue
		}
		d.state.Ports[fe] = &ServicePort{
			Name:     name,
			Frontend: fe,
			Backends: d.clusterSet(name),
		}
	}
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
// non-terminating copy winning, then the ready endpoints, or if there are
// none the serving-and-terminating ones.
func (d *desiredBuilder) clusterSet(name ServicePortName) []Backend {
	byBackend := map[Backend]endpointCandidate{}
	for _, es := range d.slices[serviceRef{name.Namespace, name.Name}] {
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
				d.problem("EndpointSlice", es.Namespace, es.Name, "endpoint address %q is not an IPv4 address", ep.Addresses[0])
				continue
			}
			c := endpointCandidate{
				backend:     Backend{Addr: addr, Port: port},
				ready:       ep.Conditions.Ready == nil || *ep.Conditions.Ready,
				serving:     ep.Conditions.Serving == nil || *ep.Conditions.Serving,
				terminating: ep.Conditions.Terminating != nil && *ep.Conditions.Terminating,
			}
			if prev, dup := byBackend[c.backend]; dup && (!prev.terminating || c.terminating) {
				continue
			}
			byBackend[c.backend] = c
		}
	}

	var ready, terminating []Backend
	for b, c := range byBackend {
		switch {
		case c.ready:
			ready = append(ready, b)
		case c.serving && c.terminating:
			terminating = append(terminating, b)
		}
	}
	set := ready
	if len(set) == 0 {
		set = terminating
	}
	slices.SortFunc(set, Backend.Compare)
	return set
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

func sortedServices(in []*corev1.Service) []*corev1.Service {
	out := slices.Clone(in)
	slices.SortFunc(out, func(a, b *corev1.Service) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	return out
}

func sortedSlices(in []*discoveryv1.EndpointSlice) []*discoveryv1.EndpointSlice {
	out := slices.Clone(in)
	slices.SortFunc(out, func(a, b *discoveryv1.EndpointSlice) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	return out
}
