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
// method.
//
// The status is 200 only when the Service has local ready endpoints and
// the proxy itself is healthy, 503 otherwise. serviceProxyHealthy is the
// proxy's own sync health (no change waiting unprogrammed for longer than
// the health timeout; node eligibility is not part of it), the /livez
// verdict: here whatever proxyHealthy reports. A proxy that stopped
// programming the datapath so takes its node out of every Local Service at
// once.
//
// The headers are Content-Type application/json, X-Content-Type-Options
// nosniff, and X-Load-Balancing-Endpoint-Weight with the endpoint count,
// which a load balancer that weights nodes may read.
//
// The body is exactly rule 28's, on one line, without indentation or a
// trailing newline:
//
//	{"service":{"namespace":"ns","name":"svc"},"localEndpoints":2,"serviceProxyHealthy":true}
//
// kube-proxy indents the same JSON (one tab per level); sluice follows the
// documented rule, which is its contract. A load balancer reads the status
// code, and a JSON reader the fields, either way.
func writeResponse(w http.ResponseWriter, svc *Service, proxyHealthy bool) {
	b, _ := json.Marshal(body{
		Service:             serviceName{Namespace: svc.Namespace, Name: svc.Name},
		LocalEndpoints:      svc.LocalEndpoints,
		ServiceProxyHealthy: proxyHealthy,
	})
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
