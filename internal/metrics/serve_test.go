package metrics

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func TestServeListener(t *testing.T) {
	m := New(nil)
	m.SyncFailed()
	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ServeListener(ctx, ln, Handler(m.Registry())) }()
	base := "http://" + ln.Addr().String()

	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET /metrics: %d: %s", resp.StatusCode, b)
	}
	for _, want := range []string{
		"sluice_sync_proxy_rules_failures_total 1\n",
		"# TYPE sluice_sync_proxy_rules_duration_seconds histogram\n",
		"go_goroutines ",
		"promhttp_metric_handler_requests_total",
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("GET /metrics: no %q", want)
		}
	}
	if resp, err := http.Get(base + "/"); err != nil {
		t.Fatal(err)
	} else if resp.Body.Close(); resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /: %d, want 404", resp.StatusCode)
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
}

func TestServe(t *testing.T) {
	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	addr := ln.Addr().String()
	if err := Serve(context.Background(), addr, http.NotFoundHandler()); err == nil || !strings.Contains(err.Error(), addr) {
		t.Errorf("Serve on a taken address: %v, want an error naming %s", err, addr)
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, "127.0.0.1:0", http.NotFoundHandler()) }()
	time.Sleep(50 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve after cancel: %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}
}

// failing is a collector whose read always fails, as a map that cannot be
// read.
type failing struct{ desc *prometheus.Desc }

func (f failing) Describe(ch chan<- *prometheus.Desc) { ch <- f.desc }
func (f failing) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.NewInvalidMetric(f.desc, errors.New("read ct4: bad file descriptor"))
}

// TestHandlerServesDespiteFailedCollector: one map that cannot be read
// must not blank the whole scrape.
func TestHandlerServesDespiteFailedCollector(t *testing.T) {
	m := New(nil)
	m.SetProgrammed(1, 2, 3)
	m.Registry().MustRegister(failing{prometheus.NewDesc("sluice_map_entries", "h", []string{"map"}, nil)})

	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go ServeListener(ctx, ln, Handler(m.Registry()))
	resp, err := http.Get("http://" + ln.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), "sluice_frontends_programmed 2") {
		t.Errorf("GET /metrics with a failing collector: %d, want 200 with the other metrics:\n%s", resp.StatusCode, b)
	}
	if strings.Contains(string(b), "sluice_map_entries{") {
		t.Error("the failed series was served")
	}
}
