package metrics

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sluice-lb/sluice/bpf"
	"github.com/sluice-lb/sluice/internal/testenv"
	sluicemaps "github.com/sluice-lb/sluice/maps"
)

// TestEveryMapAccountedFor fails when the datapath object has a map that
// the fill metrics neither export nor deliberately leave out, so a new
// hash map cannot go unwatched.
func TestEveryMapAccountedFor(t *testing.T) {
	spec, err := bpf.LoadSluice()
	if err != nil {
		t.Fatal(err)
	}
	listed := map[string]bool{}
	for _, f := range fillMaps(&sluicemaps.Datapath{}) {
		if listed[f.name] {
			t.Errorf("%s: listed twice", f.name)
		}
		listed[f.name] = true
	}
	for name, m := range spec.Maps {
		if strings.HasPrefix(name, ".") {
			continue // .rodata and the like
		}
		_, skipped := notFilled[name]
		switch {
		case listed[name] && skipped:
			t.Errorf("%s: both in fillMaps and in notFilled", name)
		case !listed[name] && !skipped:
			t.Errorf("%s (%v): not in fillMaps; add it there, or to notFilled with the reason", name, m.Type)
		case listed[name] && !slices.Contains([]ebpf.MapType{ebpf.Hash, ebpf.LRUHash, ebpf.Array}, m.Type):
			t.Errorf("%s: fill of a %v map is not counted", name, m.Type)
		}
	}
	for name := range listed {
		if spec.Maps[name] == nil {
			t.Errorf("%s: in fillMaps but not in the object", name)
		}
	}
}

// TestCollectorWithoutMaps: a Datapath lacking maps (as a test's, or one
// before a map existed) exports nothing for them and does not panic.
func TestCollectorWithoutMaps(t *testing.T) {
	if n := testutil.CollectAndCount(NewDatapathCollector(&sluicemaps.Datapath{})); n != 0 {
		t.Errorf("%d series from a Datapath without maps", n)
	}
}

// newDatapath creates the datapath's maps, unpinned, without loading a
// program; sizes overrides max_entries by map name.
func newDatapath(tb testing.TB, sizes map[string]uint32) (*sluicemaps.Datapath, *bpf.SluiceMaps) {
	tb.Helper()
	testenv.Privileged(tb)
	spec, err := bpf.LoadSluice()
	if err != nil {
		tb.Fatal(err)
	}
	for name, m := range spec.Maps {
		m.Pinning = ebpf.PinNone
		if n, ok := sizes[name]; ok {
			m.MaxEntries = n
		}
	}
	var objs bpf.SluiceMaps
	if err := spec.LoadAndAssign(&objs, nil); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { objs.Close() })
	return sluicemaps.FromObjects(&objs), &objs
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func ct4Key(i int) bpf.SluiceCt4Key {
	return bpf.SluiceCt4Key{Saddr: 0x0a000000 + uint32(i), Daddr: 0x0a600001, Sport: uint16(i), Dport: 80, Proto: 6}
}

func TestDatapathCollector(t *testing.T) {
	dp, objs := newDatapath(t, map[string]uint32{
		bpf.SluiceMapLb4Services:      64,
		bpf.SluiceMapLb4Backends:      16,
		bpf.SluiceMapLb4Revnat:        8,
		bpf.SluiceMapCt4V3:            256,
		bpf.SluiceMapLb4Affinity:      32,
		bpf.SluiceMapLb4AffinityMatch: 40,
		bpf.SluiceMapLb4Fragments:     24,
		bpf.SluiceMapLb4SockRevnat:    48,
		bpf.SluiceMapLb4SockBackend:   56,
		bpf.SluiceMapL2Announce4:      12,
	})
	for i := range 3 {
		must(t, dp.LB4.Services.Put(bpf.SluiceLb4Key{Address: 0x0a600001, Dport: 80, BackendSlot: uint16(i), Proto: 6},
			bpf.SluiceLb4Service{BackendId: uint32(i)}))
	}
	active := bpf.SluiceLbBackendFlagsBE_F_ACTIVE
	must(t, dp.LB4.Backends.Put(1, bpf.SluiceLb4Backend{Address: 0x0af40102, Port: 8080, Proto: 6, Flags: active}))
	must(t, dp.LB4.Backends.Put(2, bpf.SluiceLb4Backend{Address: 0x0af40202, Port: 8080, Proto: 6, Flags: active}))
	must(t, dp.LB4.Backends.Put(3, bpf.SluiceLb4Backend{})) // freed: zeroed
	must(t, dp.LB4.RevNat.Put(1, bpf.SluiceLb4ReverseNat{Address: 0x0a600001, Port: 80}))
	for i := range 5 {
		must(t, dp.CT4.Put(ct4Key(i), bpf.SluiceCt4Entry{Kind: bpf.SluiceCtKindCT_FORWARD, BackendId: 1}))
	}
	for i := range 2 {
		must(t, dp.LB4.Affinity.Put(bpf.SluiceLb4AffinityKey{AffinityId: 1, Client: uint32(i)}, bpf.SluiceLb4Affinity{BackendId: 1}))
	}
	must(t, dp.LB4.AffinityMatch.Put(bpf.SluiceLb4AffinityMatchKey{BackendId: 1, AffinityId: 1}, 1))
	must(t, dp.LB4.Fragments.Put(bpf.SluiceFrag4Key{Saddr: 1, Daddr: 2, Id: 3, Proto: 17}, bpf.SluiceFrag4Ports{Sport: 4, Dport: 5}))
	for i := range 3 {
		must(t, dp.LB4.SockRevNat.Put(bpf.SluiceLb4SockRevnatKey{Cookie: uint64(i), Address: 0x0af40102, Port: 8080},
			bpf.SluiceLb4SockRevnatEntry{Address: 0x0a600001, Port: 80, RevNatId: 1}))
	}
	must(t, dp.LB4.SockBackend.Put(bpf.SluiceLb4SockBackendKey{Cookie: 1, Address: 0x0a600001, Port: 80},
		bpf.SluiceLb4SockBackend{BackendId: 1, Address: 0x0af40102, Port: 8080}))

	// A counter bumped on two CPUs, as the datapath does.
	names, err := sluicemaps.ReasonNames()
	must(t, err)
	const bumped = bpf.SluiceReason(1)
	per := make([]bpf.SluiceCounter, ebpf.MustPossibleCPU())
	for i := range per {
		per[i] = bpf.SluiceCounter{Packets: uint64(3 + i), Bytes: uint64(300 + 100*i)}
	}
	must(t, objs.SluiceCounters.Put(bumped, per))
	var wantPackets, wantBytes uint64
	for _, c := range per {
		wantPackets += c.Packets
		wantBytes += c.Bytes
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(NewDatapathCollector(dp))

	var exp strings.Builder
	exp.WriteString(`# HELP sluice_map_capacity Entries a BPF map can hold.
# TYPE sluice_map_capacity gauge
`)
	// entries -1: an id array, capacity only.
	type want struct {
		name          string
		entries, capa int
	}
	fill := []want{
		{"ct4_v3", 5, 256},
		{"lb4_affinity", 2, 32},
		{"lb4_affinity_match", 1, 40},
		{"lb4_backends", -1, 15}, // ids 1..15: id 0 is never allocated
		{"lb4_fragments", 1, 24},
		{"lb4_revnat", -1, 7},
		{"lb4_services", 3, 64},
		{"lb4_sock_backend", 1, 56},
		{"lb4_sock_revnat", 3, 48},
		{"l2_announce4", 0, 12},
	}
	for _, f := range fill {
		fmt.Fprintf(&exp, "sluice_map_capacity{map=%q} %d\n", f.name, f.capa)
	}
	fill = slices.DeleteFunc(fill, func(f want) bool { return f.entries < 0 })
	exp.WriteString(`# HELP sluice_map_entries Entries in use in a BPF map, read at scrape time.
# TYPE sluice_map_entries gauge
`)
	for _, f := range fill {
		fmt.Fprintf(&exp, "sluice_map_entries{map=%q} %d\n", f.name, f.entries)
	}
	exp.WriteString(`# HELP sluice_map_fill_ratio map_entries / map_capacity; conntrack (ct4_v3) at 1 refuses new flows.
# TYPE sluice_map_fill_ratio gauge
`)
	for _, f := range fill {
		fmt.Fprintf(&exp, "sluice_map_fill_ratio{map=%q} %v\n", f.name, float64(f.entries)/float64(f.capa))
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(exp.String()),
		"sluice_map_capacity", "sluice_map_entries", "sluice_map_fill_ratio"); err != nil {
		t.Error(err)
	}

	got := families(t, reg)
	for _, c := range []struct {
		name string
		want uint64
	}{{"sluice_datapath_packets_total", wantPackets}, {"sluice_datapath_bytes_total", wantBytes}} {
		mf := got[c.name]
		if mf == nil {
			t.Fatalf("%s: not collected", c.name)
		}
		if mf.GetType().String() != "COUNTER" {
			t.Errorf("%s: type %v", c.name, mf.GetType())
		}
		seen := map[string]float64{}
		for _, m := range mf.GetMetric() {
			if l := labelNames(m); l != "reason" {
				t.Errorf("%s: labels %q", c.name, l)
			}
			seen[m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
		}
		if want := slices.Sorted(maps.Values(names)); !slices.Equal(slices.Sorted(maps.Keys(seen)), want) {
			t.Errorf("%s: reasons %v, want %v", c.name, slices.Sorted(maps.Keys(seen)), want)
		}
		for reason, v := range seen {
			want := 0.0
			if reason == names[bumped] {
				want = float64(c.want)
			}
			if v != want {
				t.Errorf("%s{reason=%q} = %v, want %v", c.name, reason, v, want)
			}
		}
	}

	// The arrays' slots, as BenchmarkScrape counts them: the zeroed one
	// is free.
	if n, err := countSlots(dp.LB4.Backends); n != 2 || err != nil {
		t.Errorf("lb4_backends slots in use: %d, %v; want 2", n, err)
	}

	// Read at scrape time: a change shows in the next scrape.
	must(t, dp.CT4.Delete(ct4Key(0)))
	if v := gaugeValue(t, reg, "sluice_map_entries", "ct4_v3"); v != 4 {
		t.Errorf("ct4 entries after a delete: %v, want 4", v)
	}
}

func gaugeValue(t *testing.T, reg prometheus.Gatherer, name, mapName string) float64 {
	t.Helper()
	for _, m := range families(t, reg)[name].GetMetric() {
		if m.GetLabel()[0].GetValue() == mapName {
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("%s{map=%q}: no series", name, mapName)
	return 0
}

// TestDatapathCollectorReadError: a map that cannot be read fails its own
// series, through an invalid metric, and the rest is still gathered.
func TestDatapathCollectorReadError(t *testing.T) {
	dp, objs := newDatapath(t, map[string]uint32{bpf.SluiceMapCt4V3: 256})
	must(t, dp.LB4.Services.Put(bpf.SluiceLb4Key{Address: 1}, bpf.SluiceLb4Service{}))
	must(t, objs.Ct4V3.Close())
	must(t, objs.SluiceCounters.Close())

	reg := prometheus.NewRegistry()
	reg.MustRegister(NewDatapathCollector(dp))
	mfs, err := reg.Gather()
	if err == nil {
		t.Fatal("gather over closed maps: no error")
	}
	for _, want := range []string{"read ct4", "read sluice_counters"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("gather error %q does not say %q", err, want)
		}
	}
	var entries []string
	for _, mf := range mfs {
		if strings.HasPrefix(mf.GetName(), "sluice_datapath_") {
			t.Errorf("%s: gathered from a closed map", mf.GetName())
		}
		if mf.GetName() == "sluice_map_entries" {
			for _, m := range mf.GetMetric() {
				entries = append(entries, m.GetLabel()[0].GetValue())
			}
		}
	}
	if slices.Contains(entries, "ct4_v3") || !slices.Contains(entries, "lb4_services") {
		t.Errorf("map_entries gathered for %v, want every map but ct4", entries)
	}
}
