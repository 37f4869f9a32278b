package control

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

func withType(t corev1.ServiceType) svcOpt {
	return func(s *corev1.Service) { s.Spec.Type = t }
}

// withNodePorts sets the nodePort of each port in order.
func withNodePorts(nps ...int32) svcOpt {
	return func(s *corev1.Service) {
		for i, np := range nps {
			s.Spec.Ports[i].NodePort = np
		}
	}
}

func withETP(p corev1.ServiceExternalTrafficPolicy) svcOpt {
	return func(s *corev1.Service) { s.Spec.ExternalTrafficPolicy = p }
}

func withExternalIPs(ips ...string) svcOpt {
	return func(s *corev1.Service) { s.Spec.ExternalIPs = ips }
}

func withIngress(ing ...corev1.LoadBalancerIngress) svcOpt {
	return func(s *corev1.Service) { s.Status.LoadBalancer.Ingress = ing }
}

func withSourceRanges(r ...string) svcOpt {
	return func(s *corev1.Service) { s.Spec.LoadBalancerSourceRanges = r }
}

func withHealthPort(p int32) svcOpt {
	return func(s *corev1.Service) { s.Spec.HealthCheckNodePort = p }
}

func lbIP(ip string) corev1.LoadBalancerIngress { return corev1.LoadBalancerIngress{IP: ip} }

func lbIPMode(ip string, m corev1.LoadBalancerIPMode) corev1.LoadBalancerIngress {
	return corev1.LoadBalancerIngress{IP: ip, IPMode: &m}
}

// lbLocal is a LoadBalancer Service with externalTrafficPolicy Local and
// a healthCheckNodePort.
func lbLocal(name, clusterIP string, health int32, opts ...svcOpt) *corev1.Service {
	return svc(name, clusterIP, append([]svcOpt{withType(corev1.ServiceTypeLoadBalancer),
		withETP(corev1.ServiceExternalTrafficPolicyLocal), withHealthPort(health)}, opts...)...)
}

// A node with two NodePort addresses, the first its InternalIP.
var npNode = &NodeInfo{Name: "node-1", InternalIPs: "192.168.1.10", NodePortAddrs: "192.168.1.10,192.168.2.10"}

func TestDesiredExternal(t *testing.T) {
	local, remote := ready("10.0.0.1").on("node-1"), ready("10.0.0.2").on("node-2")
	both := []*discoveryv1.EndpointSlice{slice("a-1", "a", httpPort(8080), local, remote)}
	runDesiredCases(t, []desiredCase{
		{
			rule: "8, 12, 18, 26: a NodePort on every node address; the Cluster set SNATed when remote; internalTrafficPolicy decides the ClusterIP only",
			services: []*corev1.Service{svc("a", "10.96.0.1", withType(corev1.ServiceTypeNodePort), withNodePorts(30080),
				withITP(corev1.ServiceInternalTrafficPolicyLocal))},
			slices: both,
			node:   npNode,
			want: []string{
				"10.96.0.1:80/TCP -> 10.0.0.1:8080(local)",
				"192.168.1.10:30080/TCP -> 10.0.0.1:8080(local),10.0.0.2:8080 kind=NodePort snat",
				"192.168.2.10:30080/TCP -> 10.0.0.1:8080(local),10.0.0.2:8080 kind=NodePort snat",
			},
		},
		{
			rule:     "18: node addresses that are not IPv4 are ignored",
			services: []*corev1.Service{svc("a", "10.96.0.1", withType(corev1.ServiceTypeNodePort), withNodePorts(30080))},
			node:     &NodeInfo{Name: "node-1", NodePortAddrs: "fd00::1,192.168.1.10,bogus,"},
			want:     []string{"10.96.0.1:80/TCP -> ", "192.168.1.10:30080/TCP -> kind=NodePort snat"},
		},
		{
			rule:     "18: without node addresses there are no NodePort frontends",
			services: []*corev1.Service{svc("a", "10.96.0.1", withType(corev1.ServiceTypeNodePort), withNodePorts(30080))},
			want:     []string{"10.96.0.1:80/TCP -> "},
		},
		{
			rule: "18: a nodePort out of range is reported, the other ports served; nodePort 0 gets none",
			services: []*corev1.Service{svc("a", "10.96.0.1", withType(corev1.ServiceTypeLoadBalancer), withPorts(
				corev1.ServicePort{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP, NodePort: 70000},
				corev1.ServicePort{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP, NodePort: 30053},
				corev1.ServicePort{Name: "admin", Port: 81, Protocol: corev1.ProtocolTCP},
			))},
			node: &NodeInfo{Name: "node-1", NodePortAddrs: "192.168.1.10"},
			want: []string{
				"10.96.0.1:53/UDP -> ", "10.96.0.1:80/TCP -> ", "10.96.0.1:81/TCP -> ",
				"192.168.1.10:30053/UDP -> kind=NodePort snat",
			},
			problems: []string{`Service ns/a: port "http": nodePort 70000 out of range 1-65535`},
		},
		{
			rule:     "18: a nodePort on a ClusterIP-type Service is not served (the API server refuses it)",
			services: []*corev1.Service{svc("a", "10.96.0.1", withNodePorts(30080))},
			node:     npNode,
			want:     []string{"10.96.0.1:80/TCP -> "},
		},
		{
			rule: "3, 6, 19: externalIPs on a ClusterIP Service: parsed leniently, IPv4 only, once each; empty ignored, unparsable and special ones reported",
			services: []*corev1.Service{svc("a", "10.96.0.1", withExternalIPs(
				"203.0.113.010", "fd00::9", "bogus", "", " 203.0.113.10 ", "127.0.0.1", "0.0.0.0", "224.0.0.1", "169.254.1.1"))},
			slices: both,
			want: []string{
				"10.96.0.1:80/TCP -> 10.0.0.1:8080(local),10.0.0.2:8080",
				"203.0.113.10:80/TCP -> 10.0.0.1:8080(local),10.0.0.2:8080 kind=ExternalIP snat",
			},
			problems: []string{
				`Service ns/a: externalIPs: "bogus" is not an IP address`,
				"Service ns/a: externalIPs: 0.0.0.0 is unspecified",
				"Service ns/a: externalIPs: 127.0.0.1 is a loopback address",
				"Service ns/a: externalIPs: 169.254.1.1 is a link-local address",
				"Service ns/a: externalIPs: 224.0.0.1 is a multicast or broadcast address",
			},
		},
		{
			rule: "3, 20: LB ingress IPs with ipMode unset or VIP are served, Proxy not; a hostname without ip and a bad ip are reported",
			services: []*corev1.Service{svc("a", "10.96.0.1", withType(corev1.ServiceTypeLoadBalancer), withIngress(
				lbIP("198.51.100.1"),
				lbIPMode("198.51.100.2", corev1.LoadBalancerIPModeVIP),
				lbIPMode("198.51.100.3", corev1.LoadBalancerIPModeProxy),
				corev1.LoadBalancerIngress{Hostname: "lb.example.com"},
				corev1.LoadBalancerIngress{Hostname: "proxy.example.com", IPMode: ptr(corev1.LoadBalancerIPModeProxy)},
				corev1.LoadBalancerIngress{Hostname: "lb2.example.com", IP: "198.51.100.4"},
				lbIP("fd00::7"),
				lbIP("300.1.1.1"),
				lbIPMode("198.51.100.5", "Tunnel"),
			))},
			want: []string{
				"10.96.0.1:80/TCP -> ",
				"198.51.100.1:80/TCP -> kind=LoadBalancer snat",
				"198.51.100.2:80/TCP -> kind=LoadBalancer snat",
				"198.51.100.4:80/TCP -> kind=LoadBalancer snat",
			},
			problems: []string{
				"Service ns/a: status.loadBalancer.ingress[3]: hostname lb.example.com without ip: not served",
				`Service ns/a: status.loadBalancer.ingress[7]: ip "300.1.1.1" is not an IP address`,
				`Service ns/a: status.loadBalancer.ingress[8]: unknown ipMode "Tunnel"`,
			},
		},
		{
			rule: "3, 21: source ranges apply to LB frontends only, trimmed, masked, sorted; a bare IP and junk are reported, IPv6 left out",
			services: []*corev1.Service{svc("a", "10.96.0.1", withType(corev1.ServiceTypeLoadBalancer), withNodePorts(30080),
				withExternalIPs("203.0.113.10"), withIngress(lbIP("198.51.100.1")),
				withSourceRanges(" 192.168.0.0/24", "10.1.2.3/16 ", "1.2.3.4", "fd00::/8", "junk", "010.001.0.0/16"))},
			node: &NodeInfo{Name: "node-1", NodePortAddrs: "192.168.1.10"},
			want: []string{
				"10.96.0.1:80/TCP -> ",
				"192.168.1.10:30080/TCP -> kind=NodePort snat",
				"198.51.100.1:80/TCP -> kind=LoadBalancer snat ranges=10.1.0.0/16,192.168.0.0/24",
				"203.0.113.10:80/TCP -> kind=ExternalIP snat",
			},
			problems: []string{
				`Service ns/a: loadBalancerSourceRanges: "1.2.3.4" is not a CIDR: ignored`,
				`Service ns/a: loadBalancerSourceRanges: "junk" is not a CIDR: ignored`,
			},
		},
		{
			rule: "21: when no range parses there is no restriction",
			services: []*corev1.Service{svc("a", "10.96.0.1", withType(corev1.ServiceTypeLoadBalancer),
				withIngress(lbIP("198.51.100.1")), withSourceRanges("nope", "fd00::/8"))},
			want:     []string{"10.96.0.1:80/TCP -> ", "198.51.100.1:80/TCP -> kind=LoadBalancer snat"},
			problems: []string{`loadBalancerSourceRanges: "nope" is not a CIDR`},
		},
		{
			rule: "21: 0.0.0.0/0 among the ranges: no restriction",
			services: []*corev1.Service{svc("a", "10.96.0.1", withType(corev1.ServiceTypeLoadBalancer),
				withIngress(lbIP("198.51.100.1")), withSourceRanges("10.0.0.0/8", "0.0.0.0/0"))},
			want: []string{"10.96.0.1:80/TCP -> ", "198.51.100.1:80/TCP -> kind=LoadBalancer snat"},
		},
		{
			rule: "21: a range holding the node's InternalIP lets the Service's LB IPs in as sources too",
			services: []*corev1.Service{svc("a", "10.96.0.1", withType(corev1.ServiceTypeLoadBalancer),
				withIngress(lbIP("198.51.100.2"), lbIP("198.51.100.1")), withSourceRanges("192.168.1.0/24"))},
			node: npNode,
			want: []string{
				"10.96.0.1:80/TCP -> ",
				"198.51.100.1:80/TCP -> kind=LoadBalancer snat ranges=192.168.1.0/24,198.51.100.1/32,198.51.100.2/32",
				"198.51.100.2:80/TCP -> kind=LoadBalancer snat ranges=192.168.1.0/24,198.51.100.1/32,198.51.100.2/32",
			},
		},
		{
			rule: "12, 13: externalTrafficPolicy Local: external clients get the Local set unSNATed, internal ones the Cluster set SNATed when remote; the ClusterIP keeps the Cluster set",
			services: []*corev1.Service{svc("a", "10.96.0.1", withType(corev1.ServiceTypeLoadBalancer), withNodePorts(30080),
				withETP(corev1.ServiceExternalTrafficPolicyLocal), withExternalIPs("203.0.113.10"), withIngress(lbIP("198.51.100.1")))},
			slices: both,
			node:   &NodeInfo{Name: "node-1", NodePortAddrs: "192.168.1.10"},
			want: []string{
				"10.96.0.1:80/TCP -> 10.0.0.1:8080(local),10.0.0.2:8080",
				"192.168.1.10:30080/TCP -> 10.0.0.1:8080(local) kind=NodePort internal=[10.0.0.1:8080(local),10.0.0.2:8080 snat]",
				"198.51.100.1:80/TCP -> 10.0.0.1:8080(local) kind=LoadBalancer internal=[10.0.0.1:8080(local),10.0.0.2:8080 snat]",
				"203.0.113.10:80/TCP -> 10.0.0.1:8080(local) kind=ExternalIP internal=[10.0.0.1:8080(local),10.0.0.2:8080 snat]",
			},
			problems: []string{"no healthCheckNodePort"},
		},
		{
			rule: "13, 14: externalTrafficPolicy Local without a local endpoint while others exist: DROP externally, the Cluster set internally",
			services: []*corev1.Service{svc("a", "10.96.0.1", withType(corev1.ServiceTypeNodePort), withNodePorts(30080),
				withETP(corev1.ServiceExternalTrafficPolicyLocal))},
			slices: []*discoveryv1.EndpointSlice{slice("a-1", "a", httpPort(8080), remote)},
			node:   &NodeInfo{Name: "node-1", NodePortAddrs: "192.168.1.10"},
			want: []string{
				"10.96.0.1:80/TCP -> 10.0.0.2:8080",
				"192.168.1.10:30080/TCP -> drop kind=NodePort internal=[10.0.0.2:8080 snat]",
			},
		},
		{
			rule: "13, 14: externalTrafficPolicy Local without any usable endpoint: REJECT for every client",
			services: []*corev1.Service{svc("a", "10.96.0.1", withType(corev1.ServiceTypeNodePort), withNodePorts(30080),
				withETP(corev1.ServiceExternalTrafficPolicyLocal))},
			slices: []*discoveryv1.EndpointSlice{slice("a-1", "a", httpPort(8080), ready("10.0.0.1").on("node-1").cond(ptr(false), ptr(false), nil))},
			node:   &NodeInfo{Name: "node-1", NodePortAddrs: "192.168.1.10"},
			want:   []string{"10.96.0.1:80/TCP -> ", "192.168.1.10:30080/TCP -> kind=NodePort internal=[snat]"},
		},
		{
			rule: "10, 13: externalTrafficPolicy Local falls back to the local serving-and-terminating endpoints",
			services: []*corev1.Service{svc("a", "10.96.0.1", withType(corev1.ServiceTypeNodePort), withNodePorts(30080),
				withETP(corev1.ServiceExternalTrafficPolicyLocal))},
			slices: []*discoveryv1.EndpointSlice{slice("a-1", "a", httpPort(8080), term("10.0.0.1").on("node-1"), remote)},
			node:   &NodeInfo{Name: "node-1", NodePortAddrs: "192.168.1.10"},
			want: []string{
				"10.96.0.1:80/TCP -> 10.0.0.2:8080",
				"192.168.1.10:30080/TCP -> 10.0.0.1:8080(local) kind=NodePort internal=[10.0.0.2:8080 snat]",
			},
		},
		{
			rule: "13: externalTrafficPolicy Local on a ClusterIP-type Service without externalIPs means nothing (its LB IPs use the Cluster set)",
			services: []*corev1.Service{svc("a", "10.96.0.1", withETP(corev1.ServiceExternalTrafficPolicyLocal),
				withIngress(lbIP("198.51.100.1")))},
			slices: both,
			want: []string{
				"10.96.0.1:80/TCP -> 10.0.0.1:8080(local),10.0.0.2:8080",
				"198.51.100.1:80/TCP -> 10.0.0.1:8080(local),10.0.0.2:8080 kind=LoadBalancer snat",
			},
		},
		{
			rule:     "11, 13: the internal set of externalTrafficPolicy Local is the topology-filtered Cluster set; the Local set ignores hints",
			services: []*corev1.Service{svc("a", "10.96.0.1", withExternalIPs("203.0.113.10"), withETP(corev1.ServiceExternalTrafficPolicyLocal))},
			slices: []*discoveryv1.EndpointSlice{slice("a-1", "a", httpPort(8080),
				ready("10.0.0.1").on("node-1").inZones("z2"), ready("10.0.0.2").on("node-2").inZones("z1"))},
			node: &NodeInfo{Name: "node-1", Zone: "z1"},
			want: []string{
				"10.96.0.1:80/TCP -> 10.0.0.2:8080",
				"203.0.113.10:80/TCP -> 10.0.0.1:8080(local) kind=ExternalIP internal=[10.0.0.2:8080 snat]",
			},
		},
		{
			rule: "22: session affinity applies to every frontend of a service port",
			services: []*corev1.Service{svc("a", "10.96.0.1", withType(corev1.ServiceTypeNodePort), withNodePorts(30080),
				withExternalIPs("203.0.113.10"), withAffinity(ptr(int32(60))))},
			node: &NodeInfo{Name: "node-1", NodePortAddrs: "192.168.1.10"},
			want: []string{
				"10.96.0.1:80/TCP -> affinity=60",
				"192.168.1.10:30080/TCP -> affinity=60 kind=NodePort snat",
				"203.0.113.10:80/TCP -> affinity=60 kind=ExternalIP snat",
			},
		},
		{
			rule: "17, 19: an externalIP on another Service's ClusterIP frontend: the ClusterIP wins, whatever the names",
			services: []*corev1.Service{
				svc("a", "10.96.0.1", withExternalIPs("10.96.0.2")),
				svc("b", "10.96.0.2"),
			},
			want:     []string{"10.96.0.1:80/TCP -> ", "10.96.0.2:80/TCP -> "},
			problems: []string{`Service ns/a: port "http": ExternalIP frontend 10.96.0.2:80/TCP already served by ns/b:http/TCP as its ClusterIP frontend`},
		},
		{
			rule: "17, 19: an externalIP on another Service's cluster IP but another port: both served",
			services: []*corev1.Service{
				svc("a", "10.96.0.1", withExternalIPs("10.96.0.2"), withPorts(corev1.ServicePort{Name: "http", Port: 8080, Protocol: corev1.ProtocolTCP})),
				svc("b", "10.96.0.2"),
			},
			want: []string{"10.96.0.1:8080/TCP -> ", "10.96.0.2:80/TCP -> ", "10.96.0.2:8080/TCP -> kind=ExternalIP snat"},
		},
		{
			rule: "17, 18: a nodePort two Services use: the first by namespace/name wins on every node address",
			services: []*corev1.Service{
				svc("b", "10.96.0.2", withType(corev1.ServiceTypeNodePort), withNodePorts(30080)),
				svc("a", "10.96.0.1", withType(corev1.ServiceTypeNodePort), withNodePorts(30080)),
			},
			slices: []*discoveryv1.EndpointSlice{slice("a-1", "a", httpPort(8080), local)},
			node:   npNode,
			want: []string{
				"10.96.0.1:80/TCP -> 10.0.0.1:8080(local)",
				"10.96.0.2:80/TCP -> ",
				"192.168.1.10:30080/TCP -> 10.0.0.1:8080(local) kind=NodePort snat",
				"192.168.2.10:30080/TCP -> 10.0.0.1:8080(local) kind=NodePort snat",
			},
			problems: []string{
				`Service ns/b: port "http": NodePort frontend 192.168.1.10:30080/TCP already served by ns/a:http/TCP as its NodePort frontend`,
				`Service ns/b: port "http": NodePort frontend 192.168.2.10:30080/TCP already served by ns/a:http/TCP as its NodePort frontend`,
			},
		},
		{
			rule: "17, 19, 20: an LB IP on another Service's externalIP: the LB frontend wins",
			services: []*corev1.Service{
				svc("a", "10.96.0.1", withExternalIPs("198.51.100.1")),
				svc("b", "10.96.0.2", withType(corev1.ServiceTypeLoadBalancer), withIngress(lbIP("198.51.100.1"))),
			},
			want:     []string{"10.96.0.1:80/TCP -> ", "10.96.0.2:80/TCP -> ", "198.51.100.1:80/TCP -> kind=LoadBalancer snat"},
			problems: []string{`Service ns/a: port "http": ExternalIP frontend 198.51.100.1:80/TCP already served by ns/b:http/TCP as its LoadBalancer frontend`},
		},
		{
			rule: "19, 20, 21: one Service with its LB IP also in externalIPs: served as the LB frontend, with its ranges, and reported",
			services: []*corev1.Service{svc("a", "10.96.0.1", withType(corev1.ServiceTypeLoadBalancer),
				withExternalIPs("198.51.100.1", "10.96.0.1"), withIngress(lbIP("198.51.100.1")), withSourceRanges("10.0.0.0/8"))},
			want: []string{"10.96.0.1:80/TCP -> ", "198.51.100.1:80/TCP -> kind=LoadBalancer snat ranges=10.0.0.0/8"},
			problems: []string{
				`Service ns/a: port "http": ExternalIP frontend 10.96.0.1:80/TCP is also its ClusterIP frontend (port "http"): served as that`,
				`Service ns/a: port "http": ExternalIP frontend 198.51.100.1:80/TCP is also its LoadBalancer frontend (port "http"): served as that`,
			},
		},
		{
			rule: "18: two ports of one Service with the same nodePort and protocol: the second reported",
			services: []*corev1.Service{svc("a", "10.96.0.1", withType(corev1.ServiceTypeNodePort), withPorts(
				corev1.ServicePort{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP, NodePort: 30080},
				corev1.ServicePort{Name: "alt", Port: 81, Protocol: corev1.ProtocolTCP, NodePort: 30080},
			))},
			node: &NodeInfo{Name: "node-1", NodePortAddrs: "192.168.1.10"},
			want: []string{
				"10.96.0.1:80/TCP -> ", "10.96.0.1:81/TCP -> ",
				"192.168.1.10:30080/TCP -> kind=NodePort snat",
			},
			problems: []string{`Service ns/a: port "alt": NodePort frontend 192.168.1.10:30080/TCP listed twice`},
		},
	})
}

func TestDesiredHealthChecks(t *testing.T) {
	runDesiredCases(t, []desiredCase{
		{
			rule: "28: type LoadBalancer with externalTrafficPolicy Local: distinct IPs of local ready endpoints over every port",
			services: []*corev1.Service{lbLocal("a", "10.96.0.1", 32000, withPorts(
				corev1.ServicePort{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP},
				corev1.ServicePort{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP},
			))},
			slices: []*discoveryv1.EndpointSlice{slice("a-1", "a", esPorts(esPort("http", 8080, corev1.ProtocolTCP), esPort("dns", 5353, corev1.ProtocolUDP)),
				ready("10.0.0.1").on("node-1"), ready("10.0.0.3").on("node-1"), term("10.0.0.4").on("node-1"), ready("10.0.0.2").on("node-2"),
				ready("10.0.0.5").on("node-1").cond(ptr(false), nil, nil))},
			want: []string{
				"10.96.0.1:53/UDP -> 10.0.0.1:5353(local),10.0.0.2:5353,10.0.0.3:5353(local)",
				"10.96.0.1:80/TCP -> 10.0.0.1:8080(local),10.0.0.2:8080,10.0.0.3:8080(local)",
				"health 32000 ns/a local=2",
			},
		},
		{
			rule:     "28: only terminating local endpoints: 0",
			services: []*corev1.Service{lbLocal("a", "10.96.0.1", 32000)},
			slices:   []*discoveryv1.EndpointSlice{slice("a-1", "a", httpPort(8080), term("10.0.0.1").on("node-1"))},
			want:     []string{"10.96.0.1:80/TCP -> 10.0.0.1:8080(local)", "health 32000 ns/a local=0"},
		},
		{
			rule: "28: no health check for externalTrafficPolicy Cluster, nor for a NodePort Service",
			services: []*corev1.Service{
				svc("a", "10.96.0.1", withType(corev1.ServiceTypeLoadBalancer), withHealthPort(32000)),
				svc("b", "10.96.0.2", withType(corev1.ServiceTypeNodePort), withETP(corev1.ServiceExternalTrafficPolicyLocal), withHealthPort(32001)),
			},
			want: []string{"10.96.0.1:80/TCP -> ", "10.96.0.2:80/TCP -> "},
		},
		{
			rule:     "28: a healthCheckNodePort out of range is reported",
			services: []*corev1.Service{lbLocal("a", "10.96.0.1", 70000)},
			want:     []string{"10.96.0.1:80/TCP -> "},
			problems: []string{"Service ns/a: healthCheckNodePort 70000 out of range 1-65535"},
		},
		{
			rule:     "28: a missing healthCheckNodePort is reported",
			services: []*corev1.Service{lbLocal("a", "10.96.0.1", 0)},
			want:     []string{"10.96.0.1:80/TCP -> "},
			problems: []string{"Service ns/a: type LoadBalancer with externalTrafficPolicy Local but no healthCheckNodePort"},
		},
		{
			rule:     "2, 28: a headless Service gets no health check",
			services: []*corev1.Service{lbLocal("a", "None", 32000)},
		},
		{
			rule:     "28: two Services with one healthCheckNodePort: the first by namespace/name wins",
			services: []*corev1.Service{lbLocal("b", "10.96.0.2", 32000), lbLocal("a", "10.96.0.1", 32000)},
			slices:   []*discoveryv1.EndpointSlice{slice("b-1", "b", httpPort(8080), ready("10.0.0.1").on("node-1"))},
			want:     []string{"10.96.0.1:80/TCP -> ", "10.96.0.2:80/TCP -> 10.0.0.1:8080(local)", "health 32000 ns/a local=0"},
			problems: []string{"Service ns/b: healthCheckNodePort 32000 already used by ns/a: no health check served"},
		},
		{
			rule: "18, 28: a healthCheckNodePort that is a TCP nodePort of another Service is served to none; a UDP one is no collision",
			services: []*corev1.Service{
				lbLocal("a", "10.96.0.1", 30080),
				svc("b", "10.96.0.2", withType(corev1.ServiceTypeNodePort), withNodePorts(30080)),
				lbLocal("c", "10.96.0.3", 30053),
				svc("d", "10.96.0.4", withType(corev1.ServiceTypeNodePort), withPorts(corev1.ServicePort{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP, NodePort: 30053})),
			},
			want:     []string{"10.96.0.1:80/TCP -> ", "10.96.0.2:80/TCP -> ", "10.96.0.3:80/TCP -> ", "10.96.0.4:53/UDP -> ", "health 30053 ns/c local=0"},
			problems: []string{"Service ns/a: healthCheckNodePort 30080 is also a TCP nodePort of ns/b: no health check served"},
		},
	})
}
