package kube

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/sluice-lb/sluice/control"
)

// waitTimeout bounds every wait for a sink call or a log record. The
// real API server's test restarts it, and the informers' backoff may
// then take several seconds to reconnect.
const waitTimeout = 30 * time.Second

// recorder is a control.Sink that records every call, keeps the objects
// it was handed, and fails the test if two calls overlap.
type recorder struct {
	t      *testing.T
	inCall atomic.Int32
	slow   time.Duration // how long each call takes; set before use

	mu       sync.Mutex
	calls    []string
	services map[string]*corev1.Service
	slices   map[string]*discoveryv1.EndpointSlice
	node     control.NodeInfo
	synced   bool
	// atSync is what had been delivered when Synced was called.
	atSync  struct{ services, slices int }
	changed chan struct{} // closed at every call
}

func newRecorder(t *testing.T) *recorder {
	return &recorder{
		t:        t,
		services: map[string]*corev1.Service{},
		slices:   map[string]*discoveryv1.EndpointSlice{},
		changed:  make(chan struct{}),
	}
}

func (r *recorder) record(f func(), format string, args ...any) {
	if r.inCall.Add(1) != 1 {
		r.t.Errorf("concurrent sink calls (at %s)", fmt.Sprintf(format, args...))
	}
	defer r.inCall.Add(-1)
	if r.slow > 0 {
		time.Sleep(r.slow)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if f != nil {
		f()
	}
	r.calls = append(r.calls, fmt.Sprintf(format, args...))
	close(r.changed)
	r.changed = make(chan struct{})
}

func (r *recorder) UpsertService(s *corev1.Service) {
	r.record(func() { r.services[s.Namespace+"/"+s.Name] = s }, "UpsertService %s/%s rv=%s", s.Namespace, s.Name, s.ResourceVersion)
}

func (r *recorder) DeleteService(ns, name string) {
	r.record(func() { delete(r.services, ns+"/"+name) }, "DeleteService %s/%s", ns, name)
}

func (r *recorder) UpsertSlice(s *discoveryv1.EndpointSlice) {
	r.record(func() { r.slices[s.Namespace+"/"+s.Name] = s }, "UpsertSlice %s/%s rv=%s", s.Namespace, s.Name, s.ResourceVersion)
}

func (r *recorder) DeleteSlice(ns, name string) {
	r.record(func() { delete(r.slices, ns+"/"+name) }, "DeleteSlice %s/%s", ns, name)
}

func (r *recorder) SetNode(n control.NodeInfo) {
	r.record(func() { r.node = n }, "SetNode %s zone=%s ips=%s", n.Name, n.Zone, n.InternalIPs)
}

func (r *recorder) Synced() {
	r.record(func() {
		if r.synced {
			r.t.Errorf("Synced called twice")
		}
		r.synced = true
		r.atSync.services, r.atSync.slices = len(r.services), len(r.slices)
	}, "Synced")
}

func (r *recorder) Skipped(p []control.Problem) {
	r.record(nil, "Skipped %v", p)
}

// waitFor waits until cond, called with the recorder locked, holds.
func (r *recorder) waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(waitTimeout)
	for {
		r.mu.Lock()
		ok, ch := cond(), r.changed
		r.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("timed out waiting for %s; calls:\n%s", what, strings.Join(r.snapshot(), "\n"))
		}
	}
}

// waitCall waits for a call that is exactly c and returns its index.
func (r *recorder) waitCall(t *testing.T, c string) int {
	t.Helper()
	i := -1
	r.waitFor(t, c, func() bool { i = slices.Index(r.calls, c); return i >= 0 })
	return i
}

func (r *recorder) snapshot() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.calls)
}

func (r *recorder) count(prefix string) int {
	n := 0
	for _, c := range r.snapshot() {
		if strings.HasPrefix(c, prefix) {
			n++
		}
	}
	return n
}

// objects returns the Services and EndpointSlices the sink holds, sorted.
func (r *recorder) objects() ([]*corev1.Service, []*discoveryv1.EndpointSlice, control.NodeInfo) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var svcs []*corev1.Service
	for _, k := range slices.Sorted(maps.Keys(r.services)) {
		svcs = append(svcs, r.services[k])
	}
	var ess []*discoveryv1.EndpointSlice
	for _, k := range slices.Sorted(maps.Keys(r.slices)) {
		ess = append(ess, r.slices[k])
	}
	return svcs, ess, r.node
}

// logRecorder is a slog.Handler keeping every record.
type logRecorder struct {
	mu      sync.Mutex
	records []logRecord
	changed chan struct{}
}

type logRecord struct {
	level slog.Level
	msg   string
	attrs map[string]string
}

func newLogRecorder() *logRecorder { return &logRecorder{changed: make(chan struct{})} }

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }

func (l *logRecorder) Handle(_ context.Context, rec slog.Record) error {
	attrs := map[string]string{}
	rec.Attrs(func(a slog.Attr) bool { attrs[a.Key] = a.Value.String(); return true })
	l.mu.Lock()
	defer l.mu.Unlock()
	l.records = append(l.records, logRecord{rec.Level, rec.Message, attrs})
	close(l.changed)
	l.changed = make(chan struct{})
	return nil
}

func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logRecorder) WithGroup(string) slog.Handler      { return l }

// find returns the records for which match holds.
func (l *logRecorder) find(match func(logRecord) bool) []logRecord {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []logRecord
	for _, r := range l.records {
		if match(r) {
			out = append(out, r)
		}
	}
	return out
}

// waitFor waits until a record matches and returns it.
func (l *logRecorder) waitFor(t *testing.T, what string, match func(logRecord) bool) logRecord {
	t.Helper()
	deadline := time.After(waitTimeout)
	for {
		l.mu.Lock()
		ch := l.changed
		l.mu.Unlock()
		if found := l.find(match); len(found) > 0 {
			return found[0]
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("timed out waiting for a log record: %s", what)
		}
	}
}
