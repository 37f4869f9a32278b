package frontendnames

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

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
