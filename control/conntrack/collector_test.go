package conntrack

import (
	"net/netip"
	"testing"
	"time"

	"github.com/sluice-lb/sluice/bpf"
	"github.com/sluice-lb/sluice/maps"
)

// The interval follows what sweeps find: halved while they delete a
// quarter or more of a table at least an eighth full, or while the table is
// three quarters full; lengthened by half while they delete under a
// twentieth, up to MaxInterval; back towards the base otherwise.
func TestIntervalAdapts(t *testing.T) {
	w := newWorld(t, 4096)
	c := NewCollector(w.dp, 30*time.Second, quiet, nil)
	steps := []struct {
		st   Stats
		want time.Duration
	}{
		// 200 entries of 4096, all expired: a burst of short flows in a
		// table almost empty is no reason to sweep more often.
		{Stats{Forward: 50, Reply: 50, Expired: 100}, 30 * time.Second},
		{Stats{Forward: 250, Reply: 250, Expired: 500}, 15 * time.Second}, // 1000 of 4096, half deleted
		{Stats{Forward: 250, Reply: 250, Expired: 500}, 7500 * time.Millisecond},
		{Stats{Forward: 250, Reply: 250, Expired: 500}, 3750 * time.Millisecond},
		{Stats{Forward: 250, Reply: 250, Expired: 500}, MinInterval},
		{Stats{Forward: 250, Reply: 250, Expired: 500}, MinInterval},
		{Stats{Forward: 50, Reply: 50, Expired: 100}, 4 * time.Second},   // small table: back towards the base
		{Stats{Forward: 450, Reply: 450, Expired: 100}, 8 * time.Second}, // 10%: back towards the base
		{Stats{Forward: 1000, Reply: 1000}, 12 * time.Second},            // nothing deleted
		{Stats{Forward: 1000, Reply: 1000, Expired: 2}, 18 * time.Second},
		{Stats{Forward: 1000, Reply: 1000}, 27 * time.Second},
		{Stats{Forward: 1000, Reply: 1000}, 40500 * time.Millisecond},
		{Stats{}, 60750 * time.Millisecond},
		{Stats{Forward: 1000, Reply: 1000, Expired: 400}, 30375 * time.Millisecond}, // 17%: towards the base
		{Stats{Forward: 1000, Reply: 1000, Expired: 400}, 30 * time.Second},
		{Stats{Forward: 1000, Reply: 1000}, 45 * time.Second},
		{Stats{Forward: 1550, Reply: 1550}, 22500 * time.Millisecond}, // 3100 of 4096: three quarters full
	}
	for i := range 20 {
		c.adapt(Stats{})
		if i == 19 && c.interval != MaxInterval {
			t.Fatalf("idle sweeps lengthen the interval to %s, want %s", c.interval, MaxInterval)
		}
	}
	c.interval = 30 * time.Second
	for i, s := range steps {
		c.adapt(s.st)
		if c.interval != s.want {
			t.Fatalf("step %d (%+v): interval %s, want %s", i, s.st, c.interval, s.want)
		}
	}
}

// An ordinary sweep leaves a live reply entry without its flow, and a live
// forward entry without its reply entry, to the next audit, which removes
// the one and repairs the other.
func TestAuditFindsWhatOrdinarySweepsSkip(t *testing.T) {
	w := newWorld(t, 4096)
	vip, be := netip.MustParseAddrPort("10.96.0.10:80"), netip.MustParseAddrPort("10.244.1.2:8080")
	must(t, w.dp.LB4.Backends.Put(7, bpf.SluiceLb4Backend{Address: maps.Addr4(be.Addr()), Port: maps.Port(be.Port()),
		Proto: 6, Flags: bpf.SluiceLbBackendFlagsBE_F_ACTIVE}))
	must(t, w.dp.LB4.RevNat.Put(3, bpf.SluiceLb4ReverseNat{Address: maps.Addr4(vip.Addr()), Port: maps.Port(vip.Port())}))
	now := monoSeconds(t)
	orphan := ctKey(be.String(), "10.0.0.1:1000", 6)
	lone := ctKey("10.0.0.1:2000", vip.String(), 6)
	must(t, w.dp.CT4.Put(orphan, bpf.SluiceCt4Entry{Kind: bpf.SluiceCtKindCT_REPLY, BackendId: 7, RevNatId: 3, Expires: now + 100}))
	must(t, w.dp.CT4.Put(lone, bpf.SluiceCt4Entry{Kind: bpf.SluiceCtKindCT_FORWARD, BackendAddr: maps.Addr4(be.Addr()),
		BackendPort: maps.Port(be.Port()), BackendId: 7, RevNatId: 3, Expires: now + 100}))

	w.col.lastAudit = time.Now() // the next sweep is an ordinary one
	if st := w.sweep(); st.Audit || st.Orphans != 0 || st.Repaired != 0 || len(w.entries()) != 2 {
		t.Fatalf("ordinary sweep: %+v, %d entries", st, len(w.entries()))
	}
	w.col.lastAudit = time.Now().Add(-AuditPeriod)
	if st := w.sweep(); !st.Audit || st.Orphans != 1 || st.Repaired != 1 {
		t.Fatalf("audit: %+v", st)
	}
	got := w.entries()
	if _, ok := got[orphan]; ok {
		t.Error("the orphan reply entry survived the audit")
	}
	if _, ok := got[ctKey(be.String(), "10.0.0.1:2000", 6)]; !ok {
		t.Error("the lone forward entry's reply entry was not repaired")
	}
}
