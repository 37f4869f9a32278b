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
	// LabelSelector is rule 1 as a Kubernetes label selector, for the
	// API source's list and watch calls.
	LabelSelector = "!" + LabelServiceProxyName + ",!" + LabelHeadless
)

// Visible reports whether an object with these labels is one sluice serves
// (rule 1): the label selector LabelSelector.
func Visible(labels map[string]string) bool {
	_, proxied := labels[LabelServiceProxyName]
	_, headless := labels[LabelHeadless]
	return !proxied && !headless
}

// Desired computes the IPv4 datapath state for a set of Services and
// EndpointSlices. It is a pure function: same inputs, in any order, give the
// same state and the same problems in the same order. The agent computes
// the same incrementally, with a Tracker.
func Desired(services []*corev1.Service, endpointSlices []*discoveryv1.EndpointSlice, node NodeInfo) (*State, []Problem) {
	inputs := map[serviceRef]*serviceInputs{}
	in := func(ref serviceRef) *serviceInputs {
		if inputs[ref] == nil {
			inputs[ref] = &serviceInputs{}
		}
		return inputs[ref]
	}
	for _, svc := range services {
		if Visible(svc.Labels) { // rule 1: a hidden Service is absent, as in the Store
			in(serviceRef{svc.Namespace, svc.Name}).svc = svc
		}
	}
	var problems []Problem
	for _, es := range endpointSlices {
		ref, ok, p := sliceOwner(es)
		if p != nil {
			problems = append(problems, *p)
		}
		if ok {
			in(ref).slices = append(in(ref).slices, es)
		}
	}
	t := NewTracker(node)
	changes := make(map[serviceRef]serviceInputs, len(inputs))
	for ref, i := range inputs {
		sortSlices(i.slices)
		changes[ref] = *i
	}
	t.Update(changes)
	problems = append(problems, t.Problems()...)
	sortProblems(problems)
	return t.State(), problems
}

// serviceRef names a Service: namespace and name.
type serviceRef struct{ namespace, name string }

func (r serviceRef) String() string { return r.namespace + "/" + r.name }

// serviceInputs is everything one Service's share of the state depends on
// (besides the node): the Service (nil when absent) and its slices in name
// order.
type serviceInputs struct {
	svc    *corev1.Service
	slices []*discoveryv1.EndpointSlice
}

// sliceOwner is the Service a slice belongs to (rules 1, 3, 4): through its
// service-name label in its namespace, for IPv4 slices only. ok is false
// for a slice that counts for no Service; p says why when that is a
// problem rather than a choice.
func sliceOwner(es *discoveryv1.EndpointSlice) (ref serviceRef, ok bool, p *Problem) {
	if !Visible(es.Labels) || es.AddressType != discoveryv1.AddressTypeIPv4 {
		return ref, false, nil
	}
	name := es.Labels[discoveryv1.LabelServiceName]
	if name == "" {
		pr := problemf("EndpointSlice", es.Namespace, es.Name, SkipNoService, "no %s label: belongs to no Service", discoveryv1.LabelServiceName)
		return ref, false, &pr
	}
	return serviceRef{es.Namespace, name}, true, nil
}

func sortSlices(list []*discoveryv1.EndpointSlice) {
	slices.SortFunc(list, func(a, b *discoveryv1.EndpointSlice) int { return cmp.Compare(a.Name, b.Name) })
}

func sortProblems(problems []Problem) {
	slices.SortStableFunc(problems, func(a, b Problem) int {
		return cmp.Or(cmp.Compare(a.Object, b.Object), cmp.Compare(a.Reason, b.Reason))
	})
}

func problemf(kind, ns, name, class, format string, args ...any) Problem {
	return Problem{Object: kind + " " + ns + "/" + name, Kind: class, Reason: fmt.Sprintf(format, args...)}
}

// serviceResult is one Service's share of the state, a pure function of
// its inputs and the node.
type serviceResult struct {
	in       serviceInputs
	ports    []*ServicePort
	problems []Problem
	// health is the Service's healthCheckNodePort server, before the
	// Tracker settles which Service gets a contested port.
	health *HealthCheck
	// nodePorts are the Service's TCP nodePorts (sorted, unique), which a
	// healthCheckNodePort must not equal.
	nodePorts []uint16
}

// portInputs is one servable spec port of a Service: its name, port,
// nodePort and the backend sets its frontends choose from.
type portInputs struct {
	name     ServicePortName
	port     uint16
	nodePort int32 // as in the spec; 0 for none
	eps      []endpoint
	// cluster is rule 9 with 11, local rule 10, each sorted. usable:
	// some endpoint is usable anywhere, so an empty set the policy asks
	// for means DROP, not REJECT (rule 14).
	cluster, local []Backend
	usable         bool
}

// computeService is one Service's frontends and their backends.
func computeService(in serviceInputs, node NodeInfo) *serviceResult {
	r := &serviceResult{in: in}
	svc := in.svc
	if svc == nil {
		// Slices of a Service that does not exist (yet, or any more).
		for _, es := range in.slices {
			r.problems = append(r.problems, problemf("EndpointSlice", es.Namespace, es.Name, SkipNoService,
				"Service %s/%s does not exist", es.Namespace, es.Labels[discoveryv1.LabelServiceName]))
		}
		return r
	}
	if !Visible(svc.Labels) || svc.Spec.Type == corev1.ServiceTypeExternalName {
		return r
	}
	vip, ok, reason := clusterIPv4(svc)
	if !ok {
		if reason != "" {
			r.problem(SkipInvalidIP, "%s", reason)
		}
		return r
	}
	affinity, problem := affinityOf(svc)
	if problem != "" {
		r.problem(SkipAffinity, "%s", problem)
	}
	ports := r.portsOf(svc, in.slices, node)
	ext := r.externalOf(svc, node)
	f := frontends{r: r, seen: map[Frontend]*ServicePort{}}
	// Rule 12: internalTrafficPolicy decides the ClusterIP frontends only.
	itpLocal := svc.Spec.InternalTrafficPolicy != nil && *svc.Spec.InternalTrafficPolicy == corev1.ServiceInternalTrafficPolicyLocal
	for _, p := range ports {
		sp := &ServicePort{Name: p.name, Frontend: Frontend{Addr: vip, Port: p.port, Proto: p.name.Proto}, Kind: KindClusterIP, AffinityTimeout: affinity}
		if itpLocal {
			// Rule 12: ClusterIP traffic uses the Local set; rule 14:
			// DROP when it is empty but endpoints exist elsewhere.
			sp.Backends, sp.DropEmpty = p.local, len(p.local) == 0 && p.usable
		} else {
			sp.Backends = p.cluster
		}
		f.add(sp)
	}
	f.external(ports, ext, affinity)
	r.health = r.healthCheckOf(svc, ports, ext.policyLocal)
	return r
}

func (r *serviceResult) problem(class, format string, args ...any) {
	svc := r.in.svc
	r.problems = append(r.problems, problemf("Service", svc.Namespace, svc.Name, class, format, args...))
}

// portsOf is the Service's servable ports with their endpoints; invalid,
// unsupported and repeated ports are reported and left out (rule 17).
func (r *serviceResult) portsOf(svc *corev1.Service, endpointSlices []*discoveryv1.EndpointSlice, node NodeInfo) []*portInputs {
	var out []*portInputs
	seen := map[Frontend]bool{} // the port and protocol; the address is the cluster IP's
	for _, sp := range svc.Spec.Ports {
		proto, err := protocolOf(sp.Protocol)
		if err != nil {
			r.problem(SkipProtocol, "port %q: %v", sp.Name, err)
			continue
		}
		if sp.Port < 1 || sp.Port > 65535 {
			r.problem(SkipInvalidPort, "port %q: port %d out of range 1-65535", sp.Name, sp.Port)
			continue
		}
		key := Frontend{Port: uint16(sp.Port), Proto: proto}
		if seen[key] {
			r.problem(SkipInvalidPort, "port %q: %d/%s listed twice", sp.Name, sp.Port, proto)
			continue
		}
		seen[key] = true
		name := ServicePortName{Namespace: svc.Namespace, Name: svc.Name, Port: sp.Name, Proto: proto}
		eps, bad := endpointsOf(endpointSlices, name, node)
		r.problems = append(r.problems, bad...)
		p := &portInputs{name: name, port: uint16(sp.Port), nodePort: sp.NodePort, eps: eps,
			cluster: clusterSet(eps, node), local: localSet(eps),
			usable: slices.ContainsFunc(eps, func(e endpoint) bool { return e.usable() })}
		slices.SortFunc(p.cluster, Backend.Compare)
		slices.SortFunc(p.local, Backend.Compare)
		out = append(out, p)
	}
	return out
}

// frontends collects one Service's frontends, each once.
type frontends struct {
	r    *serviceResult
	seen map[Frontend]*ServicePort
}

// add keeps sp unless the Service already has its frontend. Frontends are
// added in the order of claimRank (ClusterIP, NodePort, LoadBalancer,
// ExternalIP), so the kind that wins between Services wins within one
// too. Backend slices may be shared between the frontends of a service
// port: they are read-only.
func (f *frontends) add(sp *ServicePort) {
	if had := f.seen[sp.Frontend]; had != nil {
		if had.Kind == sp.Kind {
			f.r.problem(SkipInvalidPort, "port %q: %s frontend %s listed twice", sp.Name.Port, sp.Kind, sp.Frontend)
		} else {
			f.r.problem(SkipConflict, "port %q: %s frontend %s is also its %s frontend (port %q): served as that",
				sp.Name.Port, sp.Kind, sp.Frontend, had.Kind, had.Name.Port)
		}
		return
	}
	f.seen[sp.Frontend] = sp
	f.r.ports = append(f.r.ports, sp)
}

// maxAffinitySeconds is the API server's limit on the affinity timeout.
const maxAffinitySeconds = 86400

// affinityOf is the ClientIP affinity timeout of a Service (rule 22), 0 for
// none. An out-of-range timeout (the API server refuses it, a manifest may
// not) is reported and the default used.
func affinityOf(svc *corev1.Service) (timeout uint32, problem string) {
	if svc.Spec.SessionAffinity != corev1.ServiceAffinityClientIP {
		return 0, ""
	}
	t := corev1.DefaultClientIPServiceAffinitySeconds
	if c := svc.Spec.SessionAffinityConfig; c != nil && c.ClientIP != nil && c.ClientIP.TimeoutSeconds != nil {
		if v := *c.ClientIP.TimeoutSeconds; v >= 1 && v <= maxAffinitySeconds {
			t = v
		} else {
			problem = fmt.Sprintf("sessionAffinityConfig.clientIP.timeoutSeconds %d out of range 1-%d, using %d", v, maxAffinitySeconds, t)
		}
	}
	return uint32(t), problem
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
