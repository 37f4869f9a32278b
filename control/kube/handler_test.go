package kube

import (
	"errors"
	"log/slog"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/sluice-lb/sluice/control"
)

func newTestRun(t *testing.T) (*run, *recorder, *logRecorder) {
	rec, logs := newRecorder(t), newLogRecorder()
	src := New(nil, nodeName, slog.New(logs))
	return &run{src: src, sink: rec, log: src.log, errs: map[string]*watchErrors{}}, rec, logs
}

// Tombstones straight into the handlers: every shape the informer can
// hand, the key is what counts.
func TestHandlerTombstones(t *testing.T) {
	r, rec, _ := newTestRun(t)
	svcs := handler[*corev1.Service]{r: r, kind: "Service", upsert: rec.UpsertService, remove: rec.DeleteService}
	nodes := handler[*corev1.Node]{r: r, kind: "Node", upsert: r.upsertNode, remove: r.deleteNode}

	svcs.OnDelete(cache.DeletedFinalStateUnknown{Key: "ns/gone", Obj: nil})
	svcs.OnDelete(cache.DeletedFinalStateUnknown{Key: "ns/stale", Obj: service("ns", "stale", "1", "10.96.0.1", nil)})
	svcs.OnDelete(cache.DeletedFinalStateUnknown{Key: "ns/odd", Obj: "not a Service"})
	svcs.OnDelete(cache.DeletedFinalStateUnknown{Key: "a/b/c"}) // invalid key: logged, ignored
	svcs.OnDelete(service("ns", "plain", "1", "10.96.0.1", nil))
	svcs.OnDelete(&corev1.Pod{}) // wrong type: logged, ignored
	nodes.OnDelete(cache.DeletedFinalStateUnknown{Key: nodeName})
	nodes.OnDelete(cache.DeletedFinalStateUnknown{Key: "node-b"})

	want := []string{
		"DeleteService ns/gone", "DeleteService ns/stale", "DeleteService ns/odd", "DeleteService ns/plain",
		"SetNode node-a zone= ips=",
	}
	if got := rec.snapshot(); !slices.Equal(got, want) {
		t.Errorf("calls %q\nwant  %q", got, want)
	}
}

func TestHandlerSkipsUnchangedResourceVersion(t *testing.T) {
	r, rec, _ := newTestRun(t)
	h := handler[*corev1.Service]{r: r, kind: "Service", upsert: rec.UpsertService, remove: rec.DeleteService}
	h.OnUpdate(service("ns", "a", "5", "10.96.0.1", nil), service("ns", "a", "5", "10.96.0.1", nil))
	h.OnUpdate(service("ns", "a", "5", "10.96.0.1", nil), service("ns", "a", "6", "10.96.0.1", nil))
	h.OnUpdate(service("ns", "a", "", "10.96.0.1", nil), service("ns", "a", "", "10.96.0.1", nil)) // no version: cannot tell
	if got, want := rec.snapshot(), []string{"UpsertService ns/a rv=6", "UpsertService ns/a rv="}; !slices.Equal(got, want) {
		t.Errorf("calls %q, want %q", got, want)
	}
}

func TestNoSinkCallsAfterStop(t *testing.T) {
	r, rec, _ := newTestRun(t)
	h := handler[*corev1.Service]{r: r, kind: "Service", upsert: rec.UpsertService, remove: rec.DeleteService}
	h.OnAdd(service("ns", "a", "1", "10.96.0.1", nil), true)
	r.stop()
	h.OnAdd(service("ns", "b", "1", "10.96.0.1", nil), false)
	h.OnDelete(service("ns", "a", "1", "10.96.0.1", nil))
	r.ensureNode()
	if got, want := rec.snapshot(), []string{"UpsertService ns/a rv=1"}; !slices.Equal(got, want) {
		t.Errorf("calls %q, want %q", got, want)
	}
}

func TestWatchErrorsRateLimited(t *testing.T) {
	r, _, logs := newTestRun(t)
	r.src.errorLogEvery = time.Hour
	onError := r.watchError("Service")
	warnings := func() []logRecord {
		return logs.find(func(l logRecord) bool { return l.level == slog.LevelWarn && l.attrs["kind"] == "Service" })
	}
	for range 3 {
		onError(ctx, nil, errors.New("connection refused"))
	}
	if got := warnings(); len(got) != 1 {
		t.Fatalf("%d warnings for 3 errors within errorLogEvery, want 1", len(got))
	}
	// Once errorLogEvery has passed, the next error is logged with the
	// count of those that were not.
	r.errs["Service"].logged = time.Now().Add(-2 * time.Hour)
	onError(ctx, nil, errors.New("connection reset"))
	got := warnings()
	if len(got) != 2 || got[1].attrs["suppressedSinceLast"] != "2" || got[1].attrs["err"] != "connection reset" {
		t.Errorf("second warning %+v, want err connection reset, suppressedSinceLast 2", got[len(got)-1])
	}
	r.watchError("EndpointSlice")(ctx, nil, errors.New("connection refused"))
	if n := len(logs.find(func(l logRecord) bool { return l.attrs["kind"] == "EndpointSlice" })); n != 1 {
		t.Errorf("another informer's first error: %d warnings, want 1 (limits are per informer)", n)
	}
}

// A Node being deleted or tainted by the cluster autoscaler is leaving:
// /healthz then says nodeEligible false.
func TestNodeInfoLeaving(t *testing.T) {
	now := metav1.Now()
	cases := []struct {
		name string
		node corev1.Node
		want bool
	}{
		{"plain", corev1.Node{}, false},
		{"other taint", corev1.Node{Spec: corev1.NodeSpec{Taints: []corev1.Taint{{Key: "x", Effect: corev1.TaintEffectNoSchedule}}}}, false},
		{"autoscaler taint", corev1.Node{Spec: corev1.NodeSpec{Taints: []corev1.Taint{{Key: control.TaintToBeDeleted, Effect: corev1.TaintEffectNoSchedule}}}}, true},
		{"being deleted", corev1.Node{ObjectMeta: metav1.ObjectMeta{DeletionTimestamp: &now}}, true},
	}
	for _, c := range cases {
		n := c.node
		n.Name = "node-a"
		// Through the transform, as the informer stores it.
		slim, err := strip(&n)
		if err != nil {
			t.Fatal(err)
		}
		if got := nodeInfo(slim.(*corev1.Node)).Leaving; got != c.want {
			t.Errorf("%s: leaving %v, want %v", c.name, got, c.want)
		}
	}
}
