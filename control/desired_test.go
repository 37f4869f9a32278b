package control

import (
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
		es.Endpoints = append(es.Endpoints, d)
	}
	return es
}

func httpPort(port int32) []discoveryv1.EndpointPort {
	return []discoveryv1.EndpointPort{{Name: ptr("http"), Port: ptr(port), Protocol: ptr(corev1.ProtocolTCP)}}
}

func ready(addr string) ep { return ep{addrs: []string{addr}} }

// render turns a state into "frontend -> backends" lines, sorted.
func render(s *State) []string {
	var out []string
	for fe, sp := range s.Ports {
		var bs []string
		for _, b := range sp.Backends {
			bs = append(bs, b.String())
		}
		out = append(out, fe.String()+" -> "+strings.Join(bs, ","))
	}
	slices.Sort(out)
	return out
}

func TestDesired(t *testing.T) {
	f, tr := ptr(false), ptr(true)
	cases := []struct {
		rule     string
		services []*corev1.Service
		slices   []*discoveryv1.EndpointSlice
		want     []string
		problems []string // substrings, in order
	}{
		{
			rule:     "1: a service-proxy-name label hides the Service",
			services: []*corev1.Service{svc("a", "10.96.0.1", withLabels(LabelServiceProxyName, "other"))},
			slices:   []*discoveryv1.EndpointSlice{slice("a-1", "a", httpPort(8080), ready("10.0.0.1"))},
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
			problems: []string{"Service ns/b: port \"http\": 10.96.0.1:80/TCP already served by ns/a:http/TCP"},
		},
	}
	for _, c := range cases {
		t.Run(c.rule, func(t *testing.T) {
			state, problems := Desired(c.services, c.slices, NodeInfo{Name: "node-1"})
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
}
