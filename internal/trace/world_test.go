package trace_test

import (
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/sluice-lb/sluice/bpf"
	"github.com/sluice-lb/sluice/control"
	"github.com/sluice-lb/sluice/internal/testenv"
	"github.com/sluice-lb/sluice/loader"
	"github.com/sluice-lb/sluice/maps"
)

// world is a datapath loaded without pinning, programmed through the real
// control plane, with the trace build loaded against its maps: the
// programs a packet really goes through and the tracer next to them.
type world struct {
	t      *testing.T
	objs   bpf.SluiceObjects
	dp     *maps.Datapath
	tracer *loader.Tracer
}

func newWorld(t *testing.T, ports ...*control.ServicePort) *world {
	t.Helper()
	testenv.Privileged(t)
	spec, err := bpf.LoadSluice()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range spec.Maps {
		m.Pinning = ebpf.PinNone
		// Small, so that a snapshot reads every entry quickly; the
		// tracer takes the maps at their size, as it takes an agent's
		// resized ones.
		if m.MaxEntries > 1024 && m.Type != ebpf.PerCPUArray {
			m.MaxEntries = 1024
		}
	}
	w := &world{t: t}
	if err := spec.LoadAndAssign(&w.objs, nil); err != nil {
		t.Fatalf("load datapath: %+v", err)
	}
	t.Cleanup(func() { w.objs.Close() })
	w.dp = maps.FromObjects(&w.objs.SluiceMaps)
	rec, err := control.NewReconciler(w.dp.LB4, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	st := &control.State{Ports: map[control.Frontend]*control.ServicePort{}}
	for _, p := range ports {
		st.Ports[p.Frontend] = p
	}
	if _, problems, err := rec.Apply(st); err != nil || len(problems) > 0 {
		t.Fatalf("apply: %v %v", err, problems)
	}
	if w.tracer, err = loader.LoadTracer(&w.objs.SluiceMaps); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.tracer.Close() })
	return w
}

func (w *world) setServiceCIDR(p netip.Prefix) {
	w.t.Helper()
	var mask [4]byte
	for i := range p.Bits() {
		mask[i/8] |= 0x80 >> (i % 8)
	}
	err := w.dp.Config.Put(0, bpf.SluiceDatapathConfig{
		ServiceCidr4:     maps.Addr4(p.Masked().Addr()),
		ServiceCidr4Mask: maps.Addr4(netip.AddrFrom4(mask)),
	})
	if err != nil {
		w.t.Fatal(err)
	}
}

// snapshot is every map's content, key and value bytes as the kernel
// holds them (the counters per CPU), sorted by key.
func (w *world) snapshot() map[string][]string {
	w.t.Helper()
	out := map[string][]string{}
	v := w.objs.SluiceMaps
	for name, m := range map[string]*ebpf.Map{
		bpf.SluiceMapCt4V3: v.Ct4V3, bpf.SluiceMapLb4Affinity: v.Lb4Affinity,
		bpf.SluiceMapLb4AffinityMatch: v.Lb4AffinityMatch, bpf.SluiceMapLb4Backends: v.Lb4Backends,
		bpf.SluiceMapLb4Prefilter: v.Lb4Prefilter, bpf.SluiceMapLb4Revnat: v.Lb4Revnat,
		bpf.SluiceMapLb4Services: v.Lb4Services, bpf.SluiceMapSluiceConfig: v.SluiceConfig,
		bpf.SluiceMapSluiceCounters: v.SluiceCounters, bpf.SluiceMapSluiceCtTimeouts: v.SluiceCtTimeouts,
	} {
		out[name] = dump(w.t, m)
	}
	return out
}

func dump(t *testing.T, m *ebpf.Map) []string {
	t.Helper()
	var entries []string
	key := make([]byte, m.KeySize())
	if m.Type() == ebpf.PerCPUArray {
		for i := range m.MaxEntries() {
			var per []bpf.SluiceCounter
			if err := m.Lookup(i, &per); err != nil {
				t.Fatalf("dump %s: %v", m, err)
			}
			entries = append(entries, fmt.Sprintf("%d=%v", i, per))
		}
		return entries
	}
	var val []byte
	it := m.Iterate()
	for it.Next(&key, &val) {
		entries = append(entries, fmt.Sprintf("%x=%x", key, val))
	}
	if err := it.Err(); err != nil {
		t.Fatalf("dump %s: %v", m, err)
	}
	slices.Sort(entries)
	return entries
}

// counts returns packets per reason name.
func (w *world) counts() map[string]uint64 {
	w.t.Helper()
	c, err := w.dp.Packets()
	if err != nil {
		w.t.Fatal(err)
	}
	return c
}
