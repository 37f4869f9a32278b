package healthcheck

import (
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestCountUpdatesInPlace: a new count is answered on the listener and
// the connections already open, opened before the Sync and idle or in
// use, without re-listening.
func TestCountUpdatesInPlace(t *testing.T) {
	f := newFixture(t)
	p := freePort(t)
	svc := Service{Namespace: "ns", Name: "svc", Port: p}
	f.mustSync(t, svc)
	before := f.ports[p].listeners[lo]

	used := dial(t, hostPort(lo, p))
	assertAnswer(t, ask(t, used, "GET", "/"), 503, "ns", "svc", 0, true)
	fresh := dial(t, hostPort(lo, p)) // accepted, no request yet

	for _, n := range []int{3, 1, 0, 7} {
		svc.LocalEndpoints = n
		f.mustSync(t, svc)
		code := 503
		if n > 0 {
			code = 200
		}
		assertAnswer(t, ask(t, used, "GET", "/"), code, "ns", "svc", n, true)
		if fresh != nil {
			assertAnswer(t, ask(t, fresh, "GET", "/"), code, "ns", "svc", n, true)
			fresh = nil
		}
		if got := f.ports[p].listeners[lo]; got != before {
			t.Fatalf("count %d: the port was listened on again", n)
		}
	}

	// The proxy's own health is read per request: no Sync needed.
	f.healthy.Store(false)
	assertAnswer(t, ask(t, used, "GET", "/"), 503, "ns", "svc", 7, false)
	f.healthy.Store(true)
	assertAnswer(t, ask(t, used, "GET", "/"), 200, "ns", "svc", 7, true)
}

// TestRemovalClosesPort: a Service that leaves closes its port and its
// connections at once; the others keep theirs; the port can come back.
func TestRemovalClosesPort(t *testing.T) {
	f := newFixture(t)
	pa, pb := freePort(t), freePort(t)
	a := Service{Namespace: "ns", Name: "a", Port: pa, LocalEndpoints: 1}
	b := Service{Namespace: "ns", Name: "b", Port: pb, LocalEndpoints: 2}
	f.mustSync(t, a, b)
	if n := f.Serving(); n != 2 {
		t.Fatalf("Serving() = %d, want 2", n)
	}
	ca := dial(t, hostPort(lo, pa))
	assertAnswer(t, ask(t, ca, "GET", "/"), 200, "ns", "a", 1, true)
	cb := dial(t, hostPort(lo, pb))
	assertAnswer(t, ask(t, cb, "GET", "/"), 200, "ns", "b", 2, true)

	f.mustSync(t, b)
	assertRefused(t, hostPort(lo, pa))
	// The idle keep-alive connection to the removed port is closed.
	if err := ca.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if n, err := ca.Read(make([]byte, 1)); err != io.EOF && !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("read on a connection to the removed port: %d bytes, %v; want EOF", n, err)
	}
	assertAnswer(t, ask(t, cb, "GET", "/"), 200, "ns", "b", 2, true)
	if n := f.Serving(); n != 1 {
		t.Fatalf("Serving() = %d, want 1", n)
	}

	f.mustSync(t, a, b)
	assertAnswer(t, get(t, hostPort(lo, pa)), 200, "ns", "a", 1, true)

	f.mustSync(t)
	assertRefused(t, hostPort(lo, pa))
	assertRefused(t, hostPort(lo, pb))
	if n := f.Serving(); n != 0 {
		t.Fatalf("Serving() = %d, want 0", n)
	}
}

// TestPortInUse: a port something else holds is reported with the
// Service's name and the reason, the others serve, and the next Sync
// takes the port once it is free.
func TestPortInUse(t *testing.T) {
	f := newFixture(t)
	other, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	pa := uint16(other.Addr().(*net.TCPAddr).Port)
	pb := freePort(t)
	a := Service{Namespace: "shop", Name: "taken", Port: pa, LocalEndpoints: 1}
	b := Service{Namespace: "shop", Name: "free", Port: pb, LocalEndpoints: 1}

	errs := f.Sync([]Service{a, b})
	if len(errs) != 1 {
		t.Fatalf("Sync: %d errors (%s), want 1", len(errs), errText(errs))
	}
	msg := errs[0].Error()
	for _, want := range []string{"shop/taken", "healthCheckNodePort " + strconv.Itoa(int(pa)), "address already in use"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not say %q", msg, want)
		}
	}
	if !errors.Is(errs[0], syscall.EADDRINUSE) {
		t.Errorf("error %q is not EADDRINUSE", msg)
	}
	assertAnswer(t, get(t, hostPort(lo, pb)), 200, "shop", "free", 1, true)
	if n := f.Serving(); n != 1 {
		t.Errorf("Serving() = %d, want 1", n)
	}

	// Reported at every Sync while it lasts: the desired state still asks.
	if errs := f.Sync([]Service{a, b}); len(errs) != 1 || !strings.Contains(errs[0].Error(), "shop/taken") {
		t.Fatalf("second Sync: %s, want the same one error", errText(errs))
	}
	other.Close()
	f.mustSync(t, a, b)
	assertAnswer(t, get(t, hostPort(lo, pa)), 200, "shop", "taken", 1, true)
}

// TestPortInUseOnOneAddress: a port taken on one of the node's addresses
// is served on none, so it is never half owned, and is taken whole when
// free.
func TestPortInUseOnOneAddress(t *testing.T) {
	f := newFixture(t)
	f.addrs.set(lo, lo2)
	p := freePort(t)
	other, err := net.Listen("tcp", hostPort(lo2, p))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	svc := Service{Namespace: "ns", Name: "svc", Port: p, LocalEndpoints: 1}
	if errs := f.Sync([]Service{svc}); len(errs) != 1 || !strings.Contains(errs[0].Error(), "ns/svc") {
		t.Fatalf("Sync: %s, want one error naming ns/svc", errText(errs))
	}
	assertRefused(t, hostPort(lo, p))
	other.Close()
	f.mustSync(t, svc)
	assertAnswer(t, get(t, hostPort(lo, p)), 200, "ns", "svc", 1, true)
	assertAnswer(t, get(t, hostPort(lo2, p)), 200, "ns", "svc", 1, true)
}

// TestDuplicatePort: of two Services with one healthCheckNodePort the
// first by namespace/name keeps it, whatever the order given; the other is
// reported by name.
func TestDuplicatePort(t *testing.T) {
	p := freePort(t)
	first := Service{Namespace: "a", Name: "z", Port: p, LocalEndpoints: 1}
	second := Service{Namespace: "b", Name: "a", Port: p, LocalEndpoints: 0}
	for _, order := range [][]Service{{first, second}, {second, first}} {
		f := newFixture(t)
		errs := f.Sync(order)
		if len(errs) != 1 {
			t.Fatalf("Sync(%v): %d errors (%s), want 1", order, len(errs), errText(errs))
		}
		msg := errs[0].Error()
		if !strings.HasPrefix(msg, "b/a: ") || !strings.Contains(msg, "a/z") || !strings.Contains(msg, strconv.Itoa(int(p))) {
			t.Errorf("error %q: want it to name b/a, the port and a/z", msg)
		}
		assertAnswer(t, get(t, hostPort(lo, p)), 200, "a", "z", 1, true)
		f.Close()
	}
}

func TestPortZero(t *testing.T) {
	f := newFixture(t)
	p := freePort(t)
	errs := f.Sync([]Service{{Namespace: "ns", Name: "zero"}, {Namespace: "ns", Name: "ok", Port: p, LocalEndpoints: 1}})
	if len(errs) != 1 || !strings.HasPrefix(errs[0].Error(), "ns/zero: ") {
		t.Fatalf("Sync: %s, want one error naming ns/zero", errText(errs))
	}
	assertAnswer(t, get(t, hostPort(lo, p)), 200, "ns", "ok", 1, true)
}

// TestPortChangesService: a port that passes from one Service to another
// in one Sync keeps its listener and connections and answers for the new
// one.
func TestPortChangesService(t *testing.T) {
	f := newFixture(t)
	p := freePort(t)
	f.mustSync(t, Service{Namespace: "ns", Name: "old", Port: p, LocalEndpoints: 1})
	c := dial(t, hostPort(lo, p))
	assertAnswer(t, ask(t, c, "GET", "/"), 200, "ns", "old", 1, true)
	f.mustSync(t, Service{Namespace: "ns", Name: "new", Port: p, LocalEndpoints: 4})
	assertAnswer(t, ask(t, c, "GET", "/"), 200, "ns", "new", 4, true)
}

// TestAddressesChange: the node's addresses are read at every Sync; a
// port follows them, keeping the listeners on the addresses that stay.
func TestAddressesChange(t *testing.T) {
	f := newFixture(t)
	p := freePort(t)
	svc := Service{Namespace: "ns", Name: "svc", Port: p, LocalEndpoints: 1}
	f.mustSync(t, svc)
	assertRefused(t, hostPort(lo2, p))
	c := dial(t, hostPort(lo, p))

	f.addrs.set(lo, lo2)
	f.mustSync(t, svc)
	assertAnswer(t, ask(t, c, "GET", "/"), 200, "ns", "svc", 1, true) // 127.0.0.1 kept
	assertAnswer(t, get(t, hostPort(lo2, p)), 200, "ns", "svc", 1, true)

	f.addrs.set(lo2)
	f.mustSync(t, svc)
	assertRefused(t, hostPort(lo, p))
	assertAnswer(t, get(t, hostPort(lo2, p)), 200, "ns", "svc", 1, true)

	// Every address, then one again: the wildcard and a single address of
	// one port exclude each other, so the old ones must go first.
	f.addrs.set()
	f.mustSync(t, svc)
	assertAnswer(t, get(t, hostPort(lo, p)), 200, "ns", "svc", 1, true)
	assertAnswer(t, get(t, hostPort(lo2, p)), 200, "ns", "svc", 1, true)
	f.addrs.set(lo)
	f.mustSync(t, svc)
	assertAnswer(t, get(t, hostPort(lo, p)), 200, "ns", "svc", 1, true)
	assertRefused(t, hostPort(lo2, p))
}

// TestAllAddresses: no addresses given means every address of the node.
func TestAllAddresses(t *testing.T) {
	f := newFixture(t)
	f.addrs.set()
	p := freePort(t)
	f.mustSync(t, Service{Namespace: "ns", Name: "svc", Port: p, LocalEndpoints: 1})
	for _, a := range []netip.Addr{lo, lo2} {
		assertAnswer(t, get(t, hostPort(a, p)), 200, "ns", "svc", 1, true)
	}
	nilAddrs := New(nil, nil, nil) // nil listenAddrs and proxyHealthy
	defer nilAddrs.Close()
	q := freePort(t)
	if errs := nilAddrs.Sync([]Service{{Namespace: "ns", Name: "x", Port: q, LocalEndpoints: 1}}); len(errs) != 0 {
		t.Fatal(errText(errs))
	}
	assertAnswer(t, get(t, hostPort(lo2, q)), 200, "ns", "x", 1, true)
}

func TestAddrsNormalized(t *testing.T) {
	f := newFixture(t)
	f.addrs.set(netip.MustParseAddr("::ffff:127.0.0.2"), lo, lo2, netip.Addr{}, lo)
	got := f.Server.addrs()
	if want := []netip.Addr{lo, lo2}; len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("addrs() = %v, want %v", got, want)
	}
}

func TestClose(t *testing.T) {
	f := newFixture(t)
	p := freePort(t)
	f.mustSync(t, Service{Namespace: "ns", Name: "svc", Port: p, LocalEndpoints: 1})
	c := dial(t, hostPort(lo, p))
	assertAnswer(t, ask(t, c, http.MethodGet, "/"), 200, "ns", "svc", 1, true)
	if err := f.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	assertRefused(t, hostPort(lo, p))
	if errs := f.Sync([]Service{{Namespace: "ns", Name: "svc", Port: p}}); len(errs) != 1 {
		t.Fatalf("Sync after Close: %v, want an error", errs)
	}
	assertRefused(t, hostPort(lo, p))
	if n := f.Serving(); n != 0 {
		t.Errorf("Serving() after Close = %d", n)
	}
}
