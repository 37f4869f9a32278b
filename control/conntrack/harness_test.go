package conntrack

import (
	"io"
	"log/slog"
	"net/netip"
	"sync/atomic"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/sluice-lb/sluice/bpf"
	"github.com/sluice-lb/sluice/control"
	"github.com/sluice-lb/sluice/internal/packet"
	"github.com/sluice-lb/sluice/internal/testenv"
	"github.com/sluice-lb/sluice/maps"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// world is the datapath loaded without pinning, programmed by the real
// reconciler, with a collector of its conntrack table; packets go through
// it with BPF_PROG_TEST_RUN.
type world struct {
	t     testing.TB
	objs  bpf.SluiceObjects
	dp    *maps.Datapath
	rec   *control.Reconciler
	col   *Collector
	ports map[control.Frontend]*control.ServicePort
	// everServed: every frontend ever in ports.
	everServed map[control.Frontend]bool
	// released counts the ids the collector's sweeps vouched for.
	released atomic.Int64
}

func newWorld(t testing.TB, ctEntries uint32) *world {
	t.Helper()
	testenv.Privileged(t)
	spec, err := bpf.LoadSluice()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range spec.Maps {
		m.Pinning = ebpf.PinNone
	}
	if ctEntries != 0 {
		spec.Maps[bpf.SluiceMapCt4V3].MaxEntries = ctEntries
	}
	w := &world{t: t, ports: map[control.Frontend]*control.ServicePort{}, everServed: map[control.Frontend]bool{}}
	if err := spec.LoadAndAssign(&w.objs, nil); err != nil {
		t.Fatalf("load datapath: %+v", err)
	}
	t.Cleanup(func() { w.objs.Close() })
	w.dp = maps.FromObjects(&w.objs.SluiceMaps)
	if w.rec, err = control.NewReconciler(w.dp.LB4, quiet); err != nil {
		t.Fatal(err)
	}
	w.rec.QuarantineFreedIDs()
	w.col = NewCollector(w.dp, 0, quiet, func(st Stats, refs *Refs) {
		freed, _ := w.rec.ReleaseQuarantined(st.Start, refs.Backend, refs.RevNat)
		w.released.Add(int64(freed))
	})
	return w
}

func fe(s string, proto control.Protocol) control.Frontend {
	ap := netip.MustParseAddrPort(s)
	return control.Frontend{Addr: ap.Addr(), Port: ap.Port(), Proto: proto}
}

func bes(addrs ...string) []control.Backend {
	var out []control.Backend
	for _, a := range addrs {
		ap := netip.MustParseAddrPort(a)
		out = append(out, control.Backend{Addr: ap.Addr(), Port: ap.Port()})
	}
	return out
}

// serve programs (or reprograms) a frontend, and hands the collector what
// the apply took from UDP frontends, as the agent's sync hook does.
func (w *world) serve(f control.Frontend, b []control.Backend) {
	w.t.Helper()
	w.ports[f] = &control.ServicePort{Name: control.ServicePortName{Namespace: "t", Name: f.String()}, Frontend: f, Backends: b}
	w.apply()
}

func (w *world) unserve(f control.Frontend) {
	w.t.Helper()
	delete(w.ports, f)
	w.apply()
}

func (w *world) apply() {
	w.t.Helper()
	_, problems, err := w.rec.ApplyFrontends(&control.State{Ports: w.ports}, w.frontends())
	if err != nil || len(problems) > 0 {
		w.t.Fatalf("apply: %v %v", err, problems)
	}
	var targets []Target
	for _, l := range w.rec.TakeLeftUDP() {
		targets = append(targets, Target{RevNat: l.RevNat, Backend: l.Backend})
	}
	w.col.Purge(targets)
}

// frontends is every frontend the world ever served: ApplyFrontends
// compares them all, removing those no longer in ports.
func (w *world) frontends() []control.Frontend {
	seen := map[control.Frontend]bool{}
	for f := range w.ports {
		seen[f] = true
	}
	for f := range w.everServed {
		seen[f] = true
	}
	var out []control.Frontend
	for f := range seen {
		w.everServed[f] = true
		out = append(out, f)
	}
	return out
}

func (w *world) sweep() Stats {
	w.t.Helper()
	st, err := w.col.Sweep()
	if err != nil {
		w.t.Fatal(err)
	}
	return st
}

func runProg(t testing.TB, prog *ebpf.Program, in []byte) (uint32, []byte) {
	t.Helper()
	out := make([]byte, len(in)+256)
	opts := &ebpf.RunOptions{Data: in, DataOut: out}
	ret, err := prog.Run(opts)
	if err != nil {
		t.Fatalf("test run: %v", err)
	}
	return ret, opts.DataOut
}

// send runs a client's packet through ingress and returns the backend it
// was translated to.
func (w *world) send(s packet.Spec) netip.AddrPort {
	w.t.Helper()
	_, out := runProg(w.t, w.objs.SluiceIngress, packet.Build(s))
	f, err := packet.Parse(out)
	if err != nil {
		w.t.Fatal(err)
	}
	return netip.AddrPortFrom(f.Dst, f.DstPort)
}

// reply runs a backend's packet through egress.
func (w *world) reply(s packet.Spec) {
	w.t.Helper()
	runProg(w.t, w.objs.SluiceEgress, packet.Build(s))
}

// entries returns the whole (small) table.
func (w *world) entries() map[bpf.SluiceCt4Key]bpf.SluiceCt4Entry {
	w.t.Helper()
	out := map[bpf.SluiceCt4Key]bpf.SluiceCt4Entry{}
	if err := w.dp.CT4.Each(func(k bpf.SluiceCt4Key, e bpf.SluiceCt4Entry) bool {
		out[k] = e
		return true
	}); err != nil {
		w.t.Fatal(err)
	}
	return out
}

// ageAll moves every entry's expiry into the past.
func (w *world) ageAll() {
	w.t.Helper()
	now := monoSeconds(w.t)
	for k, e := range w.entries() {
		e.Expires = now - 100
		if err := w.dp.CT4.Put(k, e); err != nil {
			w.t.Fatal(err)
		}
	}
}

func monoSeconds(t testing.TB) uint32 {
	t.Helper()
	now, err := maps.MonotonicSeconds()
	if err != nil {
		t.Fatal(err)
	}
	return now
}

func ctKey(src, dst string, proto uint8) bpf.SluiceCt4Key {
	s, d := netip.MustParseAddrPort(src), netip.MustParseAddrPort(dst)
	return bpf.SluiceCt4Key{Saddr: maps.Addr4(s.Addr()), Daddr: maps.Addr4(d.Addr()),
		Sport: maps.Port(s.Port()), Dport: maps.Port(d.Port()), Proto: proto}
}
