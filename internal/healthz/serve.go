package healthz

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"
)

// shutdownGrace is how long requests in flight may take to finish once the
// context ends.
const shutdownGrace = 2 * time.Second

// Listen opens a TCP listener on addr ("0.0.0.0:10256"; ":0" or
// "127.0.0.1:0" for a free port, read back with Addr). The error names
// the address.
func Listen(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("proxy health server: listen on %s: %w", addr, err)
	}
	return ln, nil
}

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
	srv := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      10 * time.Second,
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	select {
	case err := <-done:
		return fmt.Errorf("proxy health server on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
	}
	if err := <-done; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("proxy health server on %s: %w", ln.Addr(), err)
	}
	return nil
}
