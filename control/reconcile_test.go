package control

import (
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/sluice-lb/sluice/bpf"
	"github.com/sluice-lb/sluice/internal/testenv"
	"github.com/sluice-lb/sluice/maps"
)

// newMaps creates the datapath's maps, unpinned, with optional sizes.
func newMaps(t *testing.T, sizes map[string]uint32) maps.LB4 {
	t.Helper()
	return newDatapath(t, sizes).LB4
}

// newDatapath is newMaps with every map of the datapath.
func newDatapath(t *testing.T, sizes map[string]uint32) *maps.Datapath {
	t.Helper()
	testenv.Privileged(t)
	spec, err := bpf.LoadSluice()
	if err != nil {
		t.Fatal(err)
	}
	for name, m := range spec.Maps {
		m.Pinning = ebpf.PinNone
		if n, ok := sizes[name]; ok {
			m.MaxEntries = n
		}
	}
	var m bpf.SluiceMaps
	if err := spec.LoadAndAssign(&m, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return maps.FromObjects(&m)
}

func state(ports ...*ServicePort) *State {
	s := &State{Ports: map[Frontend]*ServicePort{}}
	for _, p := range ports {
		s.Ports[p.Frontend] = p
	}
	return s
}

// port is a ClusterIP service port; a backend written with a trailing
// "*" is Local.
func port(fe string, proto Protocol, bes ...string) *ServicePort {
	ap := netip.MustParseAddrPort(fe)
	return &ServicePort{
		Name:     ServicePortName{Namespace: "ns", Name: fe, Proto: proto},
		Frontend: Frontend{Addr: ap.Addr(), Port: ap.Port(), Proto: proto},
		Backends: backendList(bes...),
	}
}

func backendList(bes ...string) []Backend {
	var out []Backend
	for _, b := range bes {
		s, local := strings.CutSuffix(b, "*")
		bp := netip.MustParseAddrPort(s)
		out = append(out, Backend{Addr: bp.Addr(), Port: bp.Port(), Local: local})
	}
	slices.SortFunc(out, Backend.Compare)
	return out
}

func mustApply(t *testing.T, r *Reconciler, s *State) ApplyStats {
	t.Helper()
	stats, problems, err := r.Apply(s)
	if err != nil || len(problems) > 0 {
		t.Fatalf("apply: %v %v", err, problems)
	}
	return stats
}

func listing(t *testing.T, lb maps.LB4) string {
	t.Helper()
	views, err := Inspect(lb)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, v := range views {
		b.WriteString(v.Frontend + "/" + v.Protocol + ":")
		for _, be := range v.Backends {
			b.WriteString(" " + be.Address)
		}
		b.WriteString("\n")
	}
	return b.String()
}

func countEntries[K comparable, V any](t *testing.T, m *maps.Map[K, V], live func(V) bool) int {
	t.Helper()
	n := 0
	if err := m.Each(func(_ K, v V) bool {
		if live(v) {
			n++
		}
		return true
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestReconcilerProgramsUpdatesAndRemoves(t *testing.T) {
	lb := newMaps(t, nil)
	r, err := NewReconciler(lb, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	mustApply(t, r, state(
		port("10.96.0.1:80", TCP, "10.0.0.1:8080", "10.0.0.2:8080"),
		port("10.96.0.1:53", UDP, "10.0.0.1:53"),
		port("10.96.0.2:80", TCP),
	))
	want := "10.96.0.1:53/UDP: 10.0.0.1:53\n10.96.0.1:80/TCP: 10.0.0.1:8080 10.0.0.2:8080\n10.96.0.2:80/TCP:\n"
	if got := listing(t, lb); got != want {
		t.Fatalf("programmed\n%s\nwant\n%s", got, want)
	}

	// Shrink one, grow another, drop a third.
	stats := mustApply(t, r, state(
		port("10.96.0.1:80", TCP, "10.0.0.2:8080"),
		port("10.96.0.2:80", TCP, "10.0.0.3:80", "10.0.0.4:80"),
	))
	want = "10.96.0.1:80/TCP: 10.0.0.2:8080\n10.96.0.2:80/TCP: 10.0.0.3:80 10.0.0.4:80\n"
	if got := listing(t, lb); got != want {
		t.Fatalf("updated\n%s\nwant\n%s", got, want)
	}
	if stats.FrontendsRemoved != 1 || stats.BackendsAdded != 2 || stats.BackendsRemoved != 2 {
		t.Errorf("stats %+v", stats)
	}
	// Exactly: 2 markers + 2 masters + 3 slots.
	if n := countEntries(t, lb.Services, func(bpf.SluiceLb4Service) bool { return true }); n != 7 {
		t.Errorf("lb4_services holds %d entries, want 7", n)
	}

	// Everything removed: nothing is left behind.
	mustApply(t, r, state())
	if n := countEntries(t, lb.Services, func(bpf.SluiceLb4Service) bool { return true }); n != 0 {
		t.Errorf("lb4_services holds %d entries after removing all", n)
	}
	if n := countEntries(t, lb.Backends, func(b bpf.SluiceLb4Backend) bool { return b.Flags != 0 }); n != 0 {
		t.Errorf("%d backends left", n)
	}
	if n := countEntries(t, lb.RevNat, func(rn bpf.SluiceLb4ReverseNat) bool { return rn.Address != 0 }); n != 0 {
		t.Errorf("%d reverse NAT entries left", n)
	}
	if f, err := lb.Prefilter.Lookup(0); err != nil || f != (bpf.SluiceLb4Filter{}) {
		t.Errorf("prefilter not cleared (%v)", err)
	}
}

// A restarted agent adopts what is programmed: same ids (so conntrack
// entries stay valid), and applying the same state writes nothing.
func TestReconcilerAdoptsProgrammedState(t *testing.T) {
	lb := newMaps(t, nil)
	s := state(
		port("10.96.0.1:80", TCP, "10.0.0.1:8080", "10.0.0.2:8080"),
		port("10.96.0.2:80", TCP, "10.0.0.2:8080"),
	)
	r1, _ := NewReconciler(lb, slog.Default())
	mustApply(t, r1, s)
	before := listingWithIDs(t, lb)

	r2, err := NewReconciler(lb, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	if r2.Frontends() != 2 {
		t.Fatalf("adopted %d frontends, want 2", r2.Frontends())
	}
	if stats := mustApply(t, r2, s); stats != (ApplyStats{}) {
		t.Errorf("re-applying the adopted state changed %+v", stats)
	}
	if after := listingWithIDs(t, lb); after != before {
		t.Errorf("ids changed across restart:\n%s\n%s", before, after)
	}
	// New backends get fresh ids, not ones in use.
	mustApply(t, r2, state(port("10.96.0.1:80", TCP, "10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080")))
	views, _ := Inspect(lb)
	seen := map[uint32]string{}
	for _, v := range views {
		for _, b := range v.Backends {
			if other, dup := seen[b.ID]; dup && other != b.Address {
				t.Errorf("id %d used by %s and %s", b.ID, other, b.Address)
			}
			seen[b.ID] = b.Address
		}
	}
}

func listingWithIDs(t *testing.T, lb maps.LB4) string {
	views, err := Inspect(lb)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, v := range views {
		fmt.Fprintf(&b, "%s revnat %d:", v.Frontend, v.RevNatID)
		for _, be := range v.Backends {
			fmt.Fprintf(&b, " %s#%d", be.Address, be.ID)
		}
		b.WriteString("\n")
	}
	return b.String()
}

// An agent stopped between writing slots and the master entry leaves
// slots without a master; the next agent completes the frontend.
func TestReconcilerCompletesInterruptedApply(t *testing.T) {
	lb := newMaps(t, nil)
	fe := Frontend{Addr: netip.MustParseAddr("10.96.0.1"), Port: 80, Proto: TCP}
	if err := lb.Backends.Put(1, bpf.SluiceLb4Backend{Address: maps.Addr4(netip.MustParseAddr("10.0.0.1")), Port: maps.Port(8080), Proto: 6, Flags: bpf.SluiceLbBackendFlagsBE_F_ACTIVE}); err != nil {
		t.Fatal(err)
	}
	if err := lb.Services.Put(lbKey(fe, 1), bpf.SluiceLb4Service{BackendId: 1}); err != nil {
		t.Fatal(err)
	}
	r, err := NewReconciler(lb, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	mustApply(t, r, state(port("10.96.0.1:80", TCP, "10.0.0.1:8080")))
	master, err := lb.Services.Lookup(lbKey(fe, 0))
	if err != nil || master.Count != 1 || master.RevNatId == 0 {
		t.Fatalf("master %+v (%v): want count 1 and a reverse NAT id", master, err)
	}
	if rn, err := lb.RevNat.Lookup(master.RevNatId); err != nil || maps.AddrFrom4(rn.Address) != fe.Addr || maps.PortFrom(rn.Port) != 80 {
		t.Errorf("reverse NAT %+v (%v)", rn, err)
	}
}

// A full map refuses the services that do not fit, reports them, and
// keeps serving everything else, including what was already programmed.
func TestReconcilerFullMapKeepsOthers(t *testing.T) {
	lb := newMaps(t, map[string]uint32{bpf.SluiceMapLb4Backends: 4}) // ids 1-3
	r, _ := NewReconciler(lb, slog.Default())
	mustApply(t, r, state(port("10.96.0.1:80", TCP, "10.0.0.1:80", "10.0.0.2:80")))
	_, problems, err := r.Apply(state(
		port("10.96.0.1:80", TCP, "10.0.0.1:80", "10.0.0.5:80", "10.0.0.6:80"), // needs 2 new ids
		port("10.96.0.2:80", TCP, "10.0.0.3:80"),                               // needs 1
	))
	if err != nil {
		t.Fatal(err)
	}
	if len(problems) != 1 || !strings.Contains(problems[0].String(), "Service ns/10.96.0.1:80") || !strings.Contains(problems[0].String(), "full") {
		t.Fatalf("problems %v, want one naming the service that does not fit", problems)
	}
	want := "10.96.0.1:80/TCP: 10.0.0.1:80 10.0.0.2:80\n10.96.0.2:80/TCP: 10.0.0.3:80\n"
	if got := listing(t, lb); got != want {
		t.Errorf("programmed\n%s\nwant\n%s", got, want)
	}
}

// Entries an interrupted agent left behind are fixed by the next Apply,
// even when the desired state itself does not change: an orphan backend
// and reverse-NAT entry go, a stale marker goes, a missing marker comes.
func TestReconcilerFixesOrphansLeftByInterruptedApply(t *testing.T) {
	lb := newMaps(t, nil)
	s := state(port("10.96.0.1:80", TCP, "10.0.0.1:8080"))
	r, _ := NewReconciler(lb, slog.Default())
	mustApply(t, r, s)

	vip := netip.MustParseAddr("10.96.0.1")
	stale := netip.MustParseAddr("10.96.0.99")
	if err := lb.Services.Delete(markerKey(vip)); err != nil {
		t.Fatal(err)
	}
	if err := lb.Services.Put(markerKey(stale), bpf.SluiceLb4Service{Flags: bpf.SluiceLbServiceFlagsSVC_F_MARKER}); err != nil {
		t.Fatal(err)
	}
	if err := lb.Backends.Put(9, bpf.SluiceLb4Backend{Address: 1, Port: 1, Proto: 6, Flags: bpf.SluiceLbBackendFlagsBE_F_ACTIVE}); err != nil {
		t.Fatal(err)
	}
	if err := lb.RevNat.Put(9, bpf.SluiceLb4ReverseNat{Address: 1, Port: 1}); err != nil {
		t.Fatal(err)
	}

	r2, err := NewReconciler(lb, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	mustApply(t, r2, s)
	if _, err := lb.Services.Lookup(markerKey(vip)); err != nil {
		t.Errorf("missing marker not restored: %v", err)
	}
	if _, err := lb.Services.Lookup(markerKey(stale)); err == nil {
		t.Error("stale marker not removed")
	}
	if be, _ := lb.Backends.Lookup(9); be.Flags != 0 {
		t.Errorf("orphan backend left: %+v", be)
	}
	if rn, _ := lb.RevNat.Lookup(9); rn.Address != 0 {
		t.Errorf("orphan reverse NAT entry left: %+v", rn)
	}
	if got := listing(t, lb); got != "10.96.0.1:80/TCP: 10.0.0.1:8080\n" {
		t.Errorf("programmed\n%s", got)
	}
	// Fixed once: the next Apply of the same state writes nothing.
	if stats := mustApply(t, r2, s); stats != (ApplyStats{}) {
		t.Errorf("second apply changed %+v", stats)
	}
}
