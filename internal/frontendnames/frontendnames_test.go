package frontendnames

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/sluice-lb/sluice/control"
)

func TestTableServesTheLastState(t *testing.T) {
	tbl := &Table{}
	srv := httptest.NewServer(tbl)
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")

	got, err := Fetch(context.Background(), addr)
	if err != nil || len(got) != 0 {
		t.Fatalf("before a sync: %v %v, want an empty table", got, err)
	}

	web := control.Frontend{Addr: netip.MustParseAddr("10.96.0.10"), Port: 80, Proto: control.TCP}
	dns := control.Frontend{Addr: netip.MustParseAddr("10.96.0.53"), Port: 53, Proto: control.UDP}
	tbl.Set(&control.State{Ports: map[control.Frontend]*control.ServicePort{
		web: {Name: control.ServicePortName{Namespace: "shop", Name: "web", Port: "http", Proto: control.TCP}, Frontend: web},
		dns: {Name: control.ServicePortName{Namespace: "kube-system", Name: "dns", Proto: control.UDP}, Frontend: dns},
	}})
	got, err = Fetch(context.Background(), addr)
	if err != nil {
		t.Fatal(err)
	}
	if e := got["10.96.0.10:80/TCP"]; e.Service() != "shop/web" || e.Port != "http" {
		t.Errorf("web: %+v", e)
	}
	if e := got["10.96.0.53:53/UDP"]; e.Service() != "kube-system/dns" || e.Port != "" {
		t.Errorf("dns: %+v", e)
	}
	if len(got) != 2 {
		t.Errorf("%d entries, want 2: %v", len(got), got)
	}

	tbl.Set(&control.State{Ports: map[control.Frontend]*control.ServicePort{}})
	if got, err = Fetch(context.Background(), addr); err != nil || len(got) != 0 {
		t.Errorf("after the Services went: %v %v", got, err)
	}

	resp, err := http.Post(srv.URL+Path, "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST: %s, want 405", resp.Status)
	}
}

// With a loop to ask, a request waits for the loop's next sync and answers
// with that state; a loop that never syncs gets a 503, not a stale table.
func TestRequestAsksTheLoop(t *testing.T) {
	web := control.Frontend{Addr: netip.MustParseAddr("10.96.0.10"), Port: 80, Proto: control.TCP}
	state := &control.State{Ports: map[control.Frontend]*control.ServicePort{
		web: {Name: control.ServicePortName{Namespace: "shop", Name: "web"}, Frontend: web},
	}}
	tbl := &Table{}
	syncs := make(chan struct{}, 10)
	tbl.Refresh = func() { syncs <- struct{}{} }
	go func() { // the sync loop: each sync hands the state over if asked
		for range syncs {
			if tbl.Wanted() {
				tbl.Set(state)
			}
		}
	}()
	defer close(syncs)
	srv := httptest.NewServer(tbl)
	defer srv.Close()
	got, err := Fetch(context.Background(), strings.TrimPrefix(srv.URL, "http://"))
	if err != nil || got["10.96.0.10:80/TCP"].Service() != "shop/web" {
		t.Errorf("%v %v", got, err)
	}
	if tbl.Wanted() {
		t.Error("still wanted after the answer")
	}

	idle := &Table{Refresh: func() {}, Timeout: 10 * time.Millisecond}
	idleSrv := httptest.NewServer(idle)
	defer idleSrv.Close()
	if _, err := Fetch(context.Background(), strings.TrimPrefix(idleSrv.URL, "http://")); err == nil || !strings.Contains(err.Error(), "503") {
		t.Errorf("loop that never syncs: %v, want a 503", err)
	}
}

// The sync loop pays Set after every sync that compared frontends.
func BenchmarkSet10k(b *testing.B) {
	s := &control.State{Ports: map[control.Frontend]*control.ServicePort{}}
	for i := range 10000 {
		fe := control.Frontend{Addr: netip.AddrFrom4([4]byte{10, 96, byte(i >> 8), byte(i)}), Port: 80, Proto: control.TCP}
		s.Ports[fe] = &control.ServicePort{Name: control.ServicePortName{Namespace: "ns", Name: "svc", Port: "http"}, Frontend: fe}
	}
	tbl := &Table{}
	for b.Loop() {
		tbl.Set(s)
	}
}
