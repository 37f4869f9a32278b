package test

import (
	"fmt"
	"strings"
)

// svcSpec is what a multi-node test says of a Service over whoami pods.
type svcSpec struct {
	Name      string // in namespace e2e
	ClusterIP string // "" for none in the manifest
	// NodePort, when not 0, is both ports' nodePort (TCP and UDP may
	// share one).
	NodePort int
	// Spec is added to the Service's spec as it is: YAML lines indented
	// by two spaces ("  type: NodePort\n  externalTrafficPolicy: Local").
	Spec string
}

// podService is a Service with a TCP and a UDP port 80 (targetPort 8080,
// where the pods' whoami answers) and one EndpointSlice holding the pods,
// each ready and with its node's name, as the EndpointSlice controller
// writes them.
func podService(s svcSpec, pods ...*mpod) string {
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: v1\nkind: Service\nmetadata: {name: %s, namespace: e2e}\nspec:\n", s.Name)
	if s.ClusterIP != "" {
		fmt.Fprintf(&b, "  clusterIP: %s\n", s.ClusterIP)
	}
	nodePort := ""
	if s.NodePort != 0 {
		nodePort = fmt.Sprintf(", nodePort: %d", s.NodePort)
	}
	b.WriteString("  ports:\n")
	for _, p := range []string{"TCP", "UDP"} {
		fmt.Fprintf(&b, "  - {name: %s, port: 80, protocol: %s, targetPort: 8080%s}\n", strings.ToLower(p), p, nodePort)
	}
	if s.Spec != "" {
		b.WriteString(strings.TrimRight(s.Spec, "\n") + "\n")
	}
	fmt.Fprintf(&b, `---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: %s-1, namespace: e2e, labels: {kubernetes.io/service-name: %s}}
addressType: IPv4
ports: [{name: tcp, port: 8080, protocol: TCP}, {name: udp, port: 8080, protocol: UDP}]
endpoints:
`, s.Name, s.Name)
	for _, p := range pods {
		fmt.Fprintf(&b, "- {addresses: [%s], conditions: {ready: true}, nodeName: %s, targetRef: {kind: Pod, namespace: e2e, name: %s}}\n",
			p.Addr, p.Node.Name, p.Name)
	}
	return b.String()
}
