package control

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func ptr[T any](v T) *T { return &v }

type svcOpt func(*corev1.Service)

func svc(name, clusterIP string, opts ...svcOpt) *corev1.Service {
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name},
		Spec: corev1.ServiceSpec{
			ClusterIP: clusterIP,
			Ports:     []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}},
		},
	}
	for _, o := range opts {
		o(s)
	}
	return s
}

func withLabels(kv ...string) svcOpt {
	return func(s *corev1.Service) {
		s.Labels = map[string]string{}
		for i := 0; i < len(kv); i += 2 {
			s.Labels[kv[i]] = kv[i+1]
		}
	}
}

func withPorts(ps ...corev1.ServicePort) svcOpt {
	return func(s *corev1.Service) { s.Spec.Ports = ps }
}

type ep struct {
	addrs                       []string
	ready, serving, terminating *bool
	node                        string
	zones, nodes                []string // hints; nil for none
}

func slice(name, service string, ports []discoveryv1.EndpointPort, eps ...ep) *discoveryv1.EndpointSlice {
	es := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "ns", Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: service}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       ports,
	}
	for _, e := range eps {
		d := discoveryv1.Endpoint{Addresses: e.addrs, Conditions: discoveryv1.EndpointConditions{Ready: e.ready, Serving: e.serving, Terminating: e.terminating}}
		if e.node != "" {
			d.NodeName = ptr(e.node)
		}
		if e.zones != nil || e.nodes != nil {
			d.Hints = &discoveryv1.EndpointHints{}
			for _, z := range e.zones {
				d.Hints.ForZones = append(d.Hints.ForZones, discoveryv1.ForZone{Name: z})
			}
			for _, n := range e.nodes {
				d.Hints.ForNodes = append(d.Hints.ForNodes, discoveryv1.ForNode{Name: n})
			}
		}
		es.Endpoints = append(es.Endpoints, d)
	}
	return es
}

func httpPort(port int32) []discoveryv1.EndpointPort {
	return []discoveryv1.EndpointPort{{Name: ptr("http"), Port: ptr(port), Protocol: ptr(corev1.ProtocolTCP)}}
}

func ready(addr string) ep { return ep{addrs: []string{addr}} }

// term is a serving, terminating, not ready endpoint.
func term(addr string) ep {
	return ep{addrs: []string{addr}, ready: ptr(false), serving: ptr(true), terminating: ptr(true)}
}

func (e ep) on(node string) ep            { e.node = node; return e }
func (e ep) inZones(z ...string) ep       { e.zones = z; return e }
func (e ep) forNodes(n ...string) ep      { e.nodes = n; return e }
func (e ep) cond(r, s, t *bool) ep        { e.ready, e.serving, e.terminating = r, s, t; return e }
func addrs(a ...string) ep                { return ep{addrs: a} }
func withClusterIPs(ips ...string) svcOpt { return func(s *corev1.Service) { s.Spec.ClusterIPs = ips } }

func withITP(p corev1.ServiceInternalTrafficPolicy) svcOpt {
	return func(s *corev1.Service) { s.Spec.InternalTrafficPolicy = &p }
}

// withAffinity sets sessionAffinity ClientIP, with the timeout when not nil.
func withAffinity(timeout *int32) svcOpt {
	return func(s *corev1.Service) {
		s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
		if timeout != nil {
			s.Spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: timeout}}
		}
	}
}

func addressType(t discoveryv1.AddressType, es *discoveryv1.EndpointSlice) *discoveryv1.EndpointSlice {
	es.AddressType = t
	return es
}

// esPort is a slice port; proto "" leaves the protocol nil.
func esPort(name string, port int32, proto corev1.Protocol) discoveryv1.EndpointPort {
	p := discoveryv1.EndpointPort{Name: &name, Port: &port}
	if proto != "" {
		p.Protocol = &proto
	}
	return p
}

func esPorts(ps ...discoveryv1.EndpointPort) []discoveryv1.EndpointPort { return ps }

// render turns a state into "frontend -> backends" lines, sorted. A
// backend on this node ends in "(local)". A line ends in "drop" when its
// empty backend set means DROP rather than REJECT (rule 14), in
// "affinity=N" for ClientIP affinity (rule 22), "kind=K" for a frontend
// other than a ClusterIP, "snat" when remote backends are SNATed,
// "ranges=..." for source ranges and "internal=[backends drop snat]" for
// the set this node's pods and the node get (rule 13), each after one
// space: "10.96.0.1:80/TCP -> drop affinity=10800". Health checks follow
// as "health PORT ns/name local=N". It also checks what every
// ServicePort must satisfy: keyed by its own frontend, backends sorted
// and unique.
func render(s *State) []string {
	var out []string
	backends := func(list []Backend) (string, string) {
		var bs []string
		for _, b := range list {
			if b.Local {
				bs = append(bs, b.String()+"(local)")
			} else {
				bs = append(bs, b.String())
			}
		}
		bad := ""
		if !slices.IsSortedFunc(list, Backend.Compare) || len(slices.CompactFunc(slices.Clone(list), func(a, b Backend) bool { return a.Compare(b) == 0 })) != len(list) {
			bad = " (backends not sorted and unique)"
		}
		return strings.Join(bs, ","), bad
	}
	for fe, sp := range s.Ports {
		var attrs []string
		if sp.DropEmpty {
			attrs = append(attrs, "drop")
		}
		if sp.AffinityTimeout != 0 {
			attrs = append(attrs, fmt.Sprintf("affinity=%d", sp.AffinityTimeout))
		}
		if sp.Kind != KindClusterIP {
			attrs = append(attrs, "kind="+sp.Kind.String())
		}
		if sp.SNATRemote {
			attrs = append(attrs, "snat")
		}
		if len(sp.SourceRanges) > 0 {
			var rs []string
			for _, r := range sp.SourceRanges {
				rs = append(rs, r.String())
			}
			attrs = append(attrs, "ranges="+strings.Join(rs, ","))
		}
		bs, bad := backends(sp.Backends)
		if in := sp.Internal; in != nil {
			ibs, ibad := backends(in.Backends)
			var parts []string
			if ibs != "" {
				parts = append(parts, ibs)
			}
			if in.DropEmpty {
				parts = append(parts, "drop")
			}
			if in.SNATRemote {
				parts = append(parts, "snat")
			}
			attrs = append(attrs, "internal=["+strings.Join(parts, " ")+"]")
			bad += ibad
		}
		line := fe.String() + " -> " + bs
		for _, a := range attrs {
			if !strings.HasSuffix(line, " ") {
				line += " "
			}
			line += a
		}
		if sp.Frontend != fe {
			line += " (keyed by another frontend: " + sp.Frontend.String() + ")"
		}
		out = append(out, line+bad)
	}
	for port, hc := range s.HealthChecks {
		line := fmt.Sprintf("health %d %s/%s local=%d", port, hc.Namespace, hc.Name, hc.LocalEndpoints)
		if hc.Port != port {
			line += fmt.Sprintf(" (keyed by another port: %d)", hc.Port)
		}
		out = append(out, line)
	}
	slices.Sort(out)
	return out
}

// desiredCase is one rule's example: inputs, the rendered state and the
// problems.
type desiredCase struct {
	rule     string
	services []*corev1.Service
	slices   []*discoveryv1.EndpointSlice
	node     *NodeInfo // nil: node-1, no zone
	want     []string
	problems []string // substrings, in order
}

func TestDesired(t *testing.T) {
	f, tr := ptr(false), ptr(true)
	runDesiredCases(t, []desiredCase{
		{
			rule:     "1: a service-proxy-name label hides the Service: its visible slices belong to no Service",
			services: []*corev1.Service{svc("a", "10.96.0.1", withLabels(LabelServiceProxyName, "other"))},
			slices:   []*discoveryv1.EndpointSlice{slice("a-1", "a", httpPort(8080), ready("10.0.0.1"))},
			problems: []string{"EndpointSlice ns/a-1: Service ns/a does not exist"},
		},
		{
			rule:     "1: a headless label hides the Service, whatever its value",
			services: []*corev1.Service{svc("a", "10.96.0.1", withLabels(LabelHeadless, ""))},
		},
		{
			rule:     "1: a labelled EndpointSlice is invisible",
			services: []*corev1.Service{svc("a", "10.96.0.1")},
			slices: []*discoveryv1.EndpointSlice{func() *discoveryv1.EndpointSlice {
				s := slice("a-1", "a", httpPort(8080), ready("10.0.0.1"))
				s.Labels[LabelServiceProxyName] = "x"
				return s
			}()},
			want: []string{"10.96.0.1:80/TCP -> "},
		},
		{
			rule:     "2: headless (clusterIP None) and unset clusterIP get no entries",
			services: []*corev1.Service{svc("a", "None"), svc("b", "")},
			slices:   []*discoveryv1.EndpointSlice{slice("a-1", "a", httpPort(8080), ready("10.0.0.1"))},
		},
		{
			rule: "2: ExternalName gets no entries",
			services: []*corev1.Service{svc("a", "10.96.0.1", func(s *corev1.Service) {
				s.Spec.Type = corev1.ServiceTypeExternalName
				s.Spec.ExternalName = "example.com"
			})},
		},
		{
			rule: "3: the IPv4 entry of clusterIPs is used; IPv6 and FQDN slices do not count",
			services: []*corev1.Service{svc("a", "fd00::1", func(s *corev1.Service) {
				s.Spec.ClusterIPs = []string{"fd00::1", "10.96.0.1"}
			})},
			slices: []*discoveryv1.EndpointSlice{
				slice("a-1", "a", httpPort(8080), ready("10.0.0.1")),
				func() *discoveryv1.EndpointSlice {
					s := slice("a-2", "a", httpPort(8080), ready("fd00::5"))
					s.AddressType = discoveryv1.AddressTypeIPv6
					return s
				}(),
				func() *discoveryv1.EndpointSlice {
					s := slice("a-3", "a", httpPort(8080), ready("example.com"))
					s.AddressType = discoveryv1.AddressTypeFQDN
					return s
				}(),
			},
			want: []string{"10.96.0.1:80/TCP -> 10.0.0.1:8080"},
		},
		{
			rule:     "3: an IPv6-only Service gets no IPv4 entries",
			services: []*corev1.Service{svc("a", "fd00::1")},
		},
		{
			rule:     "4: slices belong through the service-name label and namespace, not the selector",
			services: []*corev1.Service{svc("a", "10.96.0.1"), svc("b", "10.96.0.2")},
			slices: []*discoveryv1.EndpointSlice{
				slice("x", "a", httpPort(8080), ready("10.0.0.1")),
				func() *discoveryv1.EndpointSlice {
					s := slice("y", "b", httpPort(8080), ready("10.0.0.2"))
					s.Namespace = "other" // same service name, other namespace
					return s
				}(),
			},
			want:     []string{"10.96.0.1:80/TCP -> 10.0.0.1:8080", "10.96.0.2:80/TCP -> "},
			problems: []string{"EndpointSlice other/y: Service other/b does not exist"},
		},
		{
			rule: "5: slice ports match service ports by name and protocol; the backend port is the slice's",
			services: []*corev1.Service{svc("a", "10.96.0.1", withPorts(
				corev1.ServicePort{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP},
				corev1.ServicePort{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP},
			))},
			slices: []*discoveryv1.EndpointSlice{slice("a-1", "a", []discoveryv1.EndpointPort{
				{Name: ptr("http"), Port: ptr(int32(8080)), Protocol: ptr(corev1.ProtocolTCP)},
				{Name: ptr("dns"), Port: ptr(int32(5353)), Protocol: ptr(corev1.ProtocolUDP)},
				{Name: ptr("dns"), Port: ptr(int32(9999)), Protocol: ptr(corev1.ProtocolTCP)},
			}, ready("10.0.0.1"))},
			want: []string{"10.96.0.1:53/UDP -> 10.0.0.1:5353", "10.96.0.1:80/TCP -> 10.0.0.1:8080"},
		},
		{
			rule: "5: targetPort is never read",
			services: []*corev1.Service{svc("a", "10.96.0.1", withPorts(corev1.ServicePort{
				Name: "http", Port: 80, Protocol: corev1.ProtocolTCP, TargetPort: intOrString(1234)}))},
			slices: []*discoveryv1.EndpointSlice{slice("a-1", "a", httpPort(8080), ready("10.0.0.1"))},
			want:   []string{"10.96.0.1:80/TCP -> 10.0.0.1:8080"},
		},
		{
			rule:     "6: slice ports with nil name or nil/0 port are ignored",
			services: []*corev1.Service{svc("a", "10.96.0.1")},
			slices: []*discoveryv1.EndpointSlice{
				slice("a-1", "a", []discoveryv1.EndpointPort{{Port: ptr(int32(8080))}}, ready("10.0.0.1")),
				slice("a-2", "a", []discoveryv1.EndpointPort{{Name: ptr("http")}}, ready("10.0.0.2")),
				slice("a-3", "a", []discoveryv1.EndpointPort{{Name: ptr("http"), Port: ptr(int32(0))}}, ready("10.0.0.3")),
			},
			want: []string{"10.96.0.1:80/TCP -> "},
		},
		{
			rule:     "6: endpoints without addresses are skipped, addresses[1:] ignored, IPs parsed leniently",
			services: []*corev1.Service{svc("a", "10.96.0.1")},
			slices: []*discoveryv1.EndpointSlice{slice("a-1", "a", httpPort(8080),
				ep{addrs: nil},
				ep{addrs: []string{"10.180.00.001", "10.0.0.9"}},
				ep{addrs: []string{" 10.0.0.2 "}},
				ep{addrs: []string{"not-an-ip"}},
			)},
			want:     []string{"10.96.0.1:80/TCP -> 10.0.0.2:8080,10.180.0.1:8080"},
			problems: []string{`EndpointSlice ns/a-1: endpoint address "not-an-ip"`},
		},
		{
			rule:     "6: an unparsable clusterIP is reported, never a crash",
			services: []*corev1.Service{svc("a", "10.96.0.300")},
			problems: []string{`Service ns/a: clusterIP "10.96.0.300"`},
		},
		{
			rule:     "7: endpoints are the union of slices, deduplicated; the non-terminating copy wins",
			services: []*corev1.Service{svc("a", "10.96.0.1")},
			slices: []*discoveryv1.EndpointSlice{
				slice("a-1", "a", httpPort(8080), ready("10.0.0.1"), ep{addrs: []string{"10.0.0.2"}, ready: f, serving: tr, terminating: tr}),
				slice("a-2", "a", httpPort(8080), ready("10.0.0.1"), ready("10.0.0.2"), ready("10.0.0.3")),
			},
			want: []string{"10.96.0.1:80/TCP -> 10.0.0.1:8080,10.0.0.2:8080,10.0.0.3:8080"},
		},
		{
			rule:     "8, 9: ready nil counts as ready; not-ready endpoints are left out while ready ones exist",
			services: []*corev1.Service{svc("a", "10.96.0.1")},
			slices: []*discoveryv1.EndpointSlice{slice("a-1", "a", httpPort(8080),
				ep{addrs: []string{"10.0.0.1"}},
				ep{addrs: []string{"10.0.0.2"}, ready: f},
				ep{addrs: []string{"10.0.0.3"}, ready: f, serving: tr, terminating: tr},
			)},
			want: []string{"10.96.0.1:80/TCP -> 10.0.0.1:8080"},
		},
		{
			rule:     "9: with no ready endpoint, serving-and-terminating ones are used; non-serving never",
			services: []*corev1.Service{svc("a", "10.96.0.1")},
			slices: []*discoveryv1.EndpointSlice{slice("a-1", "a", httpPort(8080),
				ep{addrs: []string{"10.0.0.2"}, ready: f},                               // serving nil = true, but not terminating
				ep{addrs: []string{"10.0.0.3"}, ready: f, serving: tr, terminating: tr}, // used
				ep{addrs: []string{"10.0.0.4"}, ready: f, serving: f, terminating: tr},  // not serving
				ep{addrs: []string{"10.0.0.5"}, ready: f, terminating: tr},              // serving nil = true
			)},
			want: []string{"10.96.0.1:80/TCP -> 10.0.0.3:8080,10.0.0.5:8080"},
		},
		{
			rule:     "17: a Service without endpoints keeps its frontend (REJECT)",
			services: []*corev1.Service{svc("a", "10.96.0.1")},
			want:     []string{"10.96.0.1:80/TCP -> "},
		},
		{
			rule: "17: invalid and unsupported ports are reported and skipped, the others served",
			services: []*corev1.Service{svc("a", "10.96.0.1", withPorts(
				corev1.ServicePort{Name: "bad", Port: 70000, Protocol: corev1.ProtocolTCP},
				corev1.ServicePort{Name: "sctp", Port: 90, Protocol: corev1.ProtocolSCTP},
				corev1.ServicePort{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP},
			))},
			want:     []string{"10.96.0.1:80/TCP -> "},
			problems: []string{"port 70000 out of range", "SCTP is not supported"},
		},
		{
			rule:     "17: two Services claiming one frontend: the first by namespace/name wins",
			services: []*corev1.Service{svc("b", "10.96.0.1"), svc("a", "10.96.0.1")},
			slices:   []*discoveryv1.EndpointSlice{slice("a-1", "a", httpPort(8080), ready("10.0.0.1")), slice("b-1", "b", httpPort(8080), ready("10.0.0.2"))},
			want:     []string{"10.96.0.1:80/TCP -> 10.0.0.1:8080"},
			problems: []string{"Service ns/b: port \"http\": ClusterIP frontend 10.96.0.1:80/TCP already served by ns/a:http/TCP as its ClusterIP frontend"},
		},
		{
			rule:     "2, 3: an IPv6-only Service and its IPv6 slices get nothing on the IPv4 node, and no problem",
			services: []*corev1.Service{svc("a", "fd00::1", withClusterIPs("fd00::1"))},
			slices:   []*discoveryv1.EndpointSlice{addressType(discoveryv1.AddressTypeIPv6, slice("a-1", "a", httpPort(8080), ready("fd00::5")))},
		},
		{
			rule:     "3: dual-stack with IPv4 first: the IPv4 entry, backends from the IPv4 slices only",
			services: []*corev1.Service{svc("a", "10.96.0.1", withClusterIPs("10.96.0.1", "fd00::1"))},
			slices: []*discoveryv1.EndpointSlice{
				addressType(discoveryv1.AddressTypeIPv6, slice("a-0", "a", httpPort(8080), ready("fd00::5"))),
				slice("a-1", "a", httpPort(8080), ready("10.0.0.1")),
			},
			want: []string{"10.96.0.1:80/TCP -> 10.0.0.1:8080"},
		},
		{
			rule:     "3: a dual-stack Service with only IPv6 slices has no IPv4 backends (REJECT)",
			services: []*corev1.Service{svc("a", "fd00::1", withClusterIPs("fd00::1", "10.96.0.1"))},
			slices:   []*discoveryv1.EndpointSlice{addressType(discoveryv1.AddressTypeIPv6, slice("a-1", "a", httpPort(8080), ready("fd00::5")))},
			want:     []string{"10.96.0.1:80/TCP -> "},
		},
		{
			rule:     "3, 6: an IPv6 address in an IPv4 slice is skipped with a problem, the rest programmed",
			services: []*corev1.Service{svc("a", "10.96.0.1")},
			slices:   []*discoveryv1.EndpointSlice{slice("a-1", "a", httpPort(8080), ready("fd00::5"), ready("10.0.0.1"))},
			want:     []string{"10.96.0.1:80/TCP -> 10.0.0.1:8080"},
			problems: []string{`EndpointSlice ns/a-1: endpoint address "fd00::5" is not an IPv4 address`},
		},
		{
			rule: "5: two named ports map to the slice ports of the same names, whatever their order",
			services: []*corev1.Service{svc("a", "10.96.0.1", withPorts(
				corev1.ServicePort{Name: "web", Port: 80, Protocol: corev1.ProtocolTCP},
				corev1.ServicePort{Name: "admin", Port: 81, Protocol: corev1.ProtocolTCP},
			))},
			slices: []*discoveryv1.EndpointSlice{slice("a-1", "a", esPorts(
				esPort("admin", 9091, corev1.ProtocolTCP),
				esPort("web", 9090, corev1.ProtocolTCP),
			), ready("10.0.0.1"))},
			want: []string{"10.96.0.1:80/TCP -> 10.0.0.1:9090", "10.96.0.1:81/TCP -> 10.0.0.1:9091"},
		},
		{
			rule: "5: a slice port with the right name but another protocol does not apply (nil protocol is TCP)",
			services: []*corev1.Service{svc("a", "10.96.0.1", withPorts(
				corev1.ServicePort{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP}))},
			slices: []*discoveryv1.EndpointSlice{
				slice("a-1", "a", esPorts(esPort("dns", 53, corev1.ProtocolTCP)), ready("10.0.0.1")),
				slice("a-2", "a", esPorts(esPort("dns", 5353, "")), ready("10.0.0.2")),
			},
			want: []string{"10.96.0.1:53/UDP -> "},
		},
		{
			rule:     "5: a slice port without protocol is TCP",
			services: []*corev1.Service{svc("a", "10.96.0.1")},
			slices:   []*discoveryv1.EndpointSlice{slice("a-1", "a", esPorts(esPort("http", 8080, "")), ready("10.0.0.1"))},
			want:     []string{"10.96.0.1:80/TCP -> 10.0.0.1:8080"},
		},
		{
			rule: "5, 6: the unnamed service port takes the slice port named \"\"; a nil name never applies",
			services: []*corev1.Service{svc("a", "10.96.0.1", withPorts(
				corev1.ServicePort{Port: 80, Protocol: corev1.ProtocolTCP}))},
			slices: []*discoveryv1.EndpointSlice{
				slice("a-1", "a", esPorts(esPort("", 8080, corev1.ProtocolTCP)), ready("10.0.0.1")),
				slice("a-2", "a", []discoveryv1.EndpointPort{{Port: ptr(int32(8081)), Protocol: ptr(corev1.ProtocolTCP)}}, ready("10.0.0.2")),
			},
			want: []string{"10.96.0.1:80/TCP -> 10.0.0.1:8080"},
		},
		{
			rule:     "6: a port-0 entry before a valid one of the same name is ignored: the valid one applies",
			services: []*corev1.Service{svc("a", "10.96.0.1")},
			slices: []*discoveryv1.EndpointSlice{slice("a-1", "a", esPorts(
				esPort("http", 0, corev1.ProtocolTCP),
				esPort("http", 8080, corev1.ProtocolTCP),
			), ready("10.0.0.1"))},
			want: []string{"10.96.0.1:80/TCP -> 10.0.0.1:8080"},
		},
		{
			rule:     "6: empty addresses are skipped; only addresses[0] counts, even when it is unparsable",
			services: []*corev1.Service{svc("a", "10.96.0.1")},
			slices: []*discoveryv1.EndpointSlice{slice("a-1", "a", httpPort(8080),
				addrs(),
				addrs("10.0.0.1", "10.0.0.2"),
				addrs("bogus", "10.0.0.3"),
			)},
			want:     []string{"10.96.0.1:80/TCP -> 10.0.0.1:8080"},
			problems: []string{`EndpointSlice ns/a-1: endpoint address "bogus"`},
		},
		{
			rule:     "6: lenient parsing: leading zeros are decimal, spaces and a CIDR suffix are trimmed",
			services: []*corev1.Service{svc("a", "10.96.0.1")},
			slices: []*discoveryv1.EndpointSlice{slice("a-1", "a", httpPort(8080),
				ready("010.000.000.010"), ready("10.180.00.001"), ready(" 10.0.0.7/32 "), ready("0010.0.0.1"),
			)},
			want: []string{"10.96.0.1:80/TCP -> 10.0.0.1:8080,10.0.0.7:8080,10.0.0.10:8080,10.180.0.1:8080"},
		},
		{
			rule:     "6: a leniently parsed clusterIP is the IP it reads as",
			services: []*corev1.Service{svc("a", "10.096.000.01")},
			want:     []string{"10.96.0.1:80/TCP -> "},
		},
		{
			rule:     "6, 7: spellings of one IP are one endpoint",
			services: []*corev1.Service{svc("a", "10.96.0.1")},
			slices: []*discoveryv1.EndpointSlice{
				slice("a-1", "a", httpPort(8080), ready("10.0.0.1"), ready("10.000.0.01")),
				slice("a-2", "a", httpPort(8080), ready("10.0.0.001")),
			},
			want: []string{"10.96.0.1:80/TCP -> 10.0.0.1:8080"},
		},
		{
			rule:     "6: unparsable IPs are skipped with a problem naming their slice; the rest is programmed",
			services: []*corev1.Service{svc("a", "10.96.0.1")},
			slices: []*discoveryv1.EndpointSlice{
				slice("a-1", "a", httpPort(8080), ready("10.0.0.1"), ready("10.0.0.2")),
				slice("a-2", "a", httpPort(8080), ready("10.0.0.256"), ready("10.0.0.3"), ready("1.2.3")),
			},
			want: []string{"10.96.0.1:80/TCP -> 10.0.0.1:8080,10.0.0.2:8080,10.0.0.3:8080"},
			problems: []string{
				`EndpointSlice ns/a-2: endpoint address "1.2.3" is not an IPv4 address`,
				`EndpointSlice ns/a-2: endpoint address "10.0.0.256" is not an IPv4 address`,
			},
		},
		{
			rule:     "7: a duplicate across slices, terminating copy in the first slice: the non-terminating copy wins",
			services: []*corev1.Service{svc("a", "10.96.0.1")},
			slices: []*discoveryv1.EndpointSlice{
				slice("a-1", "a", httpPort(8080), ready("10.0.0.1"), term("10.0.0.2")),
				slice("a-2", "a", httpPort(8080), ready("10.0.0.2")),
			},
			want: []string{"10.96.0.1:80/TCP -> 10.0.0.1:8080,10.0.0.2:8080"},
		},
		{
			rule:     "7: a duplicate across slices, terminating copy in the second slice: the non-terminating copy wins",
			services: []*corev1.Service{svc("a", "10.96.0.1")},
			slices: []*discoveryv1.EndpointSlice{
				slice("a-1", "a", httpPort(8080), ready("10.0.0.2")),
				slice("a-2", "a", httpPort(8080), ready("10.0.0.1"), term("10.0.0.2")),
			},
			want: []string{"10.96.0.1:80/TCP -> 10.0.0.1:8080,10.0.0.2:8080"},
		},
		{
			rule:     "7: the non-terminating copy wins even when it is not ready: no terminating fallback to it",
			services: []*corev1.Service{svc("a", "10.96.0.1")},
			slices: []*discoveryv1.EndpointSlice{
				slice("a-1", "a", httpPort(8080), term("10.0.0.2")),
				slice("a-2", "a", httpPort(8080), ready("10.0.0.2").cond(f, f, f)),
			},
			want: []string{"10.96.0.1:80/TCP -> "},
		},
		{
			rule:     "7, 12: the winning copy's node counts (terminating local copy first)",
			services: []*corev1.Service{svc("a", "10.96.0.1", withITP(corev1.ServiceInternalTrafficPolicyLocal))},
			slices: []*discoveryv1.EndpointSlice{
				slice("a-1", "a", httpPort(8080), term("10.0.0.2").on("node-1")),
				slice("a-2", "a", httpPort(8080), ready("10.0.0.2").on("node-2")),
			},
			want: []string{"10.96.0.1:80/TCP -> drop"},
		},
		{
			rule:     "7, 12: the winning copy's node counts (terminating local copy second)",
			services: []*corev1.Service{svc("a", "10.96.0.1", withITP(corev1.ServiceInternalTrafficPolicyLocal))},
			slices: []*discoveryv1.EndpointSlice{
				slice("a-1", "a", httpPort(8080), ready("10.0.0.2").on("node-2")),
				slice("a-2", "a", httpPort(8080), term("10.0.0.2").on("node-1")),
			},
			want: []string{"10.96.0.1:80/TCP -> drop"},
		},
		{
			rule:     "8: ready nil is ready, whatever serving says; ready false is not",
			services: []*corev1.Service{svc("a", "10.96.0.1")},
			slices: []*discoveryv1.EndpointSlice{slice("a-1", "a", httpPort(8080),
				ready("10.0.0.1").cond(nil, f, nil),
				ready("10.0.0.2").cond(f, nil, nil),
			)},
			want: []string{"10.96.0.1:80/TCP -> 10.0.0.1:8080"},
		},
		{
			rule:     "8, 9: terminating nil is not terminating: a not-ready serving endpoint is no fallback (REJECT)",
			services: []*corev1.Service{svc("a", "10.96.0.1")},
			slices:   []*discoveryv1.EndpointSlice{slice("a-1", "a", httpPort(8080), ready("10.0.0.1").cond(f, tr, nil))},
			want:     []string{"10.96.0.1:80/TCP -> "},
		},
		{
			rule:     "8, 9: serving nil is serving: a terminating endpoint without it is a fallback",
			services: []*corev1.Service{svc("a", "10.96.0.1")},
			slices:   []*discoveryv1.EndpointSlice{slice("a-1", "a", httpPort(8080), ready("10.0.0.1").cond(f, nil, tr))},
			want:     []string{"10.96.0.1:80/TCP -> 10.0.0.1:8080"},
		},
		{
			rule:     "9: with no ready endpoint, serving-and-terminating ones are used cluster-wide, local or not",
			services: []*corev1.Service{svc("a", "10.96.0.1")},
			slices: []*discoveryv1.EndpointSlice{slice("a-1", "a", httpPort(8080),
				term("10.0.0.1").on("node-1"),
				term("10.0.0.2").on("node-2"),
				term("10.0.0.3"),
				term("10.0.0.4").on("node-1").cond(f, f, tr),
			)},
			want: []string{"10.96.0.1:80/TCP -> 10.0.0.1:8080(local),10.0.0.2:8080,10.0.0.3:8080"},
		},
		{
			rule:     "9, 14: only non-serving endpoints: nothing used, REJECT not DROP",
			services: []*corev1.Service{svc("a", "10.96.0.1")},
			slices: []*discoveryv1.EndpointSlice{slice("a-1", "a", httpPort(8080),
				term("10.0.0.1").cond(f, f, tr), ready("10.0.0.2").cond(f, f, nil))},
			want: []string{"10.96.0.1:80/TCP -> "},
		},
		{
			rule:     "8, 12: internalTrafficPolicy Local uses the local ready endpoints; local iff nodeName is this node",
			services: []*corev1.Service{svc("a", "10.96.0.1", withITP(corev1.ServiceInternalTrafficPolicyLocal))},
			slices: []*discoveryv1.EndpointSlice{slice("a-1", "a", httpPort(8080),
				ready("10.0.0.1").on("node-1"),
				ready("10.0.0.2").on("node-2"),
				ready("10.0.0.3"),
				term("10.0.0.4").on("node-1"),
				ready("10.0.0.5").on("node-10"),
			)},
			want: []string{"10.96.0.1:80/TCP -> 10.0.0.1:8080(local)"},
		},
		{
			rule:     "10, 12: no local ready endpoint: the local serving-and-terminating ones, not remote ready ones",
			services: []*corev1.Service{svc("a", "10.96.0.1", withITP(corev1.ServiceInternalTrafficPolicyLocal))},
			slices: []*discoveryv1.EndpointSlice{slice("a-1", "a", httpPort(8080),
				term("10.0.0.1").on("node-1"),
				ready("10.0.0.2").on("node-2"),
				term("10.0.0.3").on("node-1").cond(f, f, tr),
			)},
			want: []string{"10.96.0.1:80/TCP -> 10.0.0.1:8080(local)"},
		},
		{
			rule:     "12, 14: an empty Local set while other nodes have ready endpoints: DROP",
			services: []*corev1.Service{svc("a", "10.96.0.1", withITP(corev1.ServiceInternalTrafficPolicyLocal))},
			slices: []*discoveryv1.EndpointSlice{slice("a-1", "a", httpPort(8080),
				ready("10.0.0.1").on("node-2"),
				ready("10.0.0.2").on("node-1").cond(f, nil, nil),
			)},
			want: []string{"10.96.0.1:80/TCP -> drop"},
		},
		{
			rule:     "12, 14: remote serving-and-terminating endpoints count as endpoints: DROP",
			services: []*corev1.Service{svc("a", "10.96.0.1", withITP(corev1.ServiceInternalTrafficPolicyLocal))},
			slices:   []*discoveryv1.EndpointSlice{slice("a-1", "a", httpPort(8080), term("10.0.0.1").on("node-2"))},
			want:     []string{"10.96.0.1:80/TCP -> drop"},
		},
		{
			rule:     "12, 14: internalTrafficPolicy Local without any endpoint: REJECT",
			services: []*corev1.Service{svc("a", "10.96.0.1", withITP(corev1.ServiceInternalTrafficPolicyLocal))},
			want:     []string{"10.96.0.1:80/TCP -> "},
		},
		{
			rule:     "12, 14: internalTrafficPolicy Local with only unusable endpoints: REJECT",
			services: []*corev1.Service{svc("a", "10.96.0.1", withITP(corev1.ServiceInternalTrafficPolicyLocal))},
			slices: []*discoveryv1.EndpointSlice{slice("a-1", "a", httpPort(8080),
				term("10.0.0.1").on("node-1").cond(f, f, tr), ready("10.0.0.2").on("node-2").cond(f, nil, nil))},
			want: []string{"10.96.0.1:80/TCP -> "},
		},
		{
			rule:     "8, 12: a node without a name has no local endpoints, not even those with an empty nodeName",
			services: []*corev1.Service{svc("a", "10.96.0.1", withITP(corev1.ServiceInternalTrafficPolicyLocal))},
			slices: []*discoveryv1.EndpointSlice{func() *discoveryv1.EndpointSlice {
				s := slice("a-1", "a", httpPort(8080), ready("10.0.0.1"), ready("10.0.0.2").on("node-2"))
				s.Endpoints[0].NodeName = ptr("")
				return s
			}()},
			node: &NodeInfo{},
			want: []string{"10.96.0.1:80/TCP -> drop"},
		},
		{
			rule:     "12: internalTrafficPolicy Cluster uses the Cluster set",
			services: []*corev1.Service{svc("a", "10.96.0.1", withITP(corev1.ServiceInternalTrafficPolicyCluster))},
			slices:   []*discoveryv1.EndpointSlice{slice("a-1", "a", httpPort(8080), ready("10.0.0.2").on("node-2"))},
			want:     []string{"10.96.0.1:80/TCP -> 10.0.0.2:8080"},
		},
		{
			rule:     "11: every ready endpoint hinted, one for this zone: only this zone's (not-ready ones do not count)",
			services: []*corev1.Service{svc("a", "10.96.0.1")},
			slices: []*discoveryv1.EndpointSlice{slice("a-1", "a", httpPort(8080),
				ready("10.0.0.1").inZones("z1"),
				ready("10.0.0.2").inZones("z2"),
				ready("10.0.0.3").inZones("z2", "z1"),
				term("10.0.0.4"),
				ready("10.0.0.5").cond(f, f, nil),
			)},
			node: &NodeInfo{Name: "node-1", Zone: "z1"},
			want: []string{"10.96.0.1:80/TCP -> 10.0.0.1:8080,10.0.0.3:8080"},
		},
		{
			rule:     "11: zone hints on only some ready endpoints: no filtering",
			services: []*corev1.Service{svc("a", "10.96.0.1")},
			slices: []*discoveryv1.EndpointSlice{slice("a-1", "a", httpPort(8080),
				ready("10.0.0.1").inZones("z1"), ready("10.0.0.2").inZones("z2"), ready("10.0.0.3"))},
			node: &NodeInfo{Name: "node-1", Zone: "z1"},
			want: []string{"10.96.0.1:80/TCP -> 10.0.0.1:8080,10.0.0.2:8080,10.0.0.3:8080"},
		},
		{
			rule:     "11: every ready endpoint hinted, none for this zone: no filtering",
			services: []*corev1.Service{svc("a", "10.96.0.1")},
			slices: []*discoveryv1.EndpointSlice{slice("a-1", "a", httpPort(8080),
				ready("10.0.0.1").inZones("z2"), ready("10.0.0.2").inZones("z3"))},
			node: &NodeInfo{Name: "node-1", Zone: "z1"},
			want: []string{"10.96.0.1:80/TCP -> 10.0.0.1:8080,10.0.0.2:8080"},
		},
		{
			rule:     "11: a node without a zone label: no filtering, even with a hint for zone \"\"",
			services: []*corev1.Service{svc("a", "10.96.0.1")},
			slices: []*discoveryv1.EndpointSlice{slice("a-1", "a", httpPort(8080),
				ready("10.0.0.1").inZones("z1"), ready("10.0.0.2").inZones(""))},
			want: []string{"10.96.0.1:80/TCP -> 10.0.0.1:8080,10.0.0.2:8080"},
		},
		{
			rule:     "11: node hints are checked first",
			services: []*corev1.Service{svc("a", "10.96.0.1")},
			slices: []*discoveryv1.EndpointSlice{slice("a-1", "a", httpPort(8080),
				ready("10.0.0.1").forNodes("node-1").inZones("z2"),
				ready("10.0.0.2").forNodes("node-2").inZones("z1"),
				ready("10.0.0.3").forNodes("node-2", "node-1").inZones("z2"),
			)},
			node: &NodeInfo{Name: "node-1", Zone: "z1"},
			want: []string{"10.96.0.1:80/TCP -> 10.0.0.1:8080,10.0.0.3:8080"},
		},
		{
			rule:     "11: node hints on only some ready endpoints: the zone hints decide",
			services: []*corev1.Service{svc("a", "10.96.0.1")},
			slices: []*discoveryv1.EndpointSlice{slice("a-1", "a", httpPort(8080),
				ready("10.0.0.1").forNodes("node-1").inZones("z2"),
				ready("10.0.0.2").inZones("z1"),
			)},
			node: &NodeInfo{Name: "node-1", Zone: "z1"},
			want: []string{"10.96.0.1:80/TCP -> 10.0.0.2:8080"},
		},
		{
			rule:     "11: node hints for other nodes only: the zone hints decide",
			services: []*corev1.Service{svc("a", "10.96.0.1")},
			slices: []*discoveryv1.EndpointSlice{slice("a-1", "a", httpPort(8080),
				ready("10.0.0.1").forNodes("node-2").inZones("z1"),
				ready("10.0.0.2").forNodes("node-3").inZones("z2"),
			)},
			node: &NodeInfo{Name: "node-1", Zone: "z1"},
			want: []string{"10.96.0.1:80/TCP -> 10.0.0.1:8080"},
		},
		{
			rule:     "9, 11: the terminating fallback ignores hints",
			services: []*corev1.Service{svc("a", "10.96.0.1")},
			slices: []*discoveryv1.EndpointSlice{slice("a-1", "a", httpPort(8080),
				term("10.0.0.1").inZones("z1").forNodes("node-1"),
				term("10.0.0.2").inZones("z2").forNodes("node-2"),
				term("10.0.0.3"),
			)},
			node: &NodeInfo{Name: "node-1", Zone: "z1"},
			want: []string{"10.96.0.1:80/TCP -> 10.0.0.1:8080,10.0.0.2:8080,10.0.0.3:8080"},
		},
		{
			rule:     "11, 12: internalTrafficPolicy Local ignores hints",
			services: []*corev1.Service{svc("a", "10.96.0.1", withITP(corev1.ServiceInternalTrafficPolicyLocal))},
			slices: []*discoveryv1.EndpointSlice{slice("a-1", "a", httpPort(8080),
				ready("10.0.0.1").on("node-1").inZones("z2"),
				ready("10.0.0.2").on("node-2").inZones("z1"),
				ready("10.0.0.3").on("node-1").inZones("z2").forNodes("node-2"),
			)},
			node: &NodeInfo{Name: "node-1", Zone: "z1"},
			want: []string{"10.96.0.1:80/TCP -> 10.0.0.1:8080(local),10.0.0.3:8080(local)"},
		},
		{
			rule:     "22: sessionAffinity ClientIP without a timeout: 10800 seconds",
			services: []*corev1.Service{svc("a", "10.96.0.1", withAffinity(nil))},
			slices:   []*discoveryv1.EndpointSlice{slice("a-1", "a", httpPort(8080), ready("10.0.0.1"))},
			want:     []string{"10.96.0.1:80/TCP -> 10.0.0.1:8080 affinity=10800"},
		},
		{
			rule: "22: an explicit timeout applies to every port of the Service",
			services: []*corev1.Service{svc("a", "10.96.0.1", withAffinity(ptr(int32(60))), withPorts(
				corev1.ServicePort{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP},
				corev1.ServicePort{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP},
			))},
			slices: []*discoveryv1.EndpointSlice{slice("a-1", "a", esPorts(
				esPort("http", 8080, corev1.ProtocolTCP), esPort("dns", 5353, corev1.ProtocolUDP)), ready("10.0.0.1"))},
			want: []string{"10.96.0.1:53/UDP -> 10.0.0.1:5353 affinity=60", "10.96.0.1:80/TCP -> 10.0.0.1:8080 affinity=60"},
		},
		{
			rule:     "22: the maximum timeout 86400 is accepted",
			services: []*corev1.Service{svc("a", "10.96.0.1", withAffinity(ptr(int32(86400))))},
			want:     []string{"10.96.0.1:80/TCP -> affinity=86400"},
		},
		{
			rule:     "22: a timeout above 86400 is reported and the default used",
			services: []*corev1.Service{svc("a", "10.96.0.1", withAffinity(ptr(int32(86401))))},
			want:     []string{"10.96.0.1:80/TCP -> affinity=10800"},
			problems: []string{"Service ns/a: sessionAffinityConfig.clientIP.timeoutSeconds 86401 out of range 1-86400, using 10800"},
		},
		{
			rule:     "22: a timeout of 0 is reported and the default used",
			services: []*corev1.Service{svc("a", "10.96.0.1", withAffinity(ptr(int32(0))))},
			want:     []string{"10.96.0.1:80/TCP -> affinity=10800"},
			problems: []string{"Service ns/a: sessionAffinityConfig.clientIP.timeoutSeconds 0 out of range"},
		},
		{
			rule: "22: sessionAffinity None ignores a configured timeout: no affinity",
			services: []*corev1.Service{svc("a", "10.96.0.1", withAffinity(ptr(int32(60))), func(s *corev1.Service) {
				s.Spec.SessionAffinity = corev1.ServiceAffinityNone
			})},
			want: []string{"10.96.0.1:80/TCP -> "},
		},
		{
			rule:     "12, 14, 22: a DROPping Local port keeps its affinity",
			services: []*corev1.Service{svc("a", "10.96.0.1", withAffinity(nil), withITP(corev1.ServiceInternalTrafficPolicyLocal))},
			slices:   []*discoveryv1.EndpointSlice{slice("a-1", "a", httpPort(8080), ready("10.0.0.1").on("node-2"))},
			want:     []string{"10.96.0.1:80/TCP -> drop affinity=10800"},
		},
		{
			rule: "5, 7: a multi-slice Service where one slice has a different port set",
			services: []*corev1.Service{svc("a", "10.96.0.1", withPorts(
				corev1.ServicePort{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP},
				corev1.ServicePort{Name: "metrics", Port: 9100, Protocol: corev1.ProtocolTCP},
			))},
			slices: []*discoveryv1.EndpointSlice{
				slice("a-1", "a", esPorts(esPort("http", 8080, corev1.ProtocolTCP), esPort("metrics", 9090, corev1.ProtocolTCP)),
					ready("10.0.0.1"), ready("10.0.0.2")),
				slice("a-2", "a", esPorts(esPort("http", 8081, corev1.ProtocolTCP)), ready("10.0.0.2"), ready("10.0.0.3")),
			},
			want: []string{
				"10.96.0.1:80/TCP -> 10.0.0.1:8080,10.0.0.2:8080,10.0.0.2:8081,10.0.0.3:8081",
				"10.96.0.1:9100/TCP -> 10.0.0.1:9090,10.0.0.2:9090",
			},
		},
		{
			rule:     "6, 9, 11: terminating-only endpoints with zone hints and an invalid IP among them",
			services: []*corev1.Service{svc("a", "10.96.0.1")},
			slices: []*discoveryv1.EndpointSlice{
				slice("a-1", "a", httpPort(8080), term("10.0.0.1").inZones("z1"), term("10.0.0.x").inZones("z1"), term("10.0.0.2").inZones("z2")),
				slice("a-2", "a", httpPort(8080), ready("10.0.0.3").inZones("z1").cond(f, f, nil)),
			},
			node:     &NodeInfo{Name: "node-1", Zone: "z1"},
			want:     []string{"10.96.0.1:80/TCP -> 10.0.0.1:8080,10.0.0.2:8080"},
			problems: []string{`EndpointSlice ns/a-1: endpoint address "10.0.0.x"`},
		},
		{
			rule:     "6, 11: an invalid IP next to hinted ready ones does not stop zone filtering",
			services: []*corev1.Service{svc("a", "10.96.0.1")},
			slices: []*discoveryv1.EndpointSlice{
				slice("a-1", "a", httpPort(8080), ready("10.0.0.1").inZones("z1"), ready("bad"), ready("10.0.0.2").inZones("z2")),
			},
			node:     &NodeInfo{Name: "node-1", Zone: "z1"},
			want:     []string{"10.96.0.1:80/TCP -> 10.0.0.1:8080"},
			problems: []string{`EndpointSlice ns/a-1: endpoint address "bad"`},
		},
	})
}

func runDesiredCases(t *testing.T, cases []desiredCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.rule, func(t *testing.T) {
			node := NodeInfo{Name: "node-1"}
			if c.node != nil {
				node = *c.node
			}
			state, problems := Desired(c.services, c.slices, node)
			if got := render(state); !slices.Equal(got, c.want) {
				t.Errorf("state\n got %q\nwant %q", got, c.want)
			}
			if len(problems) != len(c.problems) {
				t.Fatalf("problems %v, want %d matching %q", problems, len(c.problems), c.problems)
			}
			for i, p := range problems {
				if !strings.Contains(p.String(), c.problems[i]) {
					t.Errorf("problem %d = %q, want it to contain %q", i, p, c.problems[i])
				}
			}
		})
	}
}

// Same inputs in any order: same state and problems (a pure function).
func TestDesiredIsOrderIndependent(t *testing.T) {
	services := []*corev1.Service{svc("a", "10.96.0.1"), svc("b", "10.96.0.2"), svc("c", "10.96.0.300")}
	sl := []*discoveryv1.EndpointSlice{
		slice("a-1", "a", httpPort(8080), ready("10.0.0.1"), ready("10.0.0.2")),
		slice("a-2", "a", httpPort(8080), ready("10.0.0.3")),
		slice("b-1", "b", httpPort(9090), ready("10.0.0.4")),
	}
	s1, p1 := Desired(services, sl, NodeInfo{})
	slices.Reverse(services)
	slices.Reverse(sl)
	s2, p2 := Desired(services, sl, NodeInfo{})
	if !slices.Equal(render(s1), render(s2)) || !slices.EqualFunc(p1, p2, func(a, b Problem) bool { return a == b }) {
		t.Errorf("order changed the result:\n%v %v\n%v %v", render(s1), p1, render(s2), p2)
	}
}

func TestParseIPSloppy(t *testing.T) {
	for in, want := range map[string]string{
		"10.180.00.001":  "10.180.0.1",
		" 10.0.0.1 ":     "10.0.0.1",
		"10.0.0.0/8":     "10.0.0.0",
		" 10.1.2.3/24 ":  "10.1.2.3",
		"fd00::1":        "fd00::1",
		"::ffff:1.2.3.4": "1.2.3.4",
		"0010.0.0.1":     "10.0.0.1",
	} {
		got, ok := parseIPSloppy(in)
		if !ok || got != netip.MustParseAddr(want) {
			t.Errorf("parseIPSloppy(%q) = %v, %v; want %s", in, got, ok, want)
		}
	}
	for _, in := range []string{"", "1.2.3", "1.2.3.256", "a.b.c.d", "1..2.3", "example.com"} {
		if got, ok := parseIPSloppy(in); ok {
			t.Errorf("parseIPSloppy(%q) = %v, want failure", in, got)
		}
	}
}

// The store and tracker, fed the same objects as events, give what Desired
// gives, across replaced, added and removed objects and a node change.
func TestTrackerMatchesDesired(t *testing.T) {
	services := []*corev1.Service{svc("a", "10.96.0.1"), svc("b", "10.96.0.2"), svc("c", "10.96.0.3")}
	sl := []*discoveryv1.EndpointSlice{
		slice("a-1", "a", httpPort(8080), ready("10.0.0.1")),
		slice("b-1", "b", httpPort(8080), ready("10.0.0.2")),
		slice("c-1", "c", httpPort(8080), ready("10.0.0.3")),
	}
	node := NodeInfo{Name: "n"}
	store := NewStore(nil)
	tracker := NewTracker(node)
	for _, s := range services {
		store.UpsertService(s)
	}
	for _, es := range sl {
		store.UpsertSlice(es)
	}
	check := func(step string) {
		t.Helper()
		ch := store.Take(false)
		if ch.NodeChanged {
			tracker.SetNode(ch.Node)
		}
		tracker.Update(ch.Services)
		got, gotProblems := tracker.State(), append(tracker.Problems(), ch.Skipped...)
		sortProblems(gotProblems)
		want, wantProblems := Desired(services, sl, node)
		if !slices.Equal(render(got), render(want)) || !slices.Equal(gotProblems, wantProblems) {
			t.Errorf("%s: tracker %v %v, Desired %v %v", step, render(got), gotProblems, render(want), wantProblems)
		}
	}
	check("first")
	sl[1] = slice("b-1", "b", httpPort(8080), ready("10.0.0.9")) // slice replaced
	store.UpsertSlice(sl[1])
	check("slice replaced")
	services[2] = svc("c", "10.96.0.1") // now conflicts with a
	store.UpsertService(services[2])
	check("service replaced")
	sl = append(sl, slice("a-2", "a", httpPort(8080), ready("10.0.0.7")))
	store.UpsertSlice(sl[3])
	check("slice added")
	services = services[:2]
	store.DeleteService("ns", "c")
	check("service removed: its slice is reported")
	orphan := slice("x-1", "", httpPort(8080), ready("10.0.0.8"))
	orphan.Labels = nil
	sl = append(sl, orphan)
	store.UpsertSlice(orphan)
	check("slice without service label")
	sl = slices.DeleteFunc(sl, func(es *discoveryv1.EndpointSlice) bool { return es.Name == "c-1" || es.Name == "x-1" })
	store.DeleteSlice("ns", "c-1")
	store.DeleteSlice("ns", "x-1")
	check("slices deleted")
	local := slice("b-1", "b", httpPort(8080), ep{addrs: []string{"10.0.0.9"}, node: "m"}, ep{addrs: []string{"10.0.0.10"}, node: "n"})
	sl[1] = local
	store.UpsertSlice(local)
	services[1] = svc("b", "10.96.0.2", func(s *corev1.Service) {
		s.Spec.InternalTrafficPolicy = ptr(corev1.ServiceInternalTrafficPolicyLocal)
	})
	store.UpsertService(services[1])
	check("internal traffic policy Local")
	node = NodeInfo{Name: "m"}
	store.SetNode(node)
	check("node renamed: locality follows")
	for i, es := range sl {
		switch es.Name {
		case "a-1":
			sl[i] = slice("a-1", "a", httpPort(8080), ready("10.0.0.1").inZones("z1"), ready("10.0.0.4").inZones("z2"))
		case "a-2":
			sl[i] = slice("a-2", "a", httpPort(8080), ready("10.0.0.7").inZones("z2"))
		default:
			continue
		}
		store.UpsertSlice(sl[i])
	}
	check("zone hints, node without zone: not filtered")
	node = NodeInfo{Name: "m", Zone: "z1"}
	store.SetNode(node)
	check("zone label set: hints filter")
	node = NodeInfo{Name: "m", Zone: "z2"}
	store.SetNode(node)
	check("zone label changed: hints follow")
}

// Random sequences of upserts and deletes of a few Services and slices, and
// node changes: after every step, the store and tracker hold what Desired
// computes from the same objects, and the frontends Update and SetNode
// report include every frontend whose desired value changed.
func TestTrackerRandomMatchesDesired(t *testing.T) {
	for seed := uint64(1); seed <= 20; seed++ {
		t.Run(fmt.Sprint("seed ", seed), func(t *testing.T) { trackerRandomRun(t, seed, 200) })
	}
}

func trackerRandomRun(t *testing.T, seed uint64, steps int) {
	rng := rand.New(rand.NewPCG(seed, 42))
	pick := func(n int) int { return rng.IntN(n) }
	chance := func(p float64) bool { return rng.Float64() < p }
	oneOf := func(vs ...string) string { return vs[pick(len(vs))] }
	cond := func() *bool {
		switch pick(3) {
		case 0:
			return nil
		case 1:
			return ptr(false)
		}
		return ptr(true)
	}
	nodes := []NodeInfo{{Name: "node-1", Zone: "z1"}, {Name: "node-1", Zone: "z2"}, {Name: "node-1"}, {Name: "node-2", Zone: "z1"}, {},
		{Name: "node-1", InternalIPs: "192.168.1.10", NodePortAddrs: "192.168.1.10"},
		{Name: "node-1", InternalIPs: "192.168.1.10", NodePortAddrs: "192.168.1.10,203.0.113.1"},
		{Name: "node-2", Zone: "z1", InternalIPs: "10.1.0.1", NodePortAddrs: "192.168.1.10"}}

	randomService := func(name string) *corev1.Service {
		var opts []svcOpt
		ip := oneOf("10.96.0.1", "10.96.0.2", "10.96.0.3", "10.96.0.1", "10.96.0.2", "10.96.0.3", "10.096.0.2")
		if chance(0.2) {
			ip = oneOf("None", "", "fd00::1", "10.96.0.300")
		}
		switch pick(4) {
		case 0:
			opts = append(opts, withClusterIPs("fd00::1", ip))
		case 1:
			opts = append(opts, withClusterIPs(ip, "fd00::1"))
		}
		all := []corev1.ServicePort{
			{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP},
			{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP},
			{Name: "metrics", Port: 9100, Protocol: corev1.ProtocolTCP},
			{Name: "http", Port: 80, Protocol: corev1.ProtocolUDP},
			{Name: "big", Port: 70000, Protocol: corev1.ProtocolTCP},
		}
		var ports []corev1.ServicePort
		for i, p := range all {
			if chance(0.4) || (i == 0 && chance(0.5)) {
				ports = append(ports, p)
			}
		}
		opts = append(opts, withPorts(ports...))
		if chance(0.4) {
			opts = append(opts, withITP(corev1.ServiceInternalTrafficPolicyLocal))
		}
		switch pick(5) {
		case 0:
			opts = append(opts, withAffinity(nil))
		case 1:
			opts = append(opts, withAffinity(ptr(int32(60))))
		case 2:
			opts = append(opts, withAffinity(ptr(int32(0))))
		}
		// North-south: nodePorts, externalIPs and LB IPs from small
		// pools that overlap each other, cluster IPs and node addresses,
		// so that frontends and health ports are contested.
		switch pick(3) {
		case 1:
			opts = append(opts, withType(corev1.ServiceTypeNodePort))
		case 2:
			opts = append(opts, withType(corev1.ServiceTypeLoadBalancer))
		}
		opts = append(opts, func(s *corev1.Service) {
			for i := range s.Spec.Ports {
				if chance(0.6) {
					s.Spec.Ports[i].NodePort = []int32{30080, 30081, 80, 70000}[pick(4)]
				}
			}
		})
		var ext []string
		for range pick(3) {
			ext = append(ext, oneOf("203.0.113.1", "198.51.100.1", "10.96.0.2", "192.168.1.10", "bad", "fd00::2"))
		}
		opts = append(opts, withExternalIPs(ext...))
		var ing []corev1.LoadBalancerIngress
		for range pick(3) {
			switch pick(5) {
			case 0:
				ing = append(ing, corev1.LoadBalancerIngress{Hostname: "lb.example.com"})
			case 1:
				ing = append(ing, lbIPMode(oneOf("198.51.100.1", "198.51.100.2"), corev1.LoadBalancerIPModeProxy))
			default:
				ing = append(ing, lbIP(oneOf("198.51.100.1", "198.51.100.2", "203.0.113.1", "10.96.0.1")))
			}
		}
		opts = append(opts, withIngress(ing...))
		if chance(0.3) {
			opts = append(opts, withSourceRanges(oneOf("10.0.0.0/8", "192.168.1.0/24", "1.2.3.4", "0.0.0.0/0")))
		}
		if chance(0.5) {
			opts = append(opts, withETP(corev1.ServiceExternalTrafficPolicyLocal))
		}
		if chance(0.7) {
			opts = append(opts, withHealthPort([]int32{32000, 32000, 32001, 30080, 0, 70000}[pick(6)]))
		}
		switch pick(12) {
		case 0:
			opts = append(opts, withLabels(LabelServiceProxyName, "other"))
		case 1:
			opts = append(opts, withLabels(LabelHeadless, ""))
		case 2:
			opts = append(opts, func(s *corev1.Service) { s.Spec.Type = corev1.ServiceTypeExternalName })
		}
		return svc(name, ip, opts...)
	}
	randomSlice := func(ns, name string) *discoveryv1.EndpointSlice {
		all := []discoveryv1.EndpointPort{
			esPort("http", 8080, corev1.ProtocolTCP),
			esPort("http", 8081, ""),
			esPort("dns", 5353, corev1.ProtocolUDP),
			esPort("metrics", 9090, corev1.ProtocolTCP),
			esPort("http", 0, corev1.ProtocolTCP),
			{Port: ptr(int32(8082))},
			esPort("http", 8083, corev1.ProtocolUDP),
		}
		var ports []discoveryv1.EndpointPort
		for i, p := range all {
			if chance(0.35) || (i == 0 && chance(0.5)) {
				ports = append(ports, p)
			}
		}
		// Hints as the EndpointSlice controller sets them (on every
		// endpoint of a slice, or on none), or at random.
		hints := pick(4)
		var eps []ep
		for range pick(5) {
			e := ep{
				addrs: []string{oneOf("10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.00.1", "bad", "fd00::5")},
				ready: cond(), serving: cond(), terminating: cond(),
				node: oneOf("", "node-1", "node-2"),
			}
			if chance(0.1) {
				e.addrs = nil
			}
			if hints == 1 || hints == 2 || (hints == 3 && chance(0.5)) {
				e.zones = []string{oneOf("z1", "z2")}
			}
			if hints == 2 || (hints == 3 && chance(0.3)) {
				e.nodes = []string{oneOf("node-1", "node-2")}
			}
			eps = append(eps, e)
		}
		es := slice(name, oneOf("a", "a", "b", "b", "c", "d", ""), ports, eps...)
		es.Namespace = ns
		if es.Labels[discoveryv1.LabelServiceName] == "" {
			delete(es.Labels, discoveryv1.LabelServiceName)
		}
		switch pick(20) {
		case 0:
			es.AddressType = discoveryv1.AddressTypeIPv6
		case 1:
			es.AddressType = discoveryv1.AddressTypeFQDN
		case 2:
			es.Labels[LabelServiceProxyName] = "other"
		}
		return es
	}

	services := map[string]*corev1.Service{}
	endpointSlices := map[string]*discoveryv1.EndpointSlice{} // namespace/name
	node := nodes[0]
	store := NewStore(nil)
	tracker := NewTracker(node)
	lines := map[Frontend]string{}
	lineOf := func(s *State) map[Frontend]string {
		out := map[Frontend]string{}
		for fe, sp := range s.Ports {
			out[fe] = render(&State{Ports: map[Frontend]*ServicePort{fe: sp}})[0]
		}
		return out
	}
	var history []string
	for step := range steps {
		var what string
		switch r := pick(100); {
		case r < 25:
			name := oneOf("a", "b", "c")
			s := randomService(name)
			services[name] = s
			store.UpsertService(s)
			what = fmt.Sprintf("upsert Service %s clusterIPs %q %q labels %v type %q ports %v itp %v affinity %q externalIPs %q ingress %v ranges %q etp %q health %d",
				name, s.Spec.ClusterIP, s.Spec.ClusterIPs, s.Labels, s.Spec.Type, s.Spec.Ports, s.Spec.InternalTrafficPolicy != nil, s.Spec.SessionAffinity,
				s.Spec.ExternalIPs, s.Status.LoadBalancer.Ingress, s.Spec.LoadBalancerSourceRanges, s.Spec.ExternalTrafficPolicy, s.Spec.HealthCheckNodePort)
		case r < 35:
			name := oneOf("a", "b", "c")
			delete(services, name)
			store.DeleteService("ns", name)
			what = "delete Service " + name
		case r < 75:
			ns, name := "ns", oneOf("a-1", "a-2", "b-1", "x-1")
			if chance(0.1) {
				ns = "other"
			}
			es := randomSlice(ns, name)
			endpointSlices[ns+"/"+name] = es
			store.UpsertSlice(es)
			what = fmt.Sprintf("upsert EndpointSlice %s/%s labels %v type %s", ns, name, es.Labels, es.AddressType)
		case r < 85:
			ns, name := "ns", oneOf("a-1", "a-2", "b-1", "x-1")
			if chance(0.1) {
				ns = "other"
			}
			delete(endpointSlices, ns+"/"+name)
			store.DeleteSlice(ns, name)
			what = "delete EndpointSlice " + ns + "/" + name
		default:
			node = nodes[pick(len(nodes))]
			store.SetNode(node)
			what = fmt.Sprintf("node %+v", node)
		}
		history = append(history, what)

		full := chance(0.1)
		ch := store.Take(full)
		var touched []Frontend
		if ch.NodeChanged {
			touched = append(touched, tracker.SetNode(ch.Node)...)
		}
		touched = append(touched, tracker.Update(ch.Services)...)
		got, gotProblems := tracker.State(), append(tracker.Problems(), ch.Skipped...)
		sortProblems(gotProblems)
		want, wantProblems := Desired(slices.Collect(maps.Values(services)), slices.Collect(maps.Values(endpointSlices)), node)
		fail := func(format string, args ...any) {
			t.Helper()
			start := max(0, len(history)-5)
			t.Fatalf("step %d (full take %v), after\n  %s\n"+format, append([]any{step, full, strings.Join(history[start:], "\n  ")}, args...)...)
		}
		if !slices.Equal(render(got), render(want)) {
			fail("state\n tracker %q\n Desired %q", render(got), render(want))
		}
		if !slices.Equal(gotProblems, wantProblems) {
			fail("problems\n tracker %v\n Desired %v", gotProblems, wantProblems)
		}
		now := lineOf(got)
		for fe := range mapsUnion(lines, now) {
			if lines[fe] != now[fe] && !slices.Contains(touched, fe) {
				fail("frontend %s changed (%q -> %q) but Update did not report it", fe, lines[fe], now[fe])
			}
		}
		lines = now
	}
}

func mapsUnion[K comparable, V any](a, b map[K]V) map[K]bool {
	out := map[K]bool{}
	for k := range a {
		out[k] = true
	}
	for k := range b {
		out[k] = true
	}
	return out
}
