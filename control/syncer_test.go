package control

import (
	"fmt"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

func newTestSyncer(t *testing.T) (*Syncer, *[]SyncReport) {
	t.Helper()
	lb := newMaps(t, nil)
	rec, err := NewReconciler(lb, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	var reports []SyncReport
	s := NewSyncer(rec, NodeInfo{Name: "n"}, 0, time.Hour, slog.Default(), SyncHooks{
		Done: func(r SyncReport) { reports = append(reports, r) },
	})
	return s, &reports
}

// Rule 31: nothing is programmed until the source has delivered its first
// complete list; the first sync after it is full.
func TestSyncerWaitsForTheFirstList(t *testing.T) {
	s, reports := newTestSyncer(t)
	s.Store.UpsertService(svc("a", "10.96.0.1"))
	s.Store.UpsertSlice(slice("a-1", "a", httpPort(8080), ready("10.0.0.1")))
	if err := s.sync(false); err != nil {
		t.Fatal(err)
	}
	if len(*reports) != 0 || s.rec.Frontends() != 0 {
		t.Fatalf("synced before the list was complete: %d reports, %d frontends", len(*reports), s.rec.Frontends())
	}
	s.Store.Synced()
	if err := s.sync(false); err != nil {
		t.Fatal(err)
	}
	if len(*reports) != 1 || !(*reports)[0].Full || s.rec.Frontends() != 1 {
		t.Fatalf("reports %+v, %d frontends; want one full sync programming one", *reports, s.rec.Frontends())
	}
}

// A change of one EndpointSlice among many compares and writes one
// frontend, and reports the slice's trigger time.
func TestSyncerPartialSyncWritesOnlyTheChange(t *testing.T) {
	s, reports := newTestSyncer(t)
	const n = 500
	for i := range n {
		name := fmt.Sprintf("s%d", i)
		s.Store.UpsertService(svc(name, fmt.Sprintf("10.96.%d.%d", i/250, i%250+1)))
		s.Store.UpsertSlice(slice(name+"-1", name, httpPort(8080), ready(fmt.Sprintf("10.1.%d.%d", i/250, i%250+1))))
	}
	s.Store.Synced()
	if err := s.sync(false); err != nil {
		t.Fatal(err)
	}
	trigger := time.Now().Add(-time.Second).UTC().Truncate(time.Millisecond)
	es := slice("s7-1", "s7", httpPort(8080), ready("10.1.0.8"), ready("10.2.0.8"))
	es.Annotations = map[string]string{AnnotationTriggerTime: trigger.Format(time.RFC3339Nano)}
	s.Store.UpsertSlice(es)
	if err := s.sync(false); err != nil {
		t.Fatal(err)
	}
	rep := (*reports)[len(*reports)-1]
	if rep.Full || rep.Changed != 1 || rep.Stats.FrontendsWritten != 1 || rep.Stats.BackendsAdded != 1 {
		t.Errorf("partial sync %+v: want 1 frontend compared and written, 1 backend added", rep)
	}
	if len(rep.Triggers) != 1 || !rep.Triggers[0].Equal(trigger) {
		t.Errorf("triggers %v, want [%s]", rep.Triggers, trigger)
	}
	// The same slice again (a relist): nothing written, no trigger.
	s.Store.UpsertSlice(es)
	if err := s.sync(false); err != nil {
		t.Fatal(err)
	}
	rep = (*reports)[len(*reports)-1]
	if rep.Stats.FrontendsWritten != 0 || len(rep.Triggers) != 0 {
		t.Errorf("relist wrote %d frontends, triggers %v", rep.Stats.FrontendsWritten, rep.Triggers)
	}
}

// A full resync repairs entries changed behind sluice's back.
func TestSyncerFullSyncRepairs(t *testing.T) {
	s, _ := newTestSyncer(t)
	s.Store.UpsertService(svc("a", "10.96.0.1"))
	s.Store.UpsertSlice(slice("a-1", "a", httpPort(8080), ready("10.0.0.1")))
	s.Store.Synced()
	if err := s.sync(false); err != nil {
		t.Fatal(err)
	}
	want := listing(t, s.rec.lb)
	// Someone deletes the backend slot with bpftool.
	if err := s.rec.lb.Services.Delete(lbKey(Frontend{netip.MustParseAddr("10.96.0.1"), 80, TCP}, 1)); err != nil {
		t.Fatal(err)
	}
	if err := s.sync(false); err != nil {
		t.Fatal(err)
	}
	if got := listing(t, s.rec.lb); got == want {
		t.Fatalf("a partial sync without changes repaired the map: the test proves nothing")
	}
	if err := s.sync(true); err != nil {
		t.Fatal(err)
	}
	if got := listing(t, s.rec.lb); got != want {
		t.Errorf("after the full resync\n%s\nwant\n%s", got, want)
	}
}

// Problems are counted by kind, from both the desired state and the
// source.
func TestSyncerCountsSkippedObjects(t *testing.T) {
	s, reports := newTestSyncer(t)
	s.Store.UpsertService(svc("a", "10.96.0.1", withPorts(corev1.ServicePort{Name: "x", Port: 80, Protocol: corev1.ProtocolSCTP})))
	bad := slice("b-1", "b", httpPort(8080), ready("not-an-ip"))
	s.Store.UpsertService(svc("b", "10.96.0.2"))
	s.Store.UpsertSlice(bad)
	s.Store.UpsertSlice(&discoveryv1.EndpointSlice{})
	s.Store.Skipped([]Problem{{Object: "manifest x.yaml", Reason: "does not parse", Kind: SkipInvalidManifest}})
	s.Store.Synced()
	if err := s.sync(false); err != nil {
		t.Fatal(err)
	}
	got := (*reports)[0].Skipped
	want := map[string]int{SkipProtocol: 1, SkipInvalidIP: 1, SkipInvalidManifest: 1}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("skipped %v, want %v", got, want)
			break
		}
	}
}
