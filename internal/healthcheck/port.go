package healthcheck

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/sluice-lb/sluice/internal/httpserve"
)

// port is one open health check port: its listeners, one per address, all
// answering for the same Service.
type port struct {
	number uint16
	// svc is what the port reports. Sync replaces it while requests read
	// it, so that a count changes without touching the listeners.
	svc atomic.Pointer[Service]
	// listeners by address; the invalid Addr is the one listener on every
	// address.
	listeners map[netip.Addr]*listener
}

func (p *port) service() *Service { return p.svc.Load() }

// listener is one HTTP server on one address of a port.
type listener struct {
	addr string
	srv  *http.Server
	done chan struct{} // closed when srv.Serve has returned
}

// openAll opens p on every address of addrs, or on none: it closes what it
// opened when one fails, so that a port in use on one address is not
// served halfway and is free for a retry.
func (s *Server) openAll(p *port, addrs []netip.Addr) error {
	for _, a := range addrs {
		if err := s.listen(p, a); err != nil {
			p.closeAll(s.log)
			return err
		}
	}
	return nil
}

// relisten makes p listen on exactly addrs: it closes the addresses that
// left first (a listener on every address and one on a single address of
// the same port exclude each other), then opens those that came. What
// fails to open is reported and retried at the next Sync; the rest keeps
// serving.
func (s *Server) relisten(p *port, addrs []netip.Addr) []error {
	want := make(map[netip.Addr]bool, len(addrs))
	for _, a := range addrs {
		want[a] = true
	}
	for a, l := range p.listeners {
		if !want[a] {
			s.log.Info("closing health check address", "service", p.service().String(), "address", l.addr)
			if err := l.close(); err != nil {
				s.log.Warn("closing health check address", "service", p.service().String(), "address", l.addr, "error", err)
			}
			delete(p.listeners, a)
		}
	}
	var errs []error
	for _, a := range addrs {
		if p.listeners[a] != nil {
			continue
		}
		if err := s.listen(p, a); err != nil {
			errs = append(errs, err)
			continue
		}
		s.log.Info("opened health check address", "service", p.service().String(), "address", p.listeners[a].addr)
	}
	return errs
}

// listen opens p on a and serves it. The error names the Service, the
// port and the reason.
func (s *Server) listen(p *port, a netip.Addr) error {
	addr := ":" + strconv.Itoa(int(p.number)) // every address, IPv4 and IPv6
	if a.IsValid() {
		addr = netip.AddrPortFrom(a, p.number).String()
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("%s: healthCheckNodePort %d: %w", p.service(), p.number, err)
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		writeResponse(w, p.service(), s.proxyHealthy())
	})
	srv := httpserve.NewServer(h, 10*time.Second)
	// Every request gets the health answer, "OPTIONS *" included, which
	// net/http would otherwise answer itself with an empty 200.
	srv.DisableGeneralOptionsHandler = true
	// The port is open to whatever reaches the node: a scanner's garbage
	// is worth a debug line, not the agent's stderr.
	srv.ErrorLog = slog.NewLogLogger(s.log.Handler(), slog.LevelDebug)
	l := &listener{addr: addr, srv: srv, done: make(chan struct{})}
	go func() {
		defer close(l.done)
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("health check server stopped", "service", p.service().String(), "address", addr, "error", err)
		}
	}()
	p.listeners[a] = l
	return nil
}

// close closes the listener and every connection to it at once, as
// kube-proxy does, and waits until its server is gone: when it returns the
// port is free to open again.
func (l *listener) close() error {
	err := l.srv.Close()
	<-l.done
	return err
}

// closeAll closes every listener of p and returns what failed.
func (p *port) closeAll(log *slog.Logger) []error {
	var errs []error
	for a, l := range p.listeners {
		if err := l.close(); err != nil {
			log.Warn("closing health check address", "service", p.service().String(), "address", l.addr, "error", err)
			errs = append(errs, fmt.Errorf("%s: healthCheckNodePort %d on %s: %w", p.service(), p.number, l.addr, err))
		}
		delete(p.listeners, a)
	}
	return errs
}
