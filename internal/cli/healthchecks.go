package cli

import (
	"log/slog"

	"github.com/sluice-lb/sluice/control"
	"github.com/sluice-lb/sluice/internal/healthcheck"
)

// healthChecks keeps the healthCheckNodePort servers (rule 28) in step
// with the desired state: after every sync, Sync with the state's health
// checks.
type healthChecks struct {
	srv *healthcheck.Server
	log *slog.Logger
	// gauge is told how many ports are serving after each Sync.
	gauge func(int)
	// reported are the errors logged already: a port another program
	// holds is retried at every sync and logged once, again only after
	// it was fixed and broke anew.
	reported map[string]bool
}

func newHealthChecks(srv *healthcheck.Server, log *slog.Logger, gauge func(int)) *healthChecks {
	return &healthChecks{srv: srv, log: log, gauge: gauge, reported: map[string]bool{}}
}

// sync makes the servers those of checks (State.HealthChecks).
func (h *healthChecks) sync(checks map[uint16]control.HealthCheck) {
	services := make([]healthcheck.Service, 0, len(checks))
	for _, c := range checks {
		services = append(services, healthcheck.Service{Namespace: c.Namespace, Name: c.Name, Port: c.Port, LocalEndpoints: c.LocalEndpoints})
	}
	now := map[string]bool{}
	// Each error names the Service (namespace/name) and the port.
	for _, err := range h.srv.Sync(services) {
		msg := err.Error()
		if !now[msg] && !h.reported[msg] {
			h.log.Error("health check port not served", "err", msg)
		}
		now[msg] = true
	}
	h.reported = now
	h.gauge(h.srv.Serving())
}
