// Package healthcheck serves the healthCheckNodePorts of rule 28: for each
// Service of type LoadBalancer with externalTrafficPolicy Local, an HTTP
// server on its spec.healthCheckNodePort, on the node's addresses, that
// tells the cloud load balancer whether this node has local ready
// endpoints for it (200) or not (503), so that it sends the Service's
// traffic only to nodes that can serve it without leaving the node.
//
// The agent computes the Services from the desired state and hands the
// whole set to Sync after every sync; Sync opens and closes listeners to
// match and updates the counts in place.
package healthcheck

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
)

// Service is one health-checked Service as the desired state computes it.
type Service struct {
	Namespace, Name string
	Port            uint16 // spec.healthCheckNodePort
	LocalEndpoints  int    // distinct IPs of local ready endpoints
}

func (s Service) String() string { return s.Namespace + "/" + s.Name }

// errClosed is what Sync returns after Close.
var errClosed = errors.New("health check servers are closed")

// Server runs one HTTP server per health check port and address.
type Server struct {
	log          *slog.Logger
	listenAddrs  func() []netip.Addr
	proxyHealthy func() bool

	mu     sync.Mutex // serializes Sync and Close
	ports  map[uint16]*port
	closed bool
}

// New returns a Server with no ports open. listenAddrs gives the node
// addresses to listen on, read at every Sync so that a changed address set
// takes effect; nil, or an empty result, means every address of the node.
// proxyHealthy is the proxy's own health (the /livez verdict); while it is
// false every port answers 503 (nil: always healthy).
func New(log *slog.Logger, listenAddrs func() []netip.Addr, proxyHealthy func() bool) *Server {
	if log == nil {
		log = slog.Default()
	}
	if proxyHealthy == nil {
		proxyHealthy = func() bool { return true }
	}
	return &Server{log: log, listenAddrs: listenAddrs, proxyHealthy: proxyHealthy, ports: map[uint16]*port{}}
}

// Sync makes the set of listeners equal to services, keyed by Port: it
// opens new ports, closes removed ones, and updates the counts (and the
// name, should a port change hands) in place, without re-listening, so
// that a load balancer's connection is never refused during an update.
//
// A Service whose port cannot be opened on some address (in use, most
// likely) is reported in the returned errors with namespace/name and the
// reason and does not serve on any address of a port it newly asked for
// (so that the port is not half owned); the others keep serving. It is
// retried at the next Sync. Two Services with the same port, which the API
// server refuses but a manifest may not: the first by namespace/name keeps
// it, the other is reported.
func (s *Server) Sync(services []Service) []error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return []error{errClosed}
	}
	want, errs := byPort(services)
	addrs := s.addrs()

	for n, p := range s.ports {
		if _, ok := want[n]; !ok {
			s.log.Info("closing health check port", "service", p.service().String(), "port", n)
			p.closeAll(s.log)
			delete(s.ports, n)
		}
	}
	for _, svc := range sortedByName(want) {
		if p := s.ports[svc.Port]; p != nil {
			if old := p.service(); old.String() != svc.String() {
				s.log.Info("health check port changes service", "port", svc.Port,
					"from", old.String(), "to", svc.String())
			}
			p.svc.Store(&svc)
			errs = append(errs, s.relisten(p, addrs)...)
			if len(p.listeners) == 0 {
				delete(s.ports, svc.Port)
			}
			continue
		}
		p := &port{number: svc.Port, listeners: map[netip.Addr]*listener{}}
		p.svc.Store(&svc)
		if err := s.openAll(p, addrs); err != nil {
			errs = append(errs, err)
			continue
		}
		s.log.Info("opened health check port", "service", svc.String(), "port", svc.Port,
			"addresses", addrString(addrs))
		s.ports[svc.Port] = p
	}
	return errs
}

// Serving returns how many health check ports are open (listening on at
// least one address).
func (s *Server) Serving() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.ports)
}

// Close closes every port and the connections to it; Sync then fails.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	var errs []error
	for n, p := range s.ports {
		errs = append(errs, p.closeAll(s.log)...)
		delete(s.ports, n)
	}
	return errors.Join(errs...)
}

// byPort keys services by port: of two with the same port the first by
// namespace/name wins. Port 0 is no port.
func byPort(services []Service) (map[uint16]Service, []error) {
	sorted := slices.Clone(services)
	slices.SortStableFunc(sorted, compareNames)
	want := make(map[uint16]Service, len(sorted))
	var errs []error
	for _, svc := range sorted {
		if svc.Port == 0 {
			errs = append(errs, fmt.Errorf("%s: healthCheckNodePort 0 is not a port", svc))
			continue
		}
		if first, dup := want[svc.Port]; dup {
			errs = append(errs, fmt.Errorf("%s: healthCheckNodePort %d is also %s's, which keeps it",
				svc, svc.Port, first))
			continue
		}
		want[svc.Port] = svc
	}
	return want, errs
}

func sortedByName(m map[uint16]Service) []Service {
	out := make([]Service, 0, len(m))
	for _, svc := range m {
		out = append(out, svc)
	}
	slices.SortFunc(out, compareNames)
	return out
}

func compareNames(a, b Service) int {
	return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
}

// addrs returns the addresses to listen on, sorted and without
// duplicates; the one invalid Addr stands for every address.
func (s *Server) addrs() []netip.Addr {
	var out []netip.Addr
	if s.listenAddrs != nil {
		for _, a := range s.listenAddrs() {
			if a = a.Unmap(); a.IsValid() {
				out = append(out, a)
			}
		}
	}
	if len(out) == 0 {
		return []netip.Addr{{}}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out)
}

func addrString(addrs []netip.Addr) []string {
	out := make([]string, len(addrs))
	for i, a := range addrs {
		out[i] = "*"
		if a.IsValid() {
			out[i] = a.String()
		}
	}
	return out
}
