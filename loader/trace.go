package loader

import (
	"errors"
	"fmt"
	"reflect"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/rlimit"

	"github.com/sluice-lb/sluice/bpf"
	"github.com/sluice-lb/sluice/maps"
)

// Tracer is the trace build of the datapath (bpf.SluiceTrace: every map
// write compiled out, the reasons met recorded instead of counted) loaded
// against one datapath's maps. Running a packet through it tells what the
// datapath would do with that packet in the state those maps hold now,
// and leaves that state as it was.
type Tracer struct {
	mu   sync.Mutex // the recorded reasons are one global per program pair
	objs bpf.SluiceTraceObjects
}

// TraceRun is what one traced packet did.
type TraceRun struct {
	Ret     uint32             // the tc verdict (TC_ACT_*)
	Out     []byte             // the packet as the program left it
	Reasons []bpf.SluiceReason // every reason met, in order
}

// OpenTracer opens the maps an agent pinned under dir (read-only handles)
// and loads the trace build against them. The maps are those OpenPinnedMaps
// returns, for the caller to read what the trace refers to; done closes
// everything.
func OpenTracer(dir string) (t *Tracer, dp *maps.Datapath, done func(), err error) {
	// Kernels before 5.11 charge the trace program and its globals to
	// RLIMIT_MEMLOCK.
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, nil, nil, fmt.Errorf("lift RLIMIT_MEMLOCK: %w", err)
	}
	m, closeMaps, err := openPinnedMaps(dir, true)
	if err != nil {
		return nil, nil, nil, err
	}
	t, err = LoadTracer(m)
	if err != nil {
		closeMaps()
		return nil, nil, nil, err
	}
	return t, maps.FromObjects(m), func() { t.Close(); closeMaps() }, nil
}

// LoadTracer loads the trace programs with m in place of every map they
// use, so they read exactly what the datapath using m reads. m's handles
// may be read-only (BPF_F_RDONLY): the kernel checks a map fd's mode for
// syscalls on it, not when a program is loaded with it, and the trace
// programs write no map (bpf/trace_test.go proves it).
func LoadTracer(m *bpf.SluiceMaps) (*Tracer, error) {
	spec, err := bpf.LoadSluiceTrace()
	if err != nil {
		return nil, err
	}
	if _, err := bpf.UseCoarseClock(spec); err != nil {
		return nil, err
	}
	repl := mapsByName(m)
	for name, ms := range spec.Maps {
		r, ok := repl[name]
		if !ok {
			continue // the trace build's own globals
		}
		if r == nil {
			return nil, fmt.Errorf("trace: map %s not open", name)
		}
		ms.Pinning = ebpf.PinNone
		// The agent may have resized its maps (--ct-max ...): the
		// trace's spec takes each map as it is.
		ms.MaxEntries = r.MaxEntries()
	}
	t := &Tracer{}
	err = spec.LoadAndAssign(&t.objs, &ebpf.CollectionOptions{MapReplacements: repl})
	var ve *ebpf.VerifierError
	if errors.As(err, &ve) {
		return nil, fmt.Errorf("load trace programs: verifier: %+v", ve)
	}
	if err != nil {
		return nil, fmt.Errorf("load trace programs: %w", err)
	}
	return t, nil
}

// mapsByName lists m's maps by their names in the object, as the struct
// tags bpf2go generates give them, so no second list of maps is kept.
func mapsByName(m *bpf.SluiceMaps) map[string]*ebpf.Map {
	out := map[string]*ebpf.Map{}
	v := reflect.ValueOf(m).Elem()
	for i := range v.NumField() {
		if name := v.Type().Field(i).Tag.Get("ebpf"); name != "" {
			out[name], _ = v.Field(i).Interface().(*ebpf.Map)
		}
	}
	return out
}

// Ingress runs frame through the trace build of sluice_ingress.
func (t *Tracer) Ingress(frame []byte) (*TraceRun, error) {
	return t.run(t.objs.SluiceIngress, frame)
}

// Egress runs frame through the trace build of sluice_egress.
func (t *Tracer) Egress(frame []byte) (*TraceRun, error) {
	return t.run(t.objs.SluiceEgress, frame)
}

func (t *Tracer) run(prog *ebpf.Program, frame []byte) (*TraceRun, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.objs.TraceNreasons.Set(uint32(0)); err != nil {
		return nil, fmt.Errorf("reset trace: %w", err)
	}
	// Room for what the program may add (an ICMP error quotes the packet).
	out := make([]byte, len(frame)+256)
	opts := &ebpf.RunOptions{Data: frame, DataOut: out}
	ret, err := prog.Run(opts)
	if err != nil {
		return nil, fmt.Errorf("test run: %w", err)
	}
	var n uint32
	var reasons [8]uint32 // TRACE_REASONS_MAX (lib/counters.h)
	if err := t.objs.TraceNreasons.Get(&n); err != nil {
		return nil, err
	}
	if t.objs.TraceReasons.Size() != uint32(len(reasons)*4) {
		return nil, fmt.Errorf("trace_reasons holds %d bytes, want %d", t.objs.TraceReasons.Size(), len(reasons)*4)
	}
	if err := t.objs.TraceReasons.Get(&reasons); err != nil {
		return nil, err
	}
	run := &TraceRun{Ret: ret, Out: opts.DataOut}
	for _, r := range reasons[:min(int(n), len(reasons))] {
		run.Reasons = append(run.Reasons, bpf.SluiceReason(r))
	}
	return run, nil
}

// Close unloads the trace programs; the maps are the caller's.
func (t *Tracer) Close() error { return t.objs.Close() }
