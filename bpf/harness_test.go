package bpf_test

import (
	"log/slog"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/sluice-lb/sluice/bpf"
	"github.com/sluice-lb/sluice/control"
	"github.com/sluice-lb/sluice/internal/testenv"
	"github.com/sluice-lb/sluice/maps"
)

// TC verdicts as the kernel defines them. sluice passes with TC_ACT_UNSPEC
// (-1, TCX_NEXT): the next program on the device sees the packet.
const (
	tcActPass     = ^uint32(0)
	tcActShot     = 2
	tcActRedirect = 7
)

// world is a datapath loaded without pinning, programmed through the real
// control plane, run with BPF_PROG_TEST_RUN.
type world struct {
	t     testing.TB
	objs  bpf.SluiceObjects
	dp    *maps.Datapath
	rec   *control.Reconciler
	ports map[control.Frontend]*control.ServicePort
}

func loadSpec(t testing.TB, spec *ebpf.CollectionSpec, objs any, sizes map[string]uint32) {
	t.Helper()
	for name, m := range spec.Maps {
		m.Pinning = ebpf.PinNone
		if n, ok := sizes[name]; ok {
			m.MaxEntries = n
		}
	}
	if err := spec.LoadAndAssign(objs, nil); err != nil {
		t.Fatalf("load datapath: %+v", err)
	}
}

func newWorld(t testing.TB) *world {
	t.Helper()
	return newWorldSized(t, nil)
}

// newWorldSized is newWorld with some maps resized (name: max entries).
func newWorldSized(t testing.TB, sizes map[string]uint32) *world {
	t.Helper()
	testenv.Privileged(t)
	spec, err := bpf.LoadSluice()
	if err != nil {
		t.Fatal(err)
	}
	// As the agent loads it: the coarse conntrack clock where the kernel
	// has it (the kernel matrix's 5.10 runs the precise one).
	if _, err := bpf.UseCoarseClock(spec); err != nil {
		t.Fatal(err)
	}
	w := &world{t: t, ports: map[control.Frontend]*control.ServicePort{}}
	if sizes == nil {
		w.objs = *sharedObjects(t, func(o *bpf.SluiceObjects) { loadSpec(t, spec, o, nil) })
	} else {
		loadSpec(t, spec, &w.objs, sizes)
		t.Cleanup(func() { w.objs.Close() })
	}
	w.dp = maps.FromObjects(&w.objs.SluiceMaps)
	if w.rec, err = control.NewReconciler(w.dp.LB4, slog.Default()); err != nil {
		t.Fatal(err)
	}
	return w
}

func frontend(s string, proto control.Protocol) control.Frontend {
	ap := netip.MustParseAddrPort(s)
	return control.Frontend{Addr: ap.Addr(), Port: ap.Port(), Proto: proto}
}

func backends(addrs ...string) []control.Backend {
	var out []control.Backend
	for _, a := range addrs {
		ap := netip.MustParseAddrPort(a)
		out = append(out, control.Backend{Addr: ap.Addr(), Port: ap.Port()})
	}
	return out
}

// serve programs (or reprograms) a frontend with these backends.
func (w *world) serve(fe control.Frontend, bes []control.Backend) {
	w.t.Helper()
	w.ports[fe] = &control.ServicePort{Name: control.ServicePortName{Namespace: "t", Name: fe.String()}, Frontend: fe, Backends: bes}
	w.apply()
}

func (w *world) unserve(fe control.Frontend) {
	w.t.Helper()
	delete(w.ports, fe)
	w.apply()
}

func (w *world) apply() {
	w.t.Helper()
	_, problems, err := w.rec.Apply(&control.State{Ports: w.ports})
	if err != nil || len(problems) > 0 {
		w.t.Fatalf("apply: %v %v", err, problems)
	}
}

func (w *world) setServiceCIDR(p netip.Prefix) {
	w.t.Helper()
	mask := netip.AddrFrom4([4]byte{0xff, 0xff, 0xff, 0xff})
	b := mask.As4()
	for i := p.Bits(); i < 32; i++ {
		b[i/8] &^= 0x80 >> (i % 8)
	}
	err := w.dp.Config.Put(0, bpf.SluiceDatapathConfig{
		ServiceCidr4:     maps.Addr4(p.Masked().Addr()),
		ServiceCidr4Mask: maps.Addr4(netip.AddrFrom4(b)),
	})
	if err != nil {
		w.t.Fatal(err)
	}
}

// editMaster rewrites the master entry of a programmed frontend, so that a
// test sets flags and affinity fields as the datapath's contract has them,
// whatever the control plane derives them from. An apply rewrites masters:
// edit after the last serve.
func (w *world) editMaster(fe control.Frontend, edit func(*bpf.SluiceLb4Service)) {
	w.t.Helper()
	k := lbKeyOf(fe, 0)
	v, err := w.dp.LB4.Services.Lookup(k)
	if err != nil {
		w.t.Fatalf("master entry of %s: %v", fe, err)
	}
	edit(&v)
	if err := w.dp.LB4.Services.Put(k, v); err != nil {
		w.t.Fatal(err)
	}
}

// slotBackends returns the backend id of every slot of a frontend, by the
// backend's address.
func (w *world) slotBackends(fe control.Frontend) map[netip.AddrPort]uint32 {
	w.t.Helper()
	m, err := w.dp.LB4.Services.Lookup(lbKeyOf(fe, 0))
	if err != nil {
		w.t.Fatalf("master entry of %s: %v", fe, err)
	}
	ids := map[netip.AddrPort]uint32{}
	for slot := uint16(1); slot <= m.Count; slot++ {
		s, err := w.dp.LB4.Services.Lookup(lbKeyOf(fe, slot))
		if err != nil {
			w.t.Fatalf("slot %d of %s: %v", slot, fe, err)
		}
		be, err := w.dp.LB4.Backends.Lookup(s.BackendId)
		if err != nil {
			w.t.Fatal(err)
		}
		ids[netip.AddrPortFrom(maps.AddrFrom4(be.Address), maps.PortFrom(be.Port))] = s.BackendId
	}
	return ids
}

// monoNow is the clock bpf_ktime_get_ns reads (CLOCK_MONOTONIC), in ns.
func monoNow(t testing.TB) uint64 {
	t.Helper()
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		t.Fatal(err)
	}
	return uint64(ts.Nano())
}

// run feeds one frame through the ingress program.
func (w *world) run(t testing.TB, in []byte) (uint32, []byte) {
	t.Helper()
	return runProg(t, w.objs.SluiceIngress, in)
}

// runOut feeds one frame through the egress program, where replies are
// translated back.
func (w *world) runOut(t testing.TB, in []byte) (uint32, []byte) {
	t.Helper()
	return runProg(t, w.objs.SluiceEgress, in)
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

// counts returns packets per reason name.
func (w *world) counts() map[string]uint64 {
	w.t.Helper()
	c, err := w.dp.Packets()
	if err != nil {
		w.t.Fatal(err)
	}
	return c
}

// delta returns the counters that moved between two readings.
func delta(before, after map[string]uint64) map[string]uint64 {
	d := map[string]uint64{}
	for k, v := range after {
		if v != before[k] {
			d[k] = v - before[k]
		}
	}
	return d
}
