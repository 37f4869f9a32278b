package conntrack

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/sluice-lb/sluice/bpf"
	"github.com/sluice-lb/sluice/internal/testenv"
	"github.com/sluice-lb/sluice/maps"
)

// benchTable is a full table of 2M entries (1M flows), the maps a sweep
// reads next to it, and the entries of the expired half, to put back
// before each sweep.
type benchTable struct {
	dp               *maps.Datapath
	oldKeys          []bpf.SluiceCt4Key
	oldVals          []bpf.SluiceCt4Entry
	liveKeys         []bpf.SluiceCt4Key
	liveVals         []bpf.SluiceCt4Entry
	backends, revNat int
	close            func()
}

func newBenchTable(b *testing.B, flows int, halfExpired bool) *benchTable {
	testenv.Privileged(b)
	spec, err := bpf.LoadSluice()
	if err != nil {
		b.Fatal(err)
	}
	var opened []*ebpf.Map
	open := func(name string, entries uint32) *ebpf.Map {
		ms := spec.Maps[name].Copy()
		ms.Pinning = ebpf.PinNone
		if entries != 0 {
			ms.MaxEntries = entries
		}
		m, err := ebpf.NewMap(ms)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { m.Close() })
		opened = append(opened, m)
		return m
	}
	bt := &benchTable{dp: &maps.Datapath{
		CT4: maps.New[bpf.SluiceCt4Key, bpf.SluiceCt4Entry](open(bpf.SluiceMapCt4V3, uint32(2*flows))),
		LB4: maps.LB4{
			Backends: maps.New[uint32, bpf.SluiceLb4Backend](open(bpf.SluiceMapLb4Backends, 0)),
			RevNat:   maps.New[uint32, bpf.SluiceLb4ReverseNat](open(bpf.SluiceMapLb4Revnat, 0)),
		},
	}, backends: 256, revNat: 16}
	bt.close = func() {
		for _, m := range opened {
			m.Close()
		}
	}
	for i := 1; i <= bt.revNat; i++ {
		must(b, bt.dp.LB4.RevNat.Put(uint32(i), bpf.SluiceLb4ReverseNat{Address: ip(10, 96, 0, byte(i)), Port: maps.Port(80)}))
	}
	for i := 1; i <= bt.backends; i++ {
		must(b, bt.dp.LB4.Backends.Put(uint32(i), bpf.SluiceLb4Backend{Address: ip(10, 244, 1, byte(i)), Port: maps.Port(8080),
			Proto: 6, Flags: bpf.SluiceLbBackendFlagsBE_F_ACTIVE}))
	}
	now := monoSeconds(b)
	for i := range flows {
		be, rn := uint32(1+i%bt.backends), uint32(1+i%bt.revNat)
		fk := bpf.SluiceCt4Key{Saddr: ip(10, 1, byte(i>>16), byte(i>>8)), Daddr: ip(10, 96, 0, byte(rn)),
			Sport: maps.Port(uint16(i)), Dport: maps.Port(80), Proto: 6}
		fe := bpf.SluiceCt4Entry{Kind: bpf.SluiceCtKindCT_FORWARD, BackendAddr: ip(10, 244, 1, byte(be)), BackendPort: maps.Port(8080),
			BackendId: be, RevNatId: rn, Expires: now + 3600}
		old := halfExpired && i%2 == 1
		if old {
			fe.Expires = now - 100
		}
		re := fe
		re.Kind, re.BackendAddr, re.BackendPort = bpf.SluiceCtKindCT_REPLY, 0, 0
		if old {
			bt.oldKeys = append(bt.oldKeys, fk, maps.CT4ReplyKey(fk, fe))
			bt.oldVals = append(bt.oldVals, fe, re)
		} else {
			bt.liveKeys = append(bt.liveKeys, fk, maps.CT4ReplyKey(fk, fe))
			bt.liveVals = append(bt.liveVals, fe, re)
		}
	}
	must(b, bt.dp.CT4.PutAll(bt.liveKeys, bt.liveVals))
	return bt
}

func ip(a, b, c, d byte) uint32 { return binary.NativeEndian.Uint32([]byte{a, b, c, d}) }

func cpuTime(b *testing.B) time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// A sweep of a full table of 1M flows (2M entries): the time and CPU one
// sweep takes, and its memory (allocations per sweep; the table is never
// held). "half-expired": half the flows have expired and go; "live": the
// steady state, nothing to do. An ordinary sweep looks up the partners of
// expired entries only; an audit (one sweep per AuditPeriod) those of
// every entry. Run:
//
//	go test ./control/conntrack/ -run '^$' -bench Sweep1M -benchtime 3x
func BenchmarkSweep1M(b *testing.B) {
	bt := newBenchTable(b, 1<<20, true)
	b.Run("half-expired", func(b *testing.B) { benchSweep(b, bt, false) })
	b.Run("half-expired-audit", func(b *testing.B) { benchSweep(b, bt, true) })
	bt.close()
	bt = newBenchTable(b, 1<<20, false)
	b.Run("live", func(b *testing.B) { benchSweep(b, bt, false) })
	b.Run("live-audit", func(b *testing.B) { benchSweep(b, bt, true) })
}

func benchSweep(b *testing.B, bt *benchTable, audit bool) {
	c := NewCollector(bt.dp, 0, quiet, nil)
	c.auditPeriod = 0
	if !audit {
		c.auditPeriod = time.Hour
		c.lastAudit = time.Now()
	}
	var cpu time.Duration
	var deleted int
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		must(b, bt.dp.CT4.PutAll(bt.oldKeys, bt.oldVals))
		c0 := cpuTime(b)
		b.StartTimer()
		st, err := c.Sweep()
		b.StopTimer()
		cpu += cpuTime(b) - c0
		if err != nil {
			b.Fatal(err)
		}
		if st.Expired != len(bt.oldKeys) || st.Forward+st.Reply != len(bt.liveKeys) {
			b.Fatalf("sweep %+v: want %d expired, %d kept", st, len(bt.oldKeys), len(bt.liveKeys))
		}
		deleted += st.Deleted()
		b.StartTimer()
	}
	b.ReportMetric(cpu.Seconds()/float64(b.N), "cpu-s/sweep")
	b.ReportMetric(float64(deleted)/float64(b.N), "deleted/sweep")
}
