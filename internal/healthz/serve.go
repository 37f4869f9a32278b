package healthz

import (
	"context"
	"net"
	"time"

	"github.com/sluice-lb/sluice/internal/httpserve"
)

const name = "proxy health server"

// Listen opens a TCP listener on addr ("0.0.0.0:10256"; ":0" or
// "127.0.0.1:0" for a free port, read back with Addr). The error names
// the address.
func Listen(addr string) (net.Listener, error) { return httpserve.Listen(name, addr) }

// Serve serves Handler on addr until ctx ends, then returns nil. It
// returns an error naming addr when it cannot listen there.
func (s *Server) Serve(ctx context.Context, addr string) error {
	ln, err := Listen(addr)
	if err != nil {
		return err
	}
	return s.ServeListener(ctx, ln)
}

// ServeListener serves Handler on ln, which it closes, until ctx ends,
// then returns nil.
func (s *Server) ServeListener(ctx context.Context, ln net.Listener) error {
	return httpserve.Serve(ctx, name, ln, s.Handler(), 10*time.Second)
}
