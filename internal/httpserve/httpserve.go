// Package httpserve runs the agent's small HTTP servers (health, metrics)
// for as long as a context lives, each error naming the server and its
// address.
package httpserve

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

// Listen opens a TCP listener on addr ("0.0.0.0:10256"; "127.0.0.1:0" for
// a free port, read back with Addr). The error names the server and addr.
func Listen(name, addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s: listen on %s: %w", name, addr, err)
	}
	return ln, nil
}

// NewServer returns an HTTP server for h with the timeouts every server of
// the agent shares, so that a slow or silent client cannot hold a
// connection open: writeTimeout bounds a client that stops reading.
func NewServer(h http.Handler, writeTimeout time.Duration) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      writeTimeout,
	}
}

// Serve serves h on ln, which it closes, until ctx ends, then returns nil.
// writeTimeout bounds a client that stops reading.
func Serve(ctx context.Context, name string, ln net.Listener, h http.Handler, writeTimeout time.Duration) error {
	srv := NewServer(h, writeTimeout)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	select {
	case err := <-done:
		return fmt.Errorf("%s on %s: %w", name, ln.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
	}
	if err := <-done; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("%s on %s: %w", name, ln.Addr(), err)
	}
	return nil
}
