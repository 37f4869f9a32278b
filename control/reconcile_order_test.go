package control

import (
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"testing"

	"github.com/sluice-lb/sluice/bpf"
	"github.com/sluice-lb/sluice/maps"
)

// servable checks, from the real maps, what a packet could see between two
// writes: every master's (of either scope) counted slots exist and name
// active backends of its protocol, its reverse-NAT entry restores its own
// address, a ClusterIP's address has a marker and no other kind's has, the
// prefilter lets its traffic and its replies through, an affinity master's
// backends have their match entries, a two-scope master's scope 1 master
// exists with the same reverse-NAT id, and a master checking source ranges
// has at least one. It returns the frontends served (scope 0 masters).
func servable(lb maps.LB4) (map[Frontend]bool, error) {
	type entry struct {
		k bpf.SluiceLb4Key
		v bpf.SluiceLb4Service
	}
	var all []entry
	if err := lb.Services.Each(func(k bpf.SluiceLb4Key, v bpf.SluiceLb4Service) bool {
		all = append(all, entry{k, v})
		return true
	}); err != nil {
		return nil, err
	}
	byKey := map[bpf.SluiceLb4Key]bpf.SluiceLb4Service{}
	for _, e := range all {
		byKey[e.k] = e.v
	}
	filter, err := lb.Prefilter.Lookup(0)
	if err != nil {
		return nil, err
	}
	rangeIDs := map[uint32]bool{}
	if err := lb.SourceRanges.Each(func(k bpf.SluiceLb4SrcRangeKey, _ uint8) bool {
		rangeIDs[k.RevNatId] = true
		return true
	}); err != nil {
		return nil, err
	}
	clusterIPs := map[uint32]bool{}
	for _, e := range all {
		if e.k.BackendSlot == 0 && e.v.Flags&bpf.SluiceLbServiceFlagsSVC_F_MARKER == 0 && FrontendKind(e.v.Kind) == KindClusterIP {
			clusterIPs[e.k.Address] = true
		}
	}
	served := map[Frontend]bool{}
	for _, e := range all {
		if e.k.BackendSlot != 0 || e.v.Flags&bpf.SluiceLbServiceFlagsSVC_F_MARKER != 0 {
			continue
		}
		fe := Frontend{maps.AddrFrom4(e.k.Address), maps.PortFrom(e.k.Dport), Protocol(e.k.Proto)}
		_, marked := byKey[markerKey(fe.Addr)]
		if FrontendKind(e.v.Kind) == KindClusterIP && !marked {
			return nil, fmt.Errorf("%s: no marker for its IP", fe)
		}
		if FrontendKind(e.v.Kind) != KindClusterIP && marked && !clusterIPs[e.k.Address] {
			return nil, fmt.Errorf("%s (%s): its address is marked as a service IP", fe, FrontendKind(e.v.Kind))
		}
		if e.k.Scope == scopeExternal && e.v.Flags&bpf.SluiceLbServiceFlagsSVC_F_TWO_SCOPES != 0 {
			k := e.k
			k.Scope = scopeInternal
			in, ok := byKey[k]
			if !ok || in.RevNatId != e.v.RevNatId {
				return nil, fmt.Errorf("%s: two scopes, scope 1 master %+v (present %v)", fe, in, ok)
			}
		}
		if e.v.Flags&bpf.SluiceLbServiceFlagsSVC_F_SOURCE_RANGES != 0 && !rangeIDs[e.v.RevNatId] {
			return nil, fmt.Errorf("%s: checks source ranges, has none", fe)
		}
		if !bitSet(&filter, filterDst(e.k.Address)) {
			return nil, fmt.Errorf("%s: prefilter lacks the service IP", fe)
		}
		rn, err := lb.RevNat.Lookup(e.v.RevNatId)
		if err != nil || rn.Address != e.k.Address || rn.Port != e.k.Dport {
			return nil, fmt.Errorf("%s: reverse NAT %d is %+v (%v)", fe, e.v.RevNatId, rn, err)
		}
		for slot := uint16(1); slot <= e.v.Count; slot++ {
			k := e.k
			k.BackendSlot = slot
			sv, ok := byKey[k]
			if !ok {
				return nil, fmt.Errorf("%s: slot %d of %d missing", fe, slot, e.v.Count)
			}
			be, err := lb.Backends.Lookup(sv.BackendId)
			if err != nil || be.Flags&bpf.SluiceLbBackendFlagsBE_F_ACTIVE == 0 || be.Proto != e.k.Proto {
				return nil, fmt.Errorf("%s: slot %d names backend %d = %+v (%v)", fe, slot, sv.BackendId, be, err)
			}
			if !bitSet(&filter, filterSrc(be.Address, be.Port, be.Proto)) {
				return nil, fmt.Errorf("%s: prefilter lacks backend %d", fe, sv.BackendId)
			}
			if e.v.Flags&bpf.SluiceLbServiceFlagsSVC_F_AFFINITY != 0 {
				if _, err := lb.AffinityMatch.Lookup(matchKey(sv.BackendId, e.v.AffinityId)); err != nil {
					return nil, fmt.Errorf("%s: no affinity match entry for backend %d", fe, sv.BackendId)
				}
			}
		}
		if e.k.Scope == scopeExternal {
			served[fe] = true
		}
	}
	return served, nil
}

// Make-before-break, as the README promises: after every single map write
// of a change that touches every phase, every frontend the maps expose is
// complete, and every frontend that both the old and the new state serve
// stays served. The phases come in their documented order.
func TestReconcilerWritesMakeBeforeBreak(t *testing.T) {
	lb := newMaps(t, nil)
	r, err := NewReconciler(lb, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	affine := func(p *ServicePort) *ServicePort { p.AffinityTimeout = 30; return p }
	before := state(
		port("10.96.0.1:80", TCP, "10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080"),
		affine(port("10.96.0.1:443", TCP, "10.0.0.1:8443", "10.0.0.2:8443")),
		port("10.96.0.2:53", UDP, "10.0.0.5:53"),
		port("10.96.0.3:80", TCP, "10.0.0.6:80"),
	)
	mustApply(t, r, before)
	after := state(
		// shrinks (a backend leaves, one moves into its slot) and gains one
		port("10.96.0.1:80", TCP, "10.0.0.3:8080", "10.0.0.4:8080"),
		// loses its affinity and a backend
		port("10.96.0.1:443", TCP, "10.0.0.1:8443"),
		// gains affinity
		affine(port("10.96.0.2:53", UDP, "10.0.0.5:53", "10.0.0.7:53")),
		// 10.96.0.3 goes; 10.96.0.4 is new
		port("10.96.0.4:80", TCP, "10.0.0.6:80"),
	)
	both := []Frontend{}
	for fe := range before.Ports {
		if after.Ports[fe] != nil {
			both = append(both, fe)
		}
	}
	var phases []string
	r.afterWrite = func(phase string) {
		phases = append(phases, phase)
		served, err := servable(lb)
		if err != nil {
			t.Errorf("after %q: %v", phase, err)
			return
		}
		for _, fe := range both {
			if !served[fe] {
				t.Errorf("after %q: %s is not served", phase, fe)
			}
		}
	}
	stats := mustApply(t, r, after)
	r.afterWrite = nil
	order := []string{
		"widen prefilter", "add backends", "add reverse NAT", "add affinity matches",
		"write service IP markers", "write backend slots", "write frontends",
		"delete backend slots", "delete frontends", "delete removed frontends' slots",
		"delete service IP markers", "delete affinity matches", "clear reverse NAT entries",
		"clear backends", "narrow prefilter",
	}
	if !slices.Equal(phases, order) {
		t.Errorf("phases\n got %q\nwant %q", phases, order)
	}
	if stats.FrontendsWritten != 4 || stats.FrontendsRemoved != 1 {
		t.Errorf("stats %+v, want 4 written, 1 removed", stats)
	}
	if _, err := servable(lb); err != nil {
		t.Fatal(err)
	}
	// Exactly what after asks, nothing left over: no match entries but
	// those of the one affinity frontend's two backends.
	if n := countEntries(t, lb.AffinityMatch, func(uint8) bool { return true }); n != 2 {
		t.Errorf("%d affinity match entries, want 2", n)
	}
	// Applying the same state again writes nothing.
	r.afterWrite = func(phase string) { t.Errorf("unchanged state wrote %q", phase) }
	mustApply(t, r, after)
}

// Each field of the master entry counts as a change: a flag alone (drop
// instead of reject, affinity, its timeout) is written even though count
// and reverse-NAT id are the same.
func TestReconcilerWritesEveryMasterField(t *testing.T) {
	lb := newMaps(t, nil)
	r, err := NewReconciler(lb, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	fe := "10.96.0.1:80"
	key := lbKey(Frontend{netip.MustParseAddr("10.96.0.1"), 80, TCP}, 0)
	steps := []struct {
		name string
		sp   *ServicePort
		want func(bpf.SluiceLb4Service) bool
	}{
		{"reject", port(fe, TCP), func(v bpf.SluiceLb4Service) bool { return v.Flags == 0 }},
		{"drop when empty", func() *ServicePort { p := port(fe, TCP); p.DropEmpty = true; return p }(),
			func(v bpf.SluiceLb4Service) bool { return v.Flags == bpf.SluiceLbServiceFlagsSVC_F_DROP_EMPTY }},
		{"affinity", func() *ServicePort { p := port(fe, TCP, "10.0.0.1:80"); p.AffinityTimeout = 10; return p }(),
			func(v bpf.SluiceLb4Service) bool {
				return v.Flags == bpf.SluiceLbServiceFlagsSVC_F_AFFINITY && v.AffinityTimeout == 10 && v.AffinityId == v.RevNatId
			}},
		{"affinity timeout", func() *ServicePort { p := port(fe, TCP, "10.0.0.1:80"); p.AffinityTimeout = 20; return p }(),
			func(v bpf.SluiceLb4Service) bool { return v.AffinityTimeout == 20 }},
		{"no affinity", port(fe, TCP, "10.0.0.1:80"),
			func(v bpf.SluiceLb4Service) bool { return v.Flags == 0 && v.AffinityTimeout == 0 }},
	}
	for _, s := range steps {
		mustApply(t, r, state(s.sp))
		v, err := lb.Services.Lookup(key)
		if err != nil || !s.want(v) {
			t.Errorf("%s: master %+v (%v)", s.name, v, err)
		}
	}
}

// One endpoint change rewrites one slot: backends that stay keep theirs.
func TestReconcilerKeepsSlotsOfBackendsThatStay(t *testing.T) {
	lb := newMaps(t, nil)
	r, err := NewReconciler(lb, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	var bes []string
	for i := 1; i <= 10; i++ {
		bes = append(bes, fmt.Sprintf("10.0.0.%d:80", i*2))
	}
	mustApply(t, r, state(port("10.96.0.1:80", TCP, bes...)))
	slotsOf := func() map[uint16]uint32 {
		out := map[uint16]uint32{}
		lb.Services.Each(func(k bpf.SluiceLb4Key, v bpf.SluiceLb4Service) bool {
			if k.BackendSlot > 0 {
				out[k.BackendSlot] = v.BackendId
			}
			return true
		})
		return out
	}
	was := slotsOf()
	// 10.0.0.4 leaves, 10.0.0.3 (sorting before all the others) arrives.
	next := slices.Clone(bes)
	next[1] = "10.0.0.3:80"
	slices.Sort(next)
	mustApply(t, r, state(port("10.96.0.1:80", TCP, next...)))
	now := slotsOf()
	changed := 0
	for s, id := range now {
		if was[s] != id {
			changed++
		}
	}
	if changed != 1 || len(now) != 10 {
		t.Errorf("%d of %d slots changed, want 1 of 10", changed, len(now))
	}
}

func TestAssignSlots(t *testing.T) {
	b := func(n ...int) []Backend {
		var out []Backend
		for _, i := range n {
			out = append(out, Backend{Addr: netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}), Port: 80})
		}
		return out
	}
	cases := []struct {
		old, want, got []Backend
	}{
		{nil, b(1, 2), b(1, 2)},
		{b(1, 2, 3), b(1, 2, 3), b(1, 2, 3)},
		{b(1, 2, 3), b(1, 3), b(1, 3)},    // the last moves into the hole
		{b(1, 2, 3, 4), b(1, 2), b(1, 2)}, // tail holes just go
		{b(1, 2, 3, 4), b(2, 4), b(4, 2)}, // 4 moves into 1's slot
		{b(3, 1, 2), b(1, 2, 3, 5), b(3, 1, 2, 5)},
		{b(1, 2, 3), b(2, 5), b(5, 2)}, // 5 fills the first hole
		{b(1, 2), nil, nil},
	}
	for _, c := range cases {
		got := assignSlots(c.old, c.want)
		if !slices.Equal(got, c.got) {
			t.Errorf("assignSlots(%v, %v) = %v, want %v", c.old, c.want, got, c.got)
		}
	}
}
