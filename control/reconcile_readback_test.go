package control

import (
	"encoding/json"
	"log/slog"
	"net/netip"
	"strings"
	"testing"

	"github.com/sluice-lb/sluice/bpf"
	"github.com/sluice-lb/sluice/maps"
)

// northSouth is a state with every new kind of entry: a two-scope
// load-balancer frontend with source ranges and affinity, a NodePort with
// SNAT, local and remote backends, and a ClusterIP.
func northSouth() *State {
	lbp := withRanges(withInternal(external(KindLoadBalancer, "203.0.113.5:80", "10.0.0.1:80*"), "10.0.0.1:80*", "10.0.0.2:80"),
		"192.0.2.0/24", "198.51.100.0/24")
	lbp.AffinityTimeout = 60
	np := external(KindNodePort, "192.168.1.10:30080", "10.0.0.1:80*", "10.0.0.2:80")
	np.SNATRemote = true
	return state(lbp, np, port("10.96.0.1:80", TCP, "10.0.0.1:80*", "10.0.0.2:80"))
}

func inspectJSON(t *testing.T, lb maps.LB4) string {
	t.Helper()
	views, err := Inspect(lb)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(views)
	return string(b)
}

type entryCounts struct{ services, backends, revNats, matches, ranges int }

func countAll(t *testing.T, lb maps.LB4) entryCounts {
	all := func(any) bool { return true }
	return entryCounts{
		services: countEntries(t, lb.Services, func(v bpf.SluiceLb4Service) bool { return all(v) }),
		backends: countEntries(t, lb.Backends, func(b bpf.SluiceLb4Backend) bool { return b.Flags != 0 }),
		revNats:  countEntries(t, lb.RevNat, func(rn bpf.SluiceLb4ReverseNat) bool { return rn.Address != 0 }),
		matches:  countEntries(t, lb.AffinityMatch, func(uint8) bool { return true }),
		ranges:   countEntries(t, lb.SourceRanges, func(uint8) bool { return true }),
	}
}

// A restarted agent adopts scope 1 entries, kinds, flags, localities and
// source ranges as they are: the same state writes nothing. Entries
// broken behind sluice's back are repaired by a full apply, of the same
// agent or of a restarted one, to exactly what was programmed: nothing
// lost, nothing duplicated, the same ids.
func TestReconcilerReadsBackAndRepairsNorthSouthEntries(t *testing.T) {
	lb := newMaps(t, nil)
	r, _ := NewReconciler(lb, slog.Default())
	mustApply(t, r, northSouth())
	want, wantCounts := inspectJSON(t, lb), countAll(t, lb)
	if wantCounts != (entryCounts{services: 1 + 2 + 3 + 3 + 3, backends: 2, revNats: 3, matches: 2, ranges: 2}) {
		t.Fatalf("programmed %+v", wantCounts)
	}

	r2, err := NewReconciler(lb, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	r2.afterWrite = func(phase string) { t.Errorf("restart: the same state wrote %q", phase) }
	mustApply(t, r2, northSouth())
	r2.afterWrite = nil

	lbFe := Frontend{netip.MustParseAddr("203.0.113.5"), 80, TCP}
	cip := Frontend{netip.MustParseAddr("10.96.0.1"), 80, TCP}
	m, _ := lookupMaster(t, lb, lbFe, scopeExternal)
	put := func(k bpf.SluiceLb4Key, v bpf.SluiceLb4Service) {
		if err := lb.Services.Put(k, v); err != nil {
			t.Fatal(err)
		}
	}
	breakIt := func() {
		t.Helper()
		// The scope 1 master and a slot gone, the kind and the source
		// range flag lost, a range gone and a stray one, a backend's
		// locality cleared, a scope 1 master where none belongs.
		if err := lb.Services.DeleteAll([]bpf.SluiceLb4Key{scopedKey(lbFe, scopeInternal, 0), scopedKey(lbFe, scopeInternal, 2)}); err != nil {
			t.Fatal(err)
		}
		broken := m
		broken.Kind, broken.Flags = 0, broken.Flags&^bpf.SluiceLbServiceFlagsSVC_F_SOURCE_RANGES
		put(lbKey(lbFe, 0), broken)
		if err := lb.SourceRanges.Delete(maps.SourceRangeKey(m.RevNatId, netip.MustParsePrefix("192.0.2.0/24"))); err != nil {
			t.Fatal(err)
		}
		if err := lb.SourceRanges.Put(maps.SourceRangeKey(4000, netip.MustParsePrefix("10.0.0.0/8")), 1); err != nil {
			t.Fatal(err)
		}
		lb.Backends.Each(func(id uint32, b bpf.SluiceLb4Backend) bool {
			if b.Flags&bpf.SluiceLbBackendFlagsBE_F_LOCAL != 0 {
				b.Flags &^= bpf.SluiceLbBackendFlagsBE_F_LOCAL
				lb.Backends.Put(id, b)
			}
			return true
		})
		cm, _ := lookupMaster(t, lb, cip, scopeExternal)
		put(scopedKey(cip, scopeInternal, 0), cm)
		if inspectJSON(t, lb) == want {
			t.Fatal("breaking the maps changed nothing")
		}
	}
	repaired := func(how string) {
		t.Helper()
		if got := inspectJSON(t, lb); got != want {
			t.Errorf("%s: listing\n%s\nwant\n%s", how, got, want)
		}
		if got := countAll(t, lb); got != wantCounts {
			t.Errorf("%s: entries %+v, want %+v", how, got, wantCounts)
		}
		if _, err := servable(lb); err != nil {
			t.Errorf("%s: %v", how, err)
		}
	}

	breakIt()
	mustApply(t, r2, northSouth())
	repaired("full apply")

	breakIt()
	r3, err := NewReconciler(lb, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	mustApply(t, r3, northSouth())
	repaired("restart")
	r3.afterWrite = func(phase string) { t.Errorf("after repair: the same state wrote %q", phase) }
	mustApply(t, r3, northSouth())
}

// Inspect shows what `sluice lb list` prints, from the maps: kinds, both
// sets of a two-scope frontend, flags, source ranges, locality.
func TestInspectShowsNorthSouthEntries(t *testing.T) {
	lb := newMaps(t, nil)
	r, _ := NewReconciler(lb, slog.Default())
	mustApply(t, r, northSouth())
	views, err := Inspect(lb)
	if err != nil {
		t.Fatal(err)
	}
	byFe := map[string]FrontendView{}
	for _, v := range views {
		byFe[v.Frontend] = v
	}
	backends := func(s ScopeView) string {
		var out []string
		for _, b := range s.Backends {
			if b.Local {
				out = append(out, b.Address+"*")
			} else {
				out = append(out, b.Address)
			}
		}
		return strings.Join(out, " ")
	}
	cip, np, lbv := byFe["10.96.0.1:80"], byFe["192.168.1.10:30080"], byFe["203.0.113.5:80"]
	if cip.Kind != "ClusterIP" || cip.SNATRemote || cip.Internal != nil || backends(cip.ScopeView) != "10.0.0.1:80* 10.0.0.2:80" {
		t.Errorf("ClusterIP %+v", cip)
	}
	if np.Kind != "NodePort" || !np.SNATRemote || np.Internal != nil || np.SourceRanges != nil {
		t.Errorf("NodePort %+v", np)
	}
	if lbv.Kind != "LoadBalancer" || lbv.SNATRemote || lbv.AffinitySeconds != 60 || backends(lbv.ScopeView) != "10.0.0.1:80*" ||
		strings.Join(lbv.SourceRanges, " ") != "192.0.2.0/24 198.51.100.0/24" {
		t.Errorf("LoadBalancer %+v", lbv)
	}
	if in := lbv.Internal; in == nil || !in.SNATRemote || in.Empty != "reject" || backends(*in) != "10.0.0.1:80* 10.0.0.2:80" {
		t.Errorf("LoadBalancer internal set %+v", in)
	}
}
