package control

import (
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/sluice-lb/sluice/bpf"
	"github.com/sluice-lb/sluice/maps"
)

// North-south frontends in the maps: kinds, scopes, source ranges,
// locality, markers and the node's fields of sluice_config.

// external is a frontend of kind k.
func external(k FrontendKind, fe string, bes ...string) *ServicePort {
	p := port(fe, TCP, bes...)
	p.Kind = k
	return p
}

// withInternal gives p an Internal set (eTP=Local): p's own backends are
// the Local set external clients get.
func withInternal(p *ServicePort, bes ...string) *ServicePort {
	p.Internal = &ScopeSet{Backends: backendList(bes...), SNATRemote: true}
	return p
}

func withRanges(p *ServicePort, cidrs ...string) *ServicePort {
	p.SourceRanges = nil
	for _, c := range cidrs {
		p.SourceRanges = append(p.SourceRanges, netip.MustParsePrefix(c))
	}
	return p
}

func feOf(p *ServicePort) Frontend { return p.Frontend }

func lookupMaster(t *testing.T, lb maps.LB4, fe Frontend, scope uint8) (bpf.SluiceLb4Service, bool) {
	t.Helper()
	v, err := lb.Services.Lookup(scopedKey(fe, scope, 0))
	return v, err == nil
}

// allowed is the datapath's source-range lookup.
func allowed(lb maps.LB4, revNat uint32, src string) bool {
	k := bpf.SluiceLb4SrcRangeKey{Prefixlen: 64, RevNatId: revNat, Addr: maps.Addr4(netip.MustParseAddr(src))}
	_, err := lb.SourceRanges.Lookup(k)
	return err == nil
}

// Master entries carry the kind and the flags the service port asks for;
// a two-scope frontend has its scope 1 master and slots, under the same
// reverse-NAT id and affinity.
func TestReconcilerWritesKindsFlagsAndScopes(t *testing.T) {
	lb := newMaps(t, nil)
	r, err := NewReconciler(lb, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	np := withInternal(external(KindNodePort, "192.168.1.10:30080", "10.0.0.1:80*"), "10.0.0.1:80*", "10.0.0.2:80")
	np.AffinityTimeout = 30
	np.DropEmpty = false
	lbp := withRanges(external(KindLoadBalancer, "203.0.113.5:80", "10.0.0.2:80"), "192.0.2.0/24")
	lbp.SNATRemote = true
	ext := external(KindExternalIP, "198.51.100.9:80")
	ext.DropEmpty = true
	mustApply(t, r, state(np, lbp, ext, port("10.96.0.1:80", TCP, "10.0.0.1:80*")))

	m0, ok := lookupMaster(t, lb, feOf(np), scopeExternal)
	m1, ok1 := lookupMaster(t, lb, feOf(np), scopeInternal)
	if !ok || !ok1 {
		t.Fatalf("two-scope frontend: scope 0 %v, scope 1 %v", ok, ok1)
	}
	two := bpf.SluiceLbServiceFlagsSVC_F_TWO_SCOPES | bpf.SluiceLbServiceFlagsSVC_F_AFFINITY
	if m0.Kind != bpf.SluiceLbFrontendKindFE_NODE_PORT || m0.Flags != two || m0.Count != 1 {
		t.Errorf("scope 0 master %+v", m0)
	}
	if m1.Kind != m0.Kind || m1.Flags != bpf.SluiceLbServiceFlagsSVC_F_SNAT_REMOTE|bpf.SluiceLbServiceFlagsSVC_F_AFFINITY ||
		m1.Count != 2 || m1.RevNatId != m0.RevNatId || m1.AffinityId != m0.AffinityId || m1.AffinityTimeout != 30 {
		t.Errorf("scope 1 master %+v (scope 0 %+v)", m1, m0)
	}
	for slot := uint16(1); slot <= 2; slot++ {
		if _, err := lb.Services.Lookup(scopedKey(feOf(np), scopeInternal, slot)); err != nil {
			t.Errorf("scope 1 slot %d: %v", slot, err)
		}
	}
	if _, err := lb.Services.Lookup(scopedKey(feOf(np), scopeExternal, 2)); err == nil {
		t.Error("scope 0 has a second slot; its set has one backend")
	}
	// Both scopes' backends have match entries, under the one id.
	if n := countEntries(t, lb.AffinityMatch, func(uint8) bool { return true }); n != 2 {
		t.Errorf("%d affinity match entries, want 2", n)
	}
	if m, _ := lookupMaster(t, lb, feOf(lbp), scopeExternal); m.Kind != bpf.SluiceLbFrontendKindFE_LOAD_BALANCER ||
		m.Flags != bpf.SluiceLbServiceFlagsSVC_F_SNAT_REMOTE|bpf.SluiceLbServiceFlagsSVC_F_SOURCE_RANGES {
		t.Errorf("load balancer master %+v", m)
	} else if !allowed(lb, m.RevNatId, "192.0.2.77") || allowed(lb, m.RevNatId, "192.0.3.1") {
		t.Error("source ranges not as programmed")
	}
	if m, _ := lookupMaster(t, lb, feOf(ext), scopeExternal); m.Kind != bpf.SluiceLbFrontendKindFE_EXTERNAL_IP || m.Flags != bpf.SluiceLbServiceFlagsSVC_F_DROP_EMPTY {
		t.Errorf("external IP master %+v", m)
	}
	// Locality is the backend's, whichever frontend names it.
	local := map[netip.Addr]bool{}
	lb.Backends.Each(func(_ uint32, b bpf.SluiceLb4Backend) bool {
		if b.Flags&bpf.SluiceLbBackendFlagsBE_F_ACTIVE != 0 {
			local[maps.AddrFrom4(b.Address)] = b.Flags&bpf.SluiceLbBackendFlagsBE_F_LOCAL != 0
		}
		return true
	})
	if len(local) != 2 || !local[netip.MustParseAddr("10.0.0.1")] || local[netip.MustParseAddr("10.0.0.2")] {
		t.Errorf("backend locality %v", local)
	}
	if _, err := servable(lb); err != nil {
		t.Error(err)
	}
}

// Markers only for ClusterIP addresses: a marker on a node address would
// reject every packet to the node's own ports. The prefilter passes every
// frontend's address, whatever its kind.
func TestReconcilerMarksOnlyClusterIPs(t *testing.T) {
	lb := newMaps(t, nil)
	r, _ := NewReconciler(lb, slog.Default())
	s := state(
		port("10.96.0.1:80", TCP, "10.0.0.1:80"),
		external(KindNodePort, "192.168.1.10:30080", "10.0.0.1:80"),
		external(KindExternalIP, "198.51.100.9:80", "10.0.0.1:80"),
		external(KindLoadBalancer, "203.0.113.5:80", "10.0.0.1:80"),
	)
	mustApply(t, r, s)
	markers := func() []netip.Addr {
		var out []netip.Addr
		lb.Services.Each(func(k bpf.SluiceLb4Key, v bpf.SluiceLb4Service) bool {
			if v.Flags&bpf.SluiceLbServiceFlagsSVC_F_MARKER != 0 {
				out = append(out, maps.AddrFrom4(k.Address))
			}
			return true
		})
		return out
	}
	if got := markers(); !slices.Equal(got, []netip.Addr{netip.MustParseAddr("10.96.0.1")}) {
		t.Errorf("markers %v, want the ClusterIP's only", got)
	}
	f, _ := lb.Prefilter.Lookup(0)
	for fe := range s.Ports {
		if !bitSet(&f, filterDst(maps.Addr4(fe.Addr))) {
			t.Errorf("prefilter lacks %s", fe)
		}
	}
	// A marker an older agent left on a node address goes at the next
	// apply, after a restart.
	node := netip.MustParseAddr("192.168.1.10")
	if err := lb.Services.Put(markerKey(node), bpf.SluiceLb4Service{Flags: bpf.SluiceLbServiceFlagsSVC_F_MARKER}); err != nil {
		t.Fatal(err)
	}
	r2, err := NewReconciler(lb, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	mustApply(t, r2, s)
	if got := markers(); len(got) != 1 {
		t.Errorf("markers %v after repair", got)
	}
	// The ClusterIP goes: so does its marker; the other kinds keep none.
	delete(s.Ports, Frontend{netip.MustParseAddr("10.96.0.1"), 80, TCP})
	mustApply(t, r2, s)
	if got := markers(); len(got) != 0 {
		t.Errorf("markers %v without a ClusterIP", got)
	}
	if n := countEntries(t, lb.Services, func(bpf.SluiceLb4Service) bool { return true }); n != 6 {
		t.Errorf("lb4_services holds %d entries, want 3 masters + 3 slots", n)
	}
}

// Gaining and losing the internal scope, make-before-break: the scope 1
// master is written before the scope 0 master is flagged, and removed
// only after the flag is gone; the frontend is served after every write.
func TestReconcilerScopesMakeBeforeBreak(t *testing.T) {
	lb := newMaps(t, nil)
	r, _ := NewReconciler(lb, slog.Default())
	one := func() *ServicePort {
		return external(KindLoadBalancer, "203.0.113.5:80", "10.0.0.1:80*", "10.0.0.2:80")
	}
	two := func() *ServicePort {
		return withInternal(external(KindLoadBalancer, "203.0.113.5:80", "10.0.0.1:80*"), "10.0.0.1:80*", "10.0.0.2:80", "10.0.0.3:80")
	}
	fe := feOf(one())
	mustApply(t, r, state(one()))
	steps := []struct {
		name  string
		sp    *ServicePort
		order []string
	}{
		{"gain", two(), []string{"add backends", "write backend slots", "write internal frontends", "write frontends", "delete backend slots"}},
		{"change internal", withInternal(external(KindLoadBalancer, "203.0.113.5:80", "10.0.0.1:80*"), "10.0.0.1:80*"),
			[]string{"write internal frontends", "delete backend slots", "clear backends"}},
		{"lose", one(), []string{"add backends", "write backend slots", "write frontends", "delete frontends", "delete removed frontends' slots"}},
	}
	for _, st := range steps {
		var phases []string
		r.afterWrite = func(phase string) {
			phases = append(phases, phase)
			served, err := servable(lb)
			if err != nil {
				t.Errorf("%s, after %q: %v", st.name, phase, err)
			} else if !served[fe] {
				t.Errorf("%s, after %q: %s not served", st.name, phase, fe)
			}
		}
		mustApply(t, r, state(st.sp))
		r.afterWrite = nil
		var order []string
		for _, p := range phases {
			if p != "widen prefilter" && p != "narrow prefilter" {
				order = append(order, p)
			}
		}
		if !slices.Equal(order, st.order) {
			t.Errorf("%s: phases %q, want %q", st.name, order, st.order)
		}
		in := 0
		lb.Services.Each(func(k bpf.SluiceLb4Key, _ bpf.SluiceLb4Service) bool {
			if k.Scope == scopeInternal {
				in++
			}
			return true
		})
		want := 0
		if st.sp.Internal != nil {
			want = 1 + len(st.sp.Internal.Backends)
		}
		if in != want {
			t.Errorf("%s: %d scope 1 entries, want %d", st.name, in, want)
		}
		if stats := mustApply(t, r, state(st.sp)); stats != (ApplyStats{}) {
			t.Errorf("%s: applying again changed %+v", st.name, stats)
		}
	}
	// Removed as a whole from two scopes: nothing is left.
	mustApply(t, r, state(two()))
	r.afterWrite = func(phase string) {
		if _, err := servable(lb); err != nil {
			t.Errorf("removal, after %q: %v", phase, err)
		}
	}
	mustApply(t, r, state())
	r.afterWrite = nil
	if n := countEntries(t, lb.Services, func(bpf.SluiceLb4Service) bool { return true }); n != 0 {
		t.Errorf("%d lb4_services entries left", n)
	}
	if n := countEntries(t, lb.Backends, func(b bpf.SluiceLb4Backend) bool { return b.Flags != 0 }); n != 0 {
		t.Errorf("%d backends left", n)
	}
}

// Source ranges: added before the master checks them, removed after it no
// longer does; a changed set keeps the sources both allow, the ranges
// of a removed frontend go with its reverse-NAT id.
func TestReconcilerSourceRangesMakeBeforeBreak(t *testing.T) {
	lb := newMaps(t, nil)
	r, _ := NewReconciler(lb, slog.Default())
	lbp := func(cidrs ...string) *ServicePort {
		return withRanges(external(KindLoadBalancer, "203.0.113.5:80", "10.0.0.1:80"), cidrs...)
	}
	fe := feOf(lbp())
	mustApply(t, r, state(lbp()))
	m, _ := lookupMaster(t, lb, fe, scopeExternal)
	id := m.RevNatId
	flagged := func() bool {
		m, _ := lookupMaster(t, lb, fe, scopeExternal)
		return m.Flags&bpf.SluiceLbServiceFlagsSVC_F_SOURCE_RANGES != 0
	}
	steps := []struct {
		name   string
		sp     *ServicePort
		always []string // sources allowed (or no check) after every write
		order  []string
		after  map[string]bool // sources allowed at the end
	}{
		{"gain", lbp("192.0.2.0/24"), []string{"192.0.2.1"},
			[]string{"add source ranges", "write frontends"}, map[string]bool{"192.0.2.1": true, "198.51.100.1": false}},
		{"add one", lbp("192.0.2.0/24", "198.51.100.0/24"), []string{"192.0.2.1"},
			[]string{"add source ranges"}, map[string]bool{"192.0.2.1": true, "198.51.100.1": true}},
		{"replace", lbp("198.51.100.0/24", "203.0.113.0/28"), []string{"198.51.100.1"},
			[]string{"add source ranges", "delete source ranges"}, map[string]bool{"192.0.2.1": false, "198.51.100.1": true, "203.0.113.2": true}},
		{"lose", lbp(), []string{"198.51.100.1", "203.0.113.2"},
			[]string{"write frontends", "delete source ranges"}, map[string]bool{"192.0.2.1": true}},
	}
	for _, st := range steps {
		var phases []string
		r.afterWrite = func(phase string) {
			phases = append(phases, phase)
			if _, err := servable(lb); err != nil {
				t.Errorf("%s, after %q: %v", st.name, phase, err)
			}
			for _, src := range st.always {
				if flagged() && !allowed(lb, id, src) {
					t.Errorf("%s, after %q: %s refused", st.name, phase, src)
				}
			}
		}
		mustApply(t, r, state(st.sp))
		r.afterWrite = nil
		if !slices.Equal(phases, st.order) {
			t.Errorf("%s: phases %q, want %q", st.name, phases, st.order)
		}
		for src, want := range st.after {
			if got := !flagged() || allowed(lb, id, src); got != want {
				t.Errorf("%s: %s allowed %v, want %v", st.name, src, got, want)
			}
		}
		if n := countEntries(t, lb.SourceRanges, func(uint8) bool { return true }); n != len(st.sp.SourceRanges) {
			t.Errorf("%s: %d range entries, want %d", st.name, n, len(st.sp.SourceRanges))
		}
	}
	mustApply(t, r, state(lbp("192.0.2.0/24")))
	mustApply(t, r, state())
	if n := countEntries(t, lb.SourceRanges, func(uint8) bool { return true }); n != 0 {
		t.Errorf("%d range entries left by a removed frontend", n)
	}
}

// A backend's locality is a flag of its entry: a change rewrites that
// entry in place, with the same id, and nothing else.
func TestReconcilerLocalChangeRewritesBackendInPlace(t *testing.T) {
	lb := newMaps(t, nil)
	r, _ := NewReconciler(lb, slog.Default())
	sp := external(KindNodePort, "192.168.1.10:30080", "10.0.0.1:80", "10.0.0.2:80")
	sp.SNATRemote = true
	mustApply(t, r, state(sp, port("10.96.0.1:80", TCP, "10.0.0.1:80")))
	before := listingWithIDs(t, lb)
	sp = external(KindNodePort, "192.168.1.10:30080", "10.0.0.1:80*", "10.0.0.2:80")
	sp.SNATRemote = true
	var phases []string
	r.afterWrite = func(phase string) { phases = append(phases, phase) }
	stats, _, err := r.ApplyFrontends(state(sp, port("10.96.0.1:80", TCP, "10.0.0.1:80*")), []Frontend{feOf(sp)})
	r.afterWrite = nil
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(phases, []string{"add backends"}) || stats.BackendsAdded != 0 || stats.BackendsRemoved != 0 {
		t.Errorf("phases %q, stats %+v: want the backend rewritten, nothing else", phases, stats)
	}
	if after := listingWithIDs(t, lb); after != before {
		t.Errorf("ids or slots changed:\n%s\n%s", before, after)
	}
	views, _ := Inspect(lb)
	for _, v := range views {
		for _, b := range v.Backends {
			if want := b.Address == "10.0.0.1:80"; b.Local != want {
				t.Errorf("%s: backend %s local %v", v.Frontend, b.Address, b.Local)
			}
		}
	}
	// The ClusterIP naming the same backend is up to date now too.
	if stats := mustApply(t, r, state(sp, port("10.96.0.1:80", TCP, "10.0.0.1:80*"))); stats != (ApplyStats{}) {
		t.Errorf("full apply after the change wrote %+v", stats)
	}
}

// A frontend whose source ranges do not fit lb4_source_ranges is refused,
// named, and keeps what it had; the others are programmed.
func TestReconcilerFullSourceRangesRefuses(t *testing.T) {
	lb := newMaps(t, map[string]uint32{bpf.SluiceMapLb4SourceRanges: 2})
	r, _ := NewReconciler(lb, slog.Default())
	a := withRanges(external(KindLoadBalancer, "203.0.113.5:80", "10.0.0.1:80"), "192.0.2.0/24")
	mustApply(t, r, state(a))
	grown := withRanges(external(KindLoadBalancer, "203.0.113.5:80", "10.0.0.1:80"), "192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")
	other := external(KindLoadBalancer, "203.0.113.6:80", "10.0.0.1:80")
	_, problems, err := r.Apply(state(grown, other))
	if err != nil {
		t.Fatal(err)
	}
	if len(problems) != 1 || problems[0].Kind != SkipMapFull || !strings.Contains(problems[0].String(), "203.0.113.5:80") ||
		!strings.Contains(problems[0].String(), "lb4_source_ranges is full") {
		t.Fatalf("problems %v", problems)
	}
	if n := countEntries(t, lb.SourceRanges, func(uint8) bool { return true }); n != 1 {
		t.Errorf("%d range entries, want the 1 programmed before", n)
	}
	if _, ok := lookupMaster(t, lb, feOf(other), scopeExternal); !ok {
		t.Error("the frontend that fits was not programmed")
	}
}
