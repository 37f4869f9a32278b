package control

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// describe renders an endpoint as "IP:port" and the flags that are set:
// "10.0.0.1:8080 ready serving terminating local zones=z1 nodes=n1".
func describe(e endpoint) string {
	s := e.backend.String()
	for _, f := range []struct {
		set  bool
		name string
	}{{e.ready, "ready"}, {e.serving, "serving"}, {e.terminating, "terminating"}, {e.local, "local"}} {
		if f.set {
			s += " " + f.name
		}
	}
	if e.zones != nil {
		var z []string
		for _, h := range e.zones {
			z = append(z, h.Name)
		}
		s += " zones=" + strings.Join(z, ",")
	}
	if e.nodes != nil {
		var n []string
		for _, h := range e.nodes {
			n = append(n, h.Name)
		}
		s += " nodes=" + strings.Join(n, ",")
	}
	return s
}

var httpTCP = ServicePortName{Namespace: "ns", Name: "a", Port: "http", Proto: TCP}

// Rules 5-8 for one service port: conditions, locality, hints,
// deduplication, skipped addresses.
func TestEndpointsOf(t *testing.T) {
	f, tr := ptr(false), ptr(true)
	node := NodeInfo{Name: "node-1", Zone: "z1"}
	cases := []struct {
		rule     string
		slices   []*discoveryv1.EndpointSlice // in name order, as Desired passes them
		node     *NodeInfo                    // nil: node
		want     []string
		problems []string
	}{
		{
			rule: "8: nil conditions: ready, serving, not terminating",
			slices: []*discoveryv1.EndpointSlice{slice("a-1", "a", httpPort(8080),
				ready("10.0.0.1"),
				ready("10.0.0.2").cond(f, f, tr),
				ready("10.0.0.3").cond(tr, tr, f),
				ready("10.0.0.4").cond(f, nil, tr),
			)},
			want: []string{
				"10.0.0.1:8080 ready serving",
				"10.0.0.2:8080 terminating",
				"10.0.0.3:8080 ready serving",
				"10.0.0.4:8080 serving terminating",
			},
		},
		{
			rule: "8: local iff nodeName is this node's name",
			slices: []*discoveryv1.EndpointSlice{slice("a-1", "a", httpPort(8080),
				ready("10.0.0.1").on("node-1"), ready("10.0.0.2").on("node-2"), ready("10.0.0.3"), ready("10.0.0.4").on("Node-1"))},
			want: []string{"10.0.0.1:8080 ready serving local", "10.0.0.2:8080 ready serving", "10.0.0.3:8080 ready serving", "10.0.0.4:8080 ready serving"},
		},
		{
			rule: "8: on a node without a name nothing is local, not even an empty nodeName",
			slices: []*discoveryv1.EndpointSlice{func() *discoveryv1.EndpointSlice {
				s := slice("a-1", "a", httpPort(8080), ready("10.0.0.1"))
				s.Endpoints[0].NodeName = ptr("")
				return s
			}()},
			node: &NodeInfo{},
			want: []string{"10.0.0.1:8080 ready serving"},
		},
		{
			rule:   "11: hints are kept as given",
			slices: []*discoveryv1.EndpointSlice{slice("a-1", "a", httpPort(8080), ready("10.0.0.1").inZones("z1", "z2").forNodes("node-2"))},
			want:   []string{"10.0.0.1:8080 ready serving zones=z1,z2 nodes=node-2"},
		},
		{
			rule: "7: the non-terminating copy wins, terminating copy first",
			slices: []*discoveryv1.EndpointSlice{
				slice("a-1", "a", httpPort(8080), term("10.0.0.1").on("node-1")),
				slice("a-2", "a", httpPort(8080), ready("10.0.0.1").cond(f, f, nil).on("node-2")),
			},
			want: []string{"10.0.0.1:8080"},
		},
		{
			rule: "7: the non-terminating copy wins, terminating copy second",
			slices: []*discoveryv1.EndpointSlice{
				slice("a-1", "a", httpPort(8080), ready("10.0.0.1").on("node-2")),
				slice("a-2", "a", httpPort(8080), term("10.0.0.1").on("node-1")),
			},
			want: []string{"10.0.0.1:8080 ready serving"},
		},
		{
			rule: "7: neither copy terminating: the first slice's wins",
			slices: []*discoveryv1.EndpointSlice{
				slice("a-1", "a", httpPort(8080), ready("10.0.0.1").on("node-1")),
				slice("a-2", "a", httpPort(8080), ready("10.0.0.1").on("node-2")),
			},
			want: []string{"10.0.0.1:8080 ready serving local"},
		},
		{
			rule: "7: both copies terminating: the first slice's wins",
			slices: []*discoveryv1.EndpointSlice{
				slice("a-1", "a", httpPort(8080), term("10.0.0.1").on("node-2")),
				slice("a-2", "a", httpPort(8080), term("10.0.0.1").on("node-1")),
			},
			want: []string{"10.0.0.1:8080 serving terminating"},
		},
		{
			rule: "7: a duplicate within one slice, and spellings of one IP, are one endpoint",
			slices: []*discoveryv1.EndpointSlice{slice("a-1", "a", httpPort(8080),
				term("10.0.0.1"), ready("010.0.0.1"), ready("10.0.0.01"))},
			want: []string{"10.0.0.1:8080 ready serving"},
		},
		{
			rule: "7: the same IP with another port is another endpoint",
			slices: []*discoveryv1.EndpointSlice{
				slice("a-1", "a", httpPort(8080), ready("10.0.0.1")),
				slice("a-2", "a", httpPort(8081), ready("10.0.0.1")),
			},
			want: []string{"10.0.0.1:8080 ready serving", "10.0.0.1:8081 ready serving"},
		},
		{
			rule: "6: no addresses skipped; addresses[1:] ignored; unparsable and IPv6 reported with the slice's name",
			slices: []*discoveryv1.EndpointSlice{slice("a-1", "a", httpPort(8080),
				addrs(), addrs("10.0.0.2", "10.0.0.1"), addrs("nope", "10.0.0.3"), addrs("fd00::1"), addrs(" 10.0.0.4/24 "))},
			want: []string{"10.0.0.2:8080 ready serving", "10.0.0.4:8080 ready serving"},
			problems: []string{
				`EndpointSlice ns/a-1: endpoint address "nope" is not an IPv4 address`,
				`EndpointSlice ns/a-1: endpoint address "fd00::1" is not an IPv4 address`,
			},
		},
		{
			rule: "5: a slice without a port for this service port contributes nothing, not even problems",
			slices: []*discoveryv1.EndpointSlice{
				slice("a-1", "a", esPorts(esPort("other", 8080, corev1.ProtocolTCP)), ready("10.0.0.1"), ready("nope")),
				slice("a-2", "a", esPorts(esPort("http", 8080, corev1.ProtocolUDP)), ready("10.0.0.2")),
				slice("a-3", "a", httpPort(8080), ready("10.0.0.3")),
			},
			want: []string{"10.0.0.3:8080 ready serving"},
		},
	}
	for _, c := range cases {
		t.Run(c.rule, func(t *testing.T) {
			n := node
			if c.node != nil {
				n = *c.node
			}
			eps, problems := endpointsOf(c.slices, httpTCP, n)
			var got []string
			for _, e := range eps {
				got = append(got, describe(e))
			}
			if !slices.Equal(got, c.want) {
				t.Errorf("endpoints\n got %q\nwant %q", got, c.want)
			}
			var gotProblems []string
			for _, p := range problems {
				gotProblems = append(gotProblems, p.String())
				if p.Kind != SkipInvalidIP {
					t.Errorf("problem %q has kind %q, want %q", p, p.Kind, SkipInvalidIP)
				}
			}
			if !slices.Equal(gotProblems, c.problems) {
				t.Errorf("problems\n got %q\nwant %q", gotProblems, c.problems)
			}
		})
	}
}

// Rules 5 and 6: which slice port applies to a service port.
func TestEndpointsSlicePort(t *testing.T) {
	udpDNS := ServicePortName{Namespace: "ns", Name: "a", Port: "dns", Proto: UDP}
	unnamed := ServicePortName{Namespace: "ns", Name: "a", Proto: TCP}
	cases := []struct {
		rule  string
		name  ServicePortName
		ports []discoveryv1.EndpointPort
		want  int // 0: none applies
	}{
		{"5: same name and protocol", httpTCP, esPorts(esPort("http", 8080, corev1.ProtocolTCP)), 8080},
		{"5: nil protocol is TCP", httpTCP, esPorts(esPort("http", 8080, "")), 8080},
		{"5: another protocol does not apply", httpTCP, esPorts(esPort("http", 8080, corev1.ProtocolUDP)), 0},
		{"5: another name does not apply", httpTCP, esPorts(esPort("https", 8443, corev1.ProtocolTCP)), 0},
		{"5: the name is case-sensitive", httpTCP, esPorts(esPort("HTTP", 8080, corev1.ProtocolTCP)), 0},
		{"5: found among others, whatever the order", udpDNS, esPorts(
			esPort("http", 8080, corev1.ProtocolTCP), esPort("dns", 5354, corev1.ProtocolTCP), esPort("dns", 5353, corev1.ProtocolUDP)), 5353},
		{"5: the first matching entry wins", httpTCP, esPorts(esPort("http", 8080, ""), esPort("http", 8081, corev1.ProtocolTCP)), 8080},
		{"5: an unnamed service port takes the port named \"\"", unnamed, esPorts(esPort("", 8080, corev1.ProtocolTCP)), 8080},
		{"6: a nil name applies to no port, not even the unnamed one", unnamed, []discoveryv1.EndpointPort{{Port: ptr(int32(8080))}}, 0},
		{"6: a nil port is ignored", httpTCP, []discoveryv1.EndpointPort{{Name: ptr("http")}}, 0},
		{"6: port 0 is ignored and the next entry used", httpTCP, esPorts(esPort("http", 0, ""), esPort("http", 8081, "")), 8081},
		{"6: negative and too large ports are ignored", httpTCP, esPorts(esPort("http", -1, ""), esPort("http", 65536, "")), 0},
		{"6: 65535 is a port", httpTCP, esPorts(esPort("http", 65535, "")), 65535},
		{"5: an unknown protocol applies to nothing", httpTCP, esPorts(esPort("http", 8080, "FOO")), 0},
	}
	for _, c := range cases {
		t.Run(c.rule, func(t *testing.T) {
			es := slice("a-1", "a", c.ports)
			port, ok := slicePort(es, c.name)
			if ok != (c.want != 0) || int(port) != c.want {
				t.Errorf("slicePort = %d, %v; want %d", port, ok, c.want)
			}
		})
	}
}

// hinted builds endpoints for the set functions: "ip[:flags]" with flags
// r (ready), s (serving), t (terminating), l (local), zN (zone hint zN),
// nN (node hint node-N), separated by commas.
func hinted(specs ...string) []endpoint {
	var out []endpoint
	for i, spec := range specs {
		ip, flags, _ := strings.Cut(spec, ":")
		e := endpoint{backend: Backend{Addr: netip.MustParseAddr(ip), Port: uint16(8000 + i)}}
		for _, fl := range strings.Split(flags, ",") {
			switch {
			case fl == "":
			case fl == "r":
				e.ready, e.serving = true, true
			case fl == "s":
				e.serving = true
			case fl == "t":
				e.terminating = true
			case fl == "l":
				e.local = true
			case strings.HasPrefix(fl, "z"):
				e.zones = append(e.zones, discoveryv1.ForZone{Name: fl})
			case strings.HasPrefix(fl, "n"):
				e.nodes = append(e.nodes, discoveryv1.ForNode{Name: "node-" + fl[1:]})
			default:
				panic("bad flag " + fl)
			}
		}
		out = append(out, e)
	}
	return out
}

func backendIPs(bs []Backend) string {
	var out []string
	for _, b := range bs {
		out = append(out, b.Addr.String())
	}
	return strings.Join(out, " ")
}

// Rule 11: the hint filter of the Cluster set.
func TestEndpointsTopology(t *testing.T) {
	zoned := NodeInfo{Name: "node-1", Zone: "z1"}
	cases := []struct {
		rule string
		eps  []endpoint
		node NodeInfo
		want topology
	}{
		{"11: no endpoints", nil, zoned, topologyNone},
		{"11: no hints", hinted("10.0.0.1:r", "10.0.0.2:r"), zoned, topologyNone},
		{"11: all zone-hinted, one for this zone", hinted("10.0.0.1:r,z1", "10.0.0.2:r,z2"), zoned, topologySameZone},
		{"11: one ready endpoint without a hint", hinted("10.0.0.1:r,z1", "10.0.0.2:r"), zoned, topologyNone},
		{"11: all hinted, none for this zone", hinted("10.0.0.1:r,z2", "10.0.0.2:r,z3"), zoned, topologyNone},
		{"11: unhinted not-ready endpoints do not count", hinted("10.0.0.1:r,z1", "10.0.0.2:s,t", "10.0.0.3:"), zoned, topologySameZone},
		{"11: a hint for this zone on a not-ready endpoint does not count", hinted("10.0.0.1:r,z2", "10.0.0.2:s,t,z1"), zoned, topologyNone},
		{"11: only terminating endpoints: no filter", hinted("10.0.0.1:s,t,z1", "10.0.0.2:s,t,z1"), zoned, topologyNone},
		{"11: node without a zone label", hinted("10.0.0.1:r,z1"), NodeInfo{Name: "node-1"}, topologyNone},
		{"11: node without a zone label, hint for zone \"\"", []endpoint{{ready: true, zones: []discoveryv1.ForZone{{Name: ""}}}}, NodeInfo{Name: "node-1"}, topologyNone},
		{"11: node hints first", hinted("10.0.0.1:r,n1,z2", "10.0.0.2:r,n2,z1"), zoned, topologySameNode},
		{"11: node hints on some endpoints only: zone hints", hinted("10.0.0.1:r,n1,z1", "10.0.0.2:r,z2"), zoned, topologySameZone},
		{"11: node hints for other nodes only: zone hints", hinted("10.0.0.1:r,n2,z1", "10.0.0.2:r,n3,z2"), zoned, topologySameZone},
		{"11: node hints for other nodes only, no zone hints", hinted("10.0.0.1:r,n2", "10.0.0.2:r,n3"), zoned, topologyNone},
		{"11: node hints, node without a name", hinted("10.0.0.1:r,n1", "10.0.0.2:r,n2"), NodeInfo{Zone: "z1"}, topologyNone},
	}
	for _, c := range cases {
		t.Run(c.rule, func(t *testing.T) {
			if got := topologyOf(c.eps, c.node); got != c.want {
				t.Errorf("topologyOf = %d, want %d", got, c.want)
			}
		})
	}
}

// Rules 9-11: the Cluster and Local sets.
func TestEndpointsSets(t *testing.T) {
	zoned := NodeInfo{Name: "node-1", Zone: "z1"}
	cases := []struct {
		rule           string
		eps            []endpoint
		cluster, local string
	}{
		{"9, 10: ready endpoints", hinted("10.0.0.1:r", "10.0.0.2:r,l"), "10.0.0.1 10.0.0.2", "10.0.0.2"},
		{"9, 10: ready first, terminating left out", hinted("10.0.0.1:r", "10.0.0.2:s,t,l", "10.0.0.3:r,l"), "10.0.0.1 10.0.0.3", "10.0.0.3"},
		{"9: no ready: serving-and-terminating cluster-wide", hinted("10.0.0.1:s,t", "10.0.0.2:s,t,l", "10.0.0.3:t", "10.0.0.4:s"), "10.0.0.1 10.0.0.2", "10.0.0.2"},
		{"10: no local ready: local serving-and-terminating, though remote ready exist", hinted("10.0.0.1:r", "10.0.0.2:s,t,l", "10.0.0.3:t,l"), "10.0.0.1", "10.0.0.2"},
		{"9, 10: non-serving never", hinted("10.0.0.1:t,l", "10.0.0.2:l", "10.0.0.3:s,l"), "", ""},
		{"11: zone filter on the Cluster set only", hinted("10.0.0.1:r,z1", "10.0.0.2:r,z2,l"), "10.0.0.1", "10.0.0.2"},
		{"11: node filter on the Cluster set only", hinted("10.0.0.1:r,n1,z2", "10.0.0.2:r,n2,z1,l"), "10.0.0.1", "10.0.0.2"},
		{"9, 11: the terminating fallback ignores hints", hinted("10.0.0.1:s,t,z1,n1", "10.0.0.2:s,t,z2,n2"), "10.0.0.1 10.0.0.2", ""},
		{"11: hints on terminating endpoints do not filter the ready ones", hinted("10.0.0.1:r", "10.0.0.2:r", "10.0.0.3:s,t,z1"), "10.0.0.1 10.0.0.2", ""},
	}
	for _, c := range cases {
		t.Run(c.rule, func(t *testing.T) {
			if got := backendIPs(clusterSet(c.eps, zoned)); got != c.cluster {
				t.Errorf("clusterSet = %q, want %q", got, c.cluster)
			}
			if got := backendIPs(localSet(c.eps)); got != c.local {
				t.Errorf("localSet = %q, want %q", got, c.local)
			}
		})
	}
}

// Rules 9 and 11 on every combination of conditions and hints for three
// endpoints: the Cluster set is never empty while a ready endpoint exists,
// only contains usable endpoints, and with a topology filter only ones
// hinted for this node or zone.
func TestEndpointsClusterSetInvariants(t *testing.T) {
	node := NodeInfo{Name: "node-1", Zone: "z1"}
	flagSets := []string{"", "r", "s,t", "t", "r,z1", "r,z2", "s,t,z1", "r,n1", "r,n2,z1", "r,n1,z2", "r,l"}
	for _, a := range flagSets {
		for _, b := range flagSets {
			for _, c := range flagSets {
				eps := hinted("10.0.0.1:"+a, "10.0.0.2:"+b, "10.0.0.3:"+c)
				got := clusterSet(eps, node)
				name := fmt.Sprintf("[%s] [%s] [%s]", a, b, c)
				anyReady := slices.ContainsFunc(eps, func(e endpoint) bool { return e.ready })
				anyUsable := slices.ContainsFunc(eps, func(e endpoint) bool { return e.usable() })
				if anyUsable != (len(got) > 0) {
					t.Errorf("%s: cluster set %v, with usable endpoints %v", name, got, anyUsable)
				}
				topo := topologyOf(eps, node)
				for _, bk := range got {
					e := eps[slices.IndexFunc(eps, func(e endpoint) bool { return e.backend == bk })]
					switch {
					case anyReady && !e.ready:
						t.Errorf("%s: %s not ready in the set while ready endpoints exist", name, bk)
					case !anyReady && !(e.serving && e.terminating):
						t.Errorf("%s: %s not serving-and-terminating in the fallback", name, bk)
					case topo == topologySameNode && !hasNodeHint(e.nodes, node.Name):
						t.Errorf("%s: %s not hinted for this node", name, bk)
					case topo == topologySameZone && !hasZoneHint(e.zones, node.Zone):
						t.Errorf("%s: %s not hinted for this zone", name, bk)
					}
				}
			}
		}
	}
}
