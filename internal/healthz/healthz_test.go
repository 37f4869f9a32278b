package healthz

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

const timeout = 30 * time.Second

var t0 = time.Date(2026, 12, 1, 10, 0, 0, 123456789, time.UTC)

// fakeServer returns a server on a clock that moves only when advance is
// called.
func fakeServer() (s *Server, advance func(time.Duration)) {
	now := t0
	s = New(timeout)
	s.now = func() time.Time { return now }
	return s, func(d time.Duration) { now = now.Add(d) }
}

type response struct {
	code int
	body map[string]any
	hdr  http.Header
}

func get(t *testing.T, h http.Handler, path string) response {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	r := response{code: rec.Code, hdr: rec.Header()}
	if err := json.Unmarshal(rec.Body.Bytes(), &r.body); err != nil {
		t.Fatalf("GET %s: body %q: %v", path, rec.Body.String(), err)
	}
	return r
}

func TestHealth(t *testing.T) {
	type step func(s *Server, advance func(time.Duration))
	queued := func(s *Server, _ func(time.Duration)) { s.QueuedUpdate() }
	updated := func(s *Server, _ func(time.Duration)) { s.Updated() }
	wait := func(d time.Duration) step { return func(_ *Server, adv func(time.Duration)) { adv(d) } }
	eligible := func(e bool) step { return func(s *Server, _ func(time.Duration)) { s.SetNodeEligible(e) } }

	tests := []struct {
		name           string
		steps          []step
		healthz, livez int
		// lastUpdated expected while unhealthy, as an offset from t0;
		// -1 is the zero time (never synced). While healthy it must be
		// currentTime.
		lastUpdated time.Duration
		eligible    bool
	}{
		// Before the first sync /healthz (readiness) says 503, /livez 200.
		{name: "not ready at start", healthz: 503, livez: 200, lastUpdated: -1, eligible: true},
		{name: "long after start, never synced", steps: []step{wait(time.Hour)},
			healthz: 503, livez: 200, lastUpdated: -1, eligible: true},
		{name: "synced once, nothing queued", steps: []step{updated, wait(time.Hour)},
			healthz: 200, livez: 200, eligible: true},
		{name: "queued within timeout", steps: []step{updated, queued, wait(timeout - time.Second)},
			healthz: 200, livez: 200, eligible: true},
		{name: "queued exactly the timeout ago", steps: []step{updated, queued, wait(timeout)},
			healthz: 200, livez: 200, eligible: true},
		{name: "queued within timeout, never synced", steps: []step{queued, wait(timeout - time.Second)},
			healthz: 503, livez: 200, lastUpdated: -1, eligible: true},
		{name: "queued past timeout, never synced", steps: []step{queued, wait(timeout + time.Millisecond)},
			healthz: 503, livez: 503, lastUpdated: -1, eligible: true},
		{name: "second queue keeps the oldest",
			steps:   []step{queued, wait(20 * time.Second), queued, wait(11 * time.Second)},
			healthz: 503, livez: 503, lastUpdated: -1, eligible: true},
		{name: "updated after a late queue", steps: []step{queued, wait(time.Minute), updated},
			healthz: 200, livez: 200, eligible: true},
		{name: "late queue after a sync reports that sync",
			steps:   []step{wait(5 * time.Second), updated, wait(time.Hour), queued, wait(timeout + time.Second)},
			healthz: 503, livez: 503, lastUpdated: 5 * time.Second, eligible: true},
		{name: "queue after an old sync, within timeout",
			steps:   []step{updated, wait(time.Hour), queued, wait(time.Second)},
			healthz: 200, livez: 200, eligible: true},
		{name: "updated then queued again restarts the wait",
			steps:   []step{queued, wait(20 * time.Second), updated, queued, wait(20 * time.Second)},
			healthz: 200, livez: 200, eligible: true},
		{name: "node not eligible", steps: []step{eligible(false)},
			healthz: 503, livez: 200, lastUpdated: -1, eligible: false},
		{name: "node eligible again", steps: []step{updated, eligible(false), eligible(true)},
			healthz: 200, livez: 200, eligible: true},
		{name: "node not eligible and late", steps: []step{updated, eligible(false), queued, wait(time.Minute)},
			healthz: 503, livez: 503, lastUpdated: 0, eligible: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, advance := fakeServer()
			for _, st := range tt.steps {
				st(s, advance)
			}
			h := s.Handler()
			now := s.now().Format(time.RFC3339Nano)
			for _, p := range []struct {
				path     string
				want     int
				eligible bool // body has nodeEligible
			}{{"/healthz", tt.healthz, true}, {"/livez", tt.livez, false}} {
				r := get(t, h, p.path)
				if r.code != p.want {
					t.Errorf("%s: status %d, want %d (body %v)", p.path, r.code, p.want, r.body)
				}
				if got := r.body["currentTime"]; got != now {
					t.Errorf("%s: currentTime %v, want %s", p.path, got, now)
				}
				wantLast := now
				if p.want != 200 {
					wantLast = time.Time{}.Format(time.RFC3339Nano)
					if tt.lastUpdated >= 0 {
						wantLast = t0.Add(tt.lastUpdated).Format(time.RFC3339Nano)
					}
				}
				if got := r.body["lastUpdated"]; got != wantLast {
					t.Errorf("%s: lastUpdated %v, want %s", p.path, got, wantLast)
				}
				got, has := r.body["nodeEligible"]
				if p.eligible && got != tt.eligible {
					t.Errorf("%s: nodeEligible %v, want %v", p.path, got, tt.eligible)
				}
				if !p.eligible && has {
					t.Errorf("%s: body has nodeEligible (%v); kube-proxy's /livez has none", p.path, got)
				}
			}
			if got, want := s.Healthy(), tt.livez == 200; got != want {
				t.Errorf("Healthy() = %v, want %v", got, want)
			}
		})
	}
}

func TestHeadersAndBody(t *testing.T) {
	s, advance := fakeServer()
	s.QueuedUpdate()
	for _, late := range []bool{false, true} {
		if late {
			advance(time.Hour)
		}
		for _, path := range []string{"/healthz", "/livez"} {
			rec := httptest.NewRecorder()
			s.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
			if got := rec.Header().Get("Content-Type"); got != "application/json" {
				t.Errorf("%s late=%v: Content-Type %q", path, late, got)
			}
			if got := rec.Header().Get("X-Content-Type-Options"); got != "nosniff" {
				t.Errorf("%s late=%v: X-Content-Type-Options %q", path, late, got)
			}
			// Exactly the fields kube-proxy returns, times in RFC 3339.
			var raw map[string]json.RawMessage
			if err := json.Unmarshal(rec.Body.Bytes(), &raw); err != nil {
				t.Fatalf("%s: %v: %s", path, err, rec.Body)
			}
			want := []string{"currentTime", "lastUpdated"}
			if path == "/healthz" {
				want = append(want, "nodeEligible")
			}
			if len(raw) != len(want) {
				t.Errorf("%s: fields %s, want %v", path, rec.Body, want)
			}
			for _, f := range want[:2] {
				var v string
				if err := json.Unmarshal(raw[f], &v); err != nil {
					t.Errorf("%s: %s: %v", path, f, err)
				} else if _, err := time.Parse(time.RFC3339Nano, v); err != nil {
					t.Errorf("%s: %s %q is not RFC 3339: %v", path, f, v, err)
				}
			}
		}
	}
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/other", nil))
	if rec.Code != http.StatusNotFound {
		t.Errorf("/other: status %d, want 404", rec.Code)
	}
}

func TestServeListener(t *testing.T) {
	s := New(timeout)
	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.ServeListener(ctx, ln) }()

	base := "http://" + ln.Addr().String()
	s.Updated()
	for _, tc := range []struct {
		before func()
		path   string
		want   int
	}{
		{func() {}, "/healthz", 200},
		{func() {}, "/livez", 200},
		{func() { s.SetNodeEligible(false) }, "/healthz", 503},
		{func() {}, "/livez", 200},
	} {
		tc.before()
		resp, err := http.Get(base + tc.path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("GET %s: %d, want %d: %s", tc.path, resp.StatusCode, tc.want, b)
		}
		if !strings.Contains(string(b), `"currentTime"`) {
			t.Errorf("GET %s: body %s", tc.path, b)
		}
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("ServeListener after cancel: %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ServeListener did not return after cancel")
	}
	if _, err := http.Get(base + "/healthz"); err == nil {
		t.Error("still serving after cancel")
	}
}

func TestServeCannotListen(t *testing.T) {
	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	addr := ln.Addr().String()
	err = New(timeout).Serve(context.Background(), addr)
	if err == nil || !strings.Contains(err.Error(), addr) {
		t.Fatalf("Serve on a taken address: %v, want an error naming %s", err, addr)
	}
	err = New(timeout).Serve(context.Background(), "256.0.0.1:10256")
	if err == nil || !strings.Contains(err.Error(), "256.0.0.1:10256") {
		t.Fatalf("Serve on a bad address: %v, want an error naming it", err)
	}
}

func TestServeReturnsOnCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- New(timeout).Serve(ctx, "127.0.0.1:0") }()
	time.Sleep(50 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve: %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}
}
