package k8s

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sluice-lb/sluice/internal/agenttest"
	"github.com/sluice-lb/sluice/internal/kubetest"
	"github.com/sluice-lb/sluice/internal/netlab"
	"github.com/sluice-lb/sluice/internal/whoami"
)

// North-south traffic driven from the API server (rules 13, 14, 18, 20,
// 26, 28): the Services are typed NodePort and LoadBalancer through the
// API, which allocates their nodePorts and healthCheckNodePorts; the load
// balancer's address is written to the status subresource, as a cloud
// controller would; the Node's InternalIP and pod CIDR come from the Node
// object. The client is outside the cluster (netlab's external client,
// outside the Node's pod CIDR) and reaches the node on the InternalIP.

// nsLBIP is the load balancer's address: routed from the external client
// to the node, on no device.
const nsLBIP = "192.168.60.1"

var nodeIP = netlab.NodeClientAddr // the Node's InternalIP

// newNorthSouth is a node with backends local backends and the external
// client; the agent is not started.
func newNorthSouth(t *testing.T, backends int, agentArgs ...string) *node {
	t.Helper()
	n := newNode(t, kubetest.Start(t), backends, agentArgs...)
	if _, err := n.topo.AddExternal(); err != nil {
		t.Fatal(err)
	}
	return n
}

// A type NodePort Service, its nodePorts allocated by the API server,
// serves the external client on the InternalIP over TCP and UDP from the
// local backends, which see the client's own address (rule 26: no SNAT to
// a local backend); deleted, it serves no more.
func TestNorthSouthNodePort(t *testing.T) {
	n := newNorthSouth(t, 2)
	svc := n.createService(nsService("np", corev1.ServiceTypeNodePort))
	n.applySlice(nsSlice("np", n.name, 1, 2))
	n.startAgent(true)
	for _, proto := range []string{"tcp", "udp"} {
		addr := netip.AddrPortFrom(nodeIP, nodePort(t, svc, proto)).String()
		seen := map[string]bool{}
		n.waitFor(proto+" answers of both backends on "+addr, 10*time.Second, func() error {
			a, err := n.askExternal(proto, addr)
			if err != nil {
				return err
			}
			if a.RemoteIP() != netlab.ExternalClientAddr.String() {
				t.Fatalf("%s %s: %s saw %s, want the client's own %s", proto, addr, a.Hostname, a.Remote, netlab.ExternalClientAddr)
			}
			seen[a.Hostname] = true
			if !seen["backend-1"] || !seen["backend-2"] {
				return fmt.Errorf("answered by %v", seen)
			}
			return nil
		})
	}

	if err := n.admin.CoreV1().Services(namespace).Delete(context.Background(), "np", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	// Untranslated, the packets reach the node's own stack, where no
	// socket listens on the port.
	for _, proto := range []string{"tcp", "udp"} {
		addr := netip.AddrPortFrom(nodeIP, nodePort(t, svc, proto)).String()
		n.waitFor(proto+" "+addr+" refused once the Service is deleted", 10*time.Second, func() error {
			return wantRefused(n.askExternal(proto, addr))
		})
	}
}

// externalTrafficPolicy Local on a type LoadBalancer Service (rules 13,
// 14, 28): with local endpoints, the NodePort serves the external client
// keeping its address and the healthCheckNodePort the API server allocated
// answers 200 with the count; with the endpoints moved to another node,
// it answers 503 and the NodePort drops the external client, while a pod
// of this node (inside the Node's pod CIDR) is still served, by the
// Cluster set, SNATed to the node since the endpoint is remote.
func TestNorthSouthLocalTrafficPolicy(t *testing.T) {
	n := newNorthSouth(t, 2)
	svc := n.createService(nsService("local", corev1.ServiceTypeLoadBalancer, func(s *corev1.Service) {
		s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	}))
	if svc.Spec.HealthCheckNodePort == 0 {
		t.Fatal("the API server allocated no healthCheckNodePort")
	}
	hc := netip.AddrPortFrom(nodeIP, uint16(svc.Spec.HealthCheckNodePort)).String()
	np := netip.AddrPortFrom(nodeIP, nodePort(t, svc, "tcp")).String()
	n.applySlice(nsSlice("local", n.name, 1, 2))
	n.startAgent(true)

	n.waitHealthCheck(hc, http.StatusOK, "local", 2)
	for _, proto := range []string{"tcp", "udp"} {
		addr := netip.AddrPortFrom(nodeIP, nodePort(t, svc, proto)).String()
		var a whoami.Answer
		n.waitFor(proto+" answer on "+addr, 10*time.Second, func() (err error) {
			a, err = n.askExternal(proto, addr)
			return err
		})
		if a.RemoteIP() != netlab.ExternalClientAddr.String() {
			t.Errorf("%s %s: %s saw %s, want the client's own %s", proto, addr, a.Hostname, a.Remote, netlab.ExternalClientAddr)
		}
	}

	// The endpoints move to another node.
	n.applySlice(nsSlice("local", "elsewhere", 1, 2))
	n.waitHealthCheck(hc, http.StatusServiceUnavailable, "local", 0)
	n.waitFor("the NodePort to drop the external client", 10*time.Second, func() error {
		before := n.counter("drop-no-local-endpoints")
		a, err := n.askExternal("tcp", np)
		if err == nil {
			return fmt.Errorf("answered by %s", a.Hostname)
		}
		if after := n.counter("drop-no-local-endpoints"); after == before {
			return fmt.Errorf("%v, and drop-no-local-endpoints did not move (%d)", err, after)
		}
		return nil
	})
	a, err := agenttest.AskAnswer(n.topo.Client, "tcp", np, 500*time.Millisecond)
	if err != nil {
		t.Fatalf("pod %s to %s: %v; a local pod uses the Cluster set (rule 13)", netlab.ClientAddr, np, err)
	}
	if a.RemoteIP() != nodeIP.String() {
		t.Errorf("pod to %s: %s saw %s, want the node's %s (SNAT to a remote endpoint)", np, a.Hostname, a.Remote, nodeIP)
	}
}

// A type LoadBalancer Service's status.loadBalancer.ingress, written as a
// cloud controller would (rule 20): the IP serves the external client;
// ipMode Proxy takes it away (the load balancer proxies to the NodePort);
// back to VIP it serves again, and without the ingress it is gone.
func TestNorthSouthLoadBalancerStatus(t *testing.T) {
	n := newNorthSouth(t, 1)
	n.createService(nsService("lb", corev1.ServiceTypeLoadBalancer))
	n.applySlice(nsSlice("lb", n.name, 1))
	// The load balancer's address leads to the node, as the router in
	// front of the cluster would send it.
	if err := n.topo.External.RouteVia(netip.MustParsePrefix(nsLBIP+"/32"), netlab.NodeExternalAddr); err != nil {
		t.Fatal(err)
	}
	n.startAgent(true)
	lb := nsLBIP + ":80"
	// No frontend on the address, and the node, which has no route for
	// it, answers nothing.
	notServed := func() error {
		if got := n.frontendsOn(nsLBIP); got != 0 {
			return fmt.Errorf("%d frontends on %s programmed", got, nsLBIP)
		}
		if a, err := n.askExternal("tcp", lb); err == nil {
			return fmt.Errorf("answered by %s", a.Hostname)
		}
		return nil
	}
	if err := notServed(); err != nil {
		t.Fatalf("%s before the status has it: %v", lb, err)
	}
	served := func(what string) {
		t.Helper()
		for _, proto := range []string{"tcp", "udp"} {
			n.waitFor(proto+" "+lb+" "+what, 10*time.Second, func() error {
				a, err := n.askExternal(proto, lb)
				if err == nil && a.Hostname != "backend-1" {
					err = fmt.Errorf("answered by %s", a.Hostname)
				}
				return err
			})
		}
	}

	n.setIngress("lb", corev1.LoadBalancerIngress{IP: nsLBIP})
	served("with the ingress")
	n.setIngress("lb", corev1.LoadBalancerIngress{IP: nsLBIP, IPMode: ptr(corev1.LoadBalancerIPModeProxy)})
	n.waitFor(lb+" not served with ipMode Proxy", 10*time.Second, notServed)
	n.setIngress("lb", corev1.LoadBalancerIngress{IP: nsLBIP, IPMode: ptr(corev1.LoadBalancerIPModeVIP)})
	served("with ipMode VIP")
	n.setIngress("lb")
	n.waitFor(lb+" not served without the ingress", 10*time.Second, notServed)
}

// --nodeport-addresses as a CIDR (rule 18): NodePorts and
// healthCheckNodePorts are served on the node's addresses inside it only,
// here the external client's link, not on the InternalIP outside it.
func TestNorthSouthNodePortAddressesCIDR(t *testing.T) {
	n := newNorthSouth(t, 1, "--nodeport-addresses", netip.PrefixFrom(netlab.NodeExternalAddr, 24).Masked().String())
	svc := n.createService(nsService("local", corev1.ServiceTypeLoadBalancer, func(s *corev1.Service) {
		s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	}))
	n.applySlice(nsSlice("local", n.name, 1))
	n.startAgent(true)
	port, hcPort := nodePort(t, svc, "tcp"), uint16(svc.Spec.HealthCheckNodePort)
	inside := netip.AddrPortFrom(netlab.NodeExternalAddr, port).String()
	n.waitFor("the NodePort on "+inside, 10*time.Second, func() error {
		_, err := n.askExternal("tcp", inside)
		return err
	})
	n.waitHealthCheck(netip.AddrPortFrom(netlab.NodeExternalAddr, hcPort).String(), http.StatusOK, "local", 1)
	outside := netip.AddrPortFrom(nodeIP, port).String()
	if err := wantRefused(n.askExternal("tcp", outside)); err != nil {
		t.Errorf("%s, outside --nodeport-addresses: %v", outside, err)
	}
	if _, err := n.healthCheck(netip.AddrPortFrom(nodeIP, hcPort).String()); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("health check on %s, outside --nodeport-addresses: %v, want connection refused", nodeIP, err)
	}
}

// The Node's InternalIP changes through its status, as a kubelet reports
// a new address: the NodePorts and the healthCheckNodePort move to it, and
// flows to a remote endpoint are SNATed to it.
func TestNorthSouthNodeAddressChange(t *testing.T) {
	n := newNorthSouth(t, 2)
	local := n.createService(nsService("local", corev1.ServiceTypeLoadBalancer, func(s *corev1.Service) {
		s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	}))
	n.applySlice(nsSlice("local", n.name, 1))
	// Backend 2 as another node's pod: eTP Cluster SNATs flows to it.
	remote := n.createService(nsService("remote", corev1.ServiceTypeNodePort))
	n.applySlice(nsSlice("remote", "elsewhere", 2))
	n.startAgent(true)
	port, hcPort, remotePort := nodePort(t, local, "tcp"), uint16(local.Spec.HealthCheckNodePort), nodePort(t, remote, "tcp")
	// askSeen waits for an answer on addr:port, from the backend who
	// seeing the client as seen.
	askSeen := func(addr netip.Addr, port uint16, who string, seen netip.Addr) {
		t.Helper()
		to := netip.AddrPortFrom(addr, port).String()
		n.waitFor("the NodePort on "+to, 10*time.Second, func() error {
			a, err := n.askExternal("tcp", to)
			if err == nil && (a.Hostname != who || a.RemoteIP() != seen.String()) {
				err = fmt.Errorf("answered by %s seeing %s, want %s seeing %s", a.Hostname, a.Remote, who, seen)
			}
			return err
		})
	}
	askSeen(nodeIP, port, "backend-1", netlab.ExternalClientAddr)
	askSeen(nodeIP, remotePort, "backend-2", nodeIP)

	moved := netip.MustParseAddr("192.168.80.3")
	if err := n.topo.Node.AddrAdd(netlab.NodeExternalDev, netip.PrefixFrom(moved, 24)); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	node, err := n.admin.CoreV1().Nodes().Get(ctx, n.name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i, a := range node.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			node.Status.Addresses[i].Address = moved.String()
		}
	}
	if _, err := n.admin.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	askSeen(moved, port, "backend-1", netlab.ExternalClientAddr)
	askSeen(moved, remotePort, "backend-2", moved)
	for _, p := range []uint16{port, remotePort} {
		old := netip.AddrPortFrom(nodeIP, p).String()
		if err := wantRefused(n.askExternal("tcp", old)); err != nil {
			t.Errorf("%s, no longer the InternalIP: %v", old, err)
		}
	}
	n.waitHealthCheck(netip.AddrPortFrom(moved, hcPort).String(), http.StatusOK, "local", 1)
	n.waitFor("no health check on "+nodeIP.String(), 10*time.Second, func() error {
		_, err := n.healthCheck(netip.AddrPortFrom(nodeIP, hcPort).String())
		if !errors.Is(err, syscall.ECONNREFUSED) {
			return fmt.Errorf("%v, want connection refused", err)
		}
		return nil
	})
}

// nsService is a selector-less Service with a TCP and a UDP port 80, of
// type typ; the API server allocates its ClusterIP and nodePorts.
func nsService(name string, typ corev1.ServiceType, mut ...func(*corev1.Service)) *corev1.Service {
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
		Spec: corev1.ServiceSpec{
			Type: typ,
			Ports: []corev1.ServicePort{
				{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP},
				{Name: "udp", Port: 80, Protocol: corev1.ProtocolUDP},
			},
		},
	}
	for _, m := range mut {
		m(s)
	}
	return s
}

// nsSlice is the Service's slice: the backends (1-based) on nodeName,
// serving both ports on 8080.
func nsSlice(service, nodeName string, backends ...int) *discoveryv1.EndpointSlice {
	es := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: service + "-1", Namespace: namespace,
			Labels: map[string]string{discoveryv1.LabelServiceName: service}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports: []discoveryv1.EndpointPort{
			{Name: ptr("http"), Port: ptr(int32(8080)), Protocol: ptr(corev1.ProtocolTCP)},
			{Name: ptr("udp"), Port: ptr(int32(8080)), Protocol: ptr(corev1.ProtocolUDP)},
		},
	}
	for _, b := range backends {
		es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{
			Addresses: []string{netlab.BackendAddr(b).String()}, NodeName: ptr(nodeName)})
	}
	return es
}

// createService creates s and returns it as stored, with what the API
// server allocated.
func (n *node) createService(s *corev1.Service) *corev1.Service {
	n.t.Helper()
	out, err := n.admin.CoreV1().Services(namespace).Create(context.Background(), s, metav1.CreateOptions{})
	if err != nil {
		n.t.Fatalf("service %s: %v", s.Name, err)
	}
	return out
}

// nodePort is the nodePort the API server gave the Service's port of proto.
func nodePort(t *testing.T, s *corev1.Service, proto string) uint16 {
	t.Helper()
	for _, p := range s.Spec.Ports {
		if p.Protocol == corev1.Protocol(strings.ToUpper(proto)) && p.NodePort != 0 {
			return uint16(p.NodePort)
		}
	}
	t.Fatalf("service %s: no %s nodePort in %+v", s.Name, proto, s.Spec.Ports)
	return 0
}

// setIngress writes the Service's status.loadBalancer.ingress.
func (n *node) setIngress(name string, ingress ...corev1.LoadBalancerIngress) {
	n.t.Helper()
	ctx := context.Background()
	c := n.admin.CoreV1().Services(namespace)
	s, err := c.Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		n.t.Fatal(err)
	}
	s.Status.LoadBalancer.Ingress = ingress
	if _, err := c.UpdateStatus(ctx, s, metav1.UpdateOptions{}); err != nil {
		n.t.Fatalf("status of service %s: %v", name, err)
	}
}

// askExternal asks from the external client.
func (n *node) askExternal(proto, addr string) (whoami.Answer, error) {
	return agenttest.AskAnswer(n.topo.External, proto, addr, 500*time.Millisecond)
}

// wantRefused says whether a TCP or UDP ask was refused: the node's own
// stack, no socket on the port, answering in place of a frontend.
func wantRefused(a whoami.Answer, err error) error {
	if err == nil {
		return fmt.Errorf("answered by %s", a.Hostname)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("%v, want connection refused", err)
	}
	return nil
}

// healthCheck asks a healthCheckNodePort from the external client.
func (n *node) healthCheck(addr string) (agenttest.HTTPAnswer, error) {
	return agenttest.HTTPGet(n.topo.External, addr, "/any/path", time.Second)
}

// waitHealthCheck waits until the health check at addr answers exactly as
// rule 28 says for the Service name with local endpoints.
func (n *node) waitHealthCheck(addr string, code int, name string, local int) {
	n.t.Helper()
	want := agenttest.HTTPAnswer{Code: code, Body: fmt.Sprintf(`{"service":{"namespace":%q,"name":%q},"localEndpoints":%d,"serviceProxyHealthy":true}`, namespace, name, local),
		ContentType: "application/json", NoSniff: "nosniff"}
	n.waitFor(fmt.Sprintf("health check %s to answer %d, %d local endpoints", addr, code, local), 10*time.Second, func() error {
		h, err := n.healthCheck(addr)
		if err != nil {
			return err
		}
		if h != want {
			return fmt.Errorf("%+v, want %+v", h, want)
		}
		return nil
	})
}
