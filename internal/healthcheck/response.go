package healthcheck

import (
	"encoding/json"
	"net/http"
	"strconv"
)

// body is the answer's JSON; the field order is the order on the wire.
type body struct {
	Service             serviceName `json:"service"`
	LocalEndpoints      int         `json:"localEndpoints"`
	ServiceProxyHealthy bool        `json:"serviceProxyHealthy"`
}

type serviceName struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
}

// writeResponse answers one health check of svc, whatever its path and
// method, with the bytes kube-proxy sends (pkg/proxy/healthcheck,
// service_health.go), since load balancers, and the people who debug them
// with curl, already read those.
//
// The status is 200 only when the Service has local ready endpoints and
// the proxy itself is healthy, 503 otherwise. kube-proxy's
// serviceProxyHealthy is its own sync health (no change waiting
// unprogrammed for longer than the health timeout; node eligibility is not
// part of it), the /livez verdict: here whatever proxyHealthy reports. A
// proxy that stopped programming the datapath so takes its node out of
// every Local Service at once.
//
// The headers are Content-Type application/json, X-Content-Type-Options
// nosniff, and X-Load-Balancing-Endpoint-Weight with the endpoint count,
// which a load balancer that weights nodes may read (current kube-proxy
// sends it).
//
// The body is JSON indented by one tab per level, ": " after each key, with
// no trailing newline (rule 28 writes the same fields on one line; these
// are the bytes):
//
//	{
//		"service": {
//			"namespace": "ns",
//			"name": "svc"
//		},
//		"localEndpoints": 2,
//		"serviceProxyHealthy": true
//	}
//
// kube-proxy quotes the names Go-style; JSON quoting, used here, gives the
// same bytes for every valid Kubernetes name and stays JSON for any other.
func writeResponse(w http.ResponseWriter, svc *Service, proxyHealthy bool) {
	b, _ := json.MarshalIndent(body{
		Service:             serviceName{Namespace: svc.Namespace, Name: svc.Name},
		LocalEndpoints:      svc.LocalEndpoints,
		ServiceProxyHealthy: proxyHealthy,
	}, "", "\t")
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Load-Balancing-Endpoint-Weight", strconv.Itoa(svc.LocalEndpoints))
	code := http.StatusServiceUnavailable
	if svc.LocalEndpoints > 0 && proxyHealthy {
		code = http.StatusOK
	}
	w.WriteHeader(code)
	_, _ = w.Write(b)
}
