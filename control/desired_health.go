package control

import (
	"net/netip"

	corev1 "k8s.io/api/core/v1"
)

// healthCheckOf is the healthCheckNodePort server a Service asks for
// (rule 28): type LoadBalancer with externalTrafficPolicy Local. Which
// Service gets a port two ask for, and whether it collides with a
// nodePort, the Tracker decides.
func (r *serviceResult) healthCheckOf(svc *corev1.Service, ports []*portInputs, policyLocal bool) *HealthCheck {
	if svc.Spec.Type != corev1.ServiceTypeLoadBalancer || !policyLocal {
		return nil
	}
	hp := svc.Spec.HealthCheckNodePort
	if hp == 0 {
		// The API server allocates one; a manifest may lack it. The
		// load balancer then cannot tell which nodes have endpoints.
		r.problem(SkipHealthCheck, "type LoadBalancer with externalTrafficPolicy Local but no healthCheckNodePort: no health check served")
		return nil
	}
	if hp < 1 || hp > 65535 {
		r.problem(SkipHealthCheck, "healthCheckNodePort %d out of range 1-65535", hp)
		return nil
	}
	return &HealthCheck{Namespace: svc.Namespace, Name: svc.Name, Port: uint16(hp), LocalEndpoints: localReadyIPs(ports)}
}

// localReadyIPs counts the distinct IPs of the local ready endpoints of
// every port (rule 28): an endpoint serving two ports is one, and a node
// whose local endpoints are all terminating has none.
func localReadyIPs(ports []*portInputs) int {
	seen := map[netip.Addr]bool{}
	for _, p := range ports {
		for i := range p.eps {
			if e := &p.eps[i]; e.local && e.ready {
				seen[e.backend.Addr] = true
			}
		}
	}
	return len(seen)
}
