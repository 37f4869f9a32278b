package healthcheck

import (
	"net/http"
	"slices"
	"strconv"
	"testing"
)

// TestResponseBytes pins the answer, byte for byte, to rule 28: the body
// on one line without a trailing newline, the three headers, 200 only with
// local endpoints and a healthy proxy.
func TestResponseBytes(t *testing.T) {
	tests := []struct {
		name      string
		endpoints int
		healthy   bool
		code      int
		body      string
	}{
		{"local endpoints", 2, true, 200, `{"service":{"namespace":"shop","name":"web-lb"},"localEndpoints":2,"serviceProxyHealthy":true}`},
		// What a node whose local endpoints are all terminating is told
		// (they are not counted), as one with none.
		{"no local ready endpoints", 0, true, 503, `{"service":{"namespace":"shop","name":"web-lb"},"localEndpoints":0,"serviceProxyHealthy":true}`},
		{"proxy unhealthy", 3, false, 503, `{"service":{"namespace":"shop","name":"web-lb"},"localEndpoints":3,"serviceProxyHealthy":false}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			f.healthy.Store(tt.healthy)
			p := freePort(t)
			f.mustSync(t, Service{Namespace: "shop", Name: "web-lb", Port: p, LocalEndpoints: tt.endpoints})
			a := get(t, hostPort(lo, p))
			if a.code != tt.code {
				t.Errorf("status %d, want %d", a.code, tt.code)
			}
			if a.body != tt.body {
				t.Errorf("body\n%q\nwant\n%q", a.body, tt.body)
			}
			for h, want := range map[string]string{
				"Content-Type":                     "application/json",
				"X-Content-Type-Options":           "nosniff",
				"X-Load-Balancing-Endpoint-Weight": strconv.Itoa(tt.endpoints),
				"Content-Length":                   strconv.Itoa(len(tt.body)),
			} {
				if got := a.hdr.Values(h); !slices.Equal(got, []string{want}) {
					t.Errorf("%s: %q, want [%q]", h, got, want)
				}
			}
		})
	}
}

// TestAnyPathAndMethod: a load balancer may probe any path with any
// method; each gets the same answer (HEAD without the body).
func TestAnyPathAndMethod(t *testing.T) {
	f := newFixture(t)
	p := freePort(t)
	f.mustSync(t, Service{Namespace: "ns", Name: "svc", Port: p, LocalEndpoints: 1})
	c := dial(t, hostPort(lo, p)) // one connection for all: keep-alive works too
	want := wantBody("ns", "svc", 1, true)
	for _, method := range []string{"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "PROPFIND"} {
		for _, target := range []string{"/", "/healthz", "/livez", "/a/b/c?x=1&y", "/%2e%2e/"} {
			a := ask(t, c, method, target)
			if a.code != http.StatusOK {
				t.Errorf("%s %s: status %d, want 200", method, target, a.code)
			}
			body := want
			if method == "HEAD" {
				body = ""
			}
			if a.body != body {
				t.Errorf("%s %s: body %q, want %q", method, target, a.body, body)
			}
			if got := a.hdr.Get("Content-Length"); got != strconv.Itoa(len(want)) {
				t.Errorf("%s %s: Content-Length %q, want %d", method, target, got, len(want))
			}
		}
	}
	if a := ask(t, c, "OPTIONS", "*"); a.code != http.StatusOK || a.body != want {
		t.Errorf("OPTIONS *: %d %q", a.code, a.body)
	}
}
