package healthcheck

import (
	"bufio"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

var (
	lo  = netip.MustParseAddr("127.0.0.1")
	lo2 = netip.MustParseAddr("127.0.0.2") // loopback too: all of 127/8 is local
)

// addrList is a listenAddrs that tests change between Syncs.
type addrList struct {
	mu    sync.Mutex
	addrs []netip.Addr
}

func (l *addrList) set(a ...netip.Addr) { l.mu.Lock(); l.addrs = a; l.mu.Unlock() }
func (l *addrList) get() []netip.Addr   { l.mu.Lock(); defer l.mu.Unlock(); return l.addrs }

// fixture is a Server on 127.0.0.1 (until addrs is changed), its proxy
// health settable.
type fixture struct {
	*Server
	addrs   *addrList
	healthy atomic.Bool
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{addrs: &addrList{addrs: []netip.Addr{lo}}}
	f.healthy.Store(true)
	f.Server = New(slog.New(slog.DiscardHandler), f.addrs.get, f.healthy.Load)
	t.Cleanup(func() { f.Close() })
	return f
}

func (f *fixture) mustSync(t *testing.T, svcs ...Service) {
	t.Helper()
	if errs := f.Sync(svcs); len(errs) != 0 {
		t.Fatalf("Sync(%v): %v", svcs, errs)
	}
}

// freePort returns a port the kernel just gave out on 127.0.0.1 and took
// back, so that it is free for the test to hand to Sync.
func freePort(t *testing.T) uint16 {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return uint16(ln.Addr().(*net.TCPAddr).Port)
}

func hostPort(a netip.Addr, port uint16) string { return netip.AddrPortFrom(a, port).String() }

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// assertRefused fails unless nothing listens on addr.
func assertRefused(t *testing.T, addr string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err == nil {
		c.Close()
		t.Fatalf("dial %s: connected, want refused", addr)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial %s: %v, want connection refused", addr, err)
	}
}

// answer is one HTTP response as it came off the wire.
type answer struct {
	code int
	hdr  http.Header
	body string
}

// ask sends one request on c, which stays open (HTTP/1.1 keep-alive), and
// reads the answer.
func ask(t *testing.T, c net.Conn, method, target string) answer {
	t.Helper()
	if err := c.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	req := method + " " + target + " HTTP/1.1\r\nHost: node\r\n"
	if method == http.MethodPost || method == http.MethodPut || method == http.MethodPatch {
		req += "Content-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"
	} else {
		req += "\r\n"
	}
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatalf("%s %s: write: %v", method, target, err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: method})
	if err != nil {
		t.Fatalf("%s %s: read: %v", method, target, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, target, err)
	}
	return answer{code: resp.StatusCode, hdr: resp.Header, body: string(b)}
}

// get asks once on a new connection.
func get(t *testing.T, addr string) answer {
	t.Helper()
	return ask(t, dial(t, addr), http.MethodGet, "/")
}

// wantBody is the exact body for a Service (rule 28's bytes).
func wantBody(ns, name string, n int, healthy bool) string {
	return `{"service":{"namespace":"` + ns + `","name":"` + name + `"},"localEndpoints":` + strconv.Itoa(n) +
		`,"serviceProxyHealthy":` + strconv.FormatBool(healthy) + `}`
}

// assertAnswer checks status, body and the name and count it reports.
func assertAnswer(t *testing.T, a answer, code int, ns, name string, n int, healthy bool) {
	t.Helper()
	if a.code != code {
		t.Errorf("status %d, want %d (body %q)", a.code, code, a.body)
	}
	if want := wantBody(ns, name, n, healthy); a.body != want {
		t.Errorf("body\n%q\nwant\n%q", a.body, want)
	}
}

func errText(errs []error) string {
	s := make([]string, len(errs))
	for i, e := range errs {
		s[i] = e.Error()
	}
	return strings.Join(s, "; ")
}
