package cli

import (
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/sluice-lb/sluice/control"
	"github.com/sluice-lb/sluice/internal/healthcheck"
)

// freeLocalPort returns a port nothing listens on at 127.0.0.1 just now.
func freeLocalPort(t *testing.T) uint16 {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return uint16(l.Addr().(*net.TCPAddr).Port)
}

// The health checks of the desired state are served after a sync, on the
// listen addresses, answering rule 28's body; the gauge follows; a port
// that cannot be opened is logged once with the Service's name; a check
// gone from the state is closed.
func TestHealthChecksFollowTheState(t *testing.T) {
	lo := netip.MustParseAddr("127.0.0.1")
	var healthy atomic.Bool
	healthy.Store(true)
	var logs logBuffer
	srv := healthcheck.New(logs.logger(), func() []netip.Addr { return []netip.Addr{lo} }, healthy.Load)
	t.Cleanup(func() { srv.Close() })
	gauge := -1
	h := newHealthChecks(srv, logs.logger(), func(n int) { gauge = n })

	p := freeLocalPort(t)
	busy, err := net.Listen("tcp", "127.0.0.1:0") // held by another program
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	pBusy := uint16(busy.Addr().(*net.TCPAddr).Port)
	state := map[uint16]control.HealthCheck{
		p:     {Namespace: "shop", Name: "web", Port: p, LocalEndpoints: 2},
		pBusy: {Namespace: "shop", Name: "taken", Port: pBusy, LocalEndpoints: 1},
	}
	h.sync(state)
	if gauge != 1 {
		t.Errorf("gauge %d, want 1 (the busy port does not serve)", gauge)
	}
	get := func(port uint16) (int, string) {
		t.Helper()
		resp, err := http.Get("http://" + netip.AddrPortFrom(lo, port).String() + "/")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get(p); code != 200 || body != `{"service":{"namespace":"shop","name":"web"},"localEndpoints":2,"serviceProxyHealthy":true}` {
		t.Errorf("answer %d %q", code, body)
	}
	if n := strings.Count(logs.String(), "shop/taken: healthCheckNodePort "+strconv.Itoa(int(pBusy))); n != 1 {
		t.Errorf("the busy port logged %d times, want 1 with the Service's name:\n%s", n, logs.String())
	}
	// The next sync retries it, without logging it again.
	h.sync(state)
	if n := strings.Count(logs.String(), "shop/taken: healthCheckNodePort"); n != 1 {
		t.Errorf("the busy port logged %d times after a second sync, want 1", n)
	}
	// The agent turns unhealthy: 503 with serviceProxyHealthy false.
	healthy.Store(false)
	if code, body := get(p); code != 503 || !strings.HasSuffix(body, `"serviceProxyHealthy":false}`) {
		t.Errorf("unhealthy agent: %d %q", code, body)
	}
	h.sync(map[uint16]control.HealthCheck{})
	if gauge != 0 {
		t.Errorf("gauge %d after the checks left the state, want 0", gauge)
	}
	if _, err := http.Get("http://" + netip.AddrPortFrom(lo, p).String() + "/"); err == nil {
		t.Errorf("port %d still answers after its check left the state", p)
	}
}
