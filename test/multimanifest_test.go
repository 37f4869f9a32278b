package test

import (
	"fmt"
	"strings"
)

// podService is a Service named name in namespace e2e with a TCP and a UDP
// port 80 (targetPort 8080, where the pods' whoami answers) and one
// EndpointSlice holding the pods, each with its node's name, as the
// EndpointSlice controller writes them. spec is added to the Service's
// spec as it is: YAML lines indented by two spaces ("  type: NodePort"),
// for the type, externalIPs, traffic policies a test needs; clusterIP may
// be "" for none.
func podService(name, clusterIP, spec string, pods ...*mpod) string {
	var b strings.Builder
	fmt.Fprintf(&b, `apiVersion: v1
kind: Service
metadata: {name: %s, namespace: e2e}
spec:
`, name)
	if clusterIP != "" {
		fmt.Fprintf(&b, "  clusterIP: %s\n", clusterIP)
	}
	b.WriteString("  ports:\n  - {name: http, port: 80, protocol: TCP, targetPort: 8080}\n  - {name: udp, port: 80, protocol: UDP, targetPort: 8080}\n")
	if spec != "" {
		b.WriteString(strings.TrimRight(spec, "\n") + "\n")
	}
	fmt.Fprintf(&b, `---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: %s-1, namespace: e2e, labels: {kubernetes.io/service-name: %s}}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}, {name: udp, port: 8080, protocol: UDP}]
endpoints:
`, name, name)
	for _, p := range pods {
		fmt.Fprintf(&b, "- {addresses: [%s], conditions: {ready: true}, nodeName: %s, targetRef: {kind: Pod, namespace: e2e, name: %s}}\n",
			p.Addr, p.Node.Name, p.Name)
	}
	return b.String()
}
