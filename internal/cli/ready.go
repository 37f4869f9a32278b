package cli

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/sluice-lb/sluice/internal/netlab"
)

// DefaultHealthzAddr is where the agent serves /healthz unless told
// otherwise, seen from its own network namespace.
const DefaultHealthzAddr = "127.0.0.1:10256"

// Healthz gets path ("/healthz", "/livez") from an agent's health server
// inside a network namespace, as a kubelet probe would from the node.
func Healthz(ns *netlab.NS, addr, path string) (code int, body string, err error) {
	client := &http.Client{
		Timeout: time.Second,
		Transport: &http.Transport{
			DisableKeepAlives: true,
			DialContext: func(ctx context.Context, network, a string) (conn net.Conn, err error) {
				// A socket stays in the namespace it was made in.
				err = ns.Do(func() (err error) {
					conn, err = (&net.Dialer{}).DialContext(ctx, network, a)
					return err
				})
				return conn, err
			},
		},
	}
	resp, err := client.Get("http://" + addr + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// WaitServing waits until the agent in ns says on /healthz that it has
// attached and programmed the datapath (200; before its first sync it
// says 503).
func WaitServing(ns *netlab.NS, healthzAddr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		code, body, err := Healthz(ns, healthzAddr, "/healthz")
		if err == nil && code == http.StatusOK {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("agent not serving within %s: /healthz %d %q (%v)", timeout, code, body, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
