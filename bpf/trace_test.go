package bpf_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"

	"github.com/sluice-lb/sluice/bpf"
	"github.com/sluice-lb/sluice/internal/testenv"
)

// mapWriteCalls lists the helper calls in spec's programs that write a map.
func mapWriteCalls(spec *ebpf.CollectionSpec) []string {
	var out []string
	for name, p := range spec.Programs {
		for _, ins := range p.Instructions {
			if !ins.IsBuiltinCall() {
				continue
			}
			switch fn := asm.BuiltinFunc(ins.Constant); fn {
			case asm.FnMapUpdateElem, asm.FnMapDeleteElem, asm.FnMapPushElem, asm.FnMapPopElem:
				out = append(out, name+": "+fn.String())
			}
		}
	}
	return out
}

// The trace build runs on an agent's live maps: none of its programs may
// call a helper that writes a map. A write not made through map_update or
// map_delete (lib/common.h) shows up here. The datapath build, which does
// write, is scanned the same way so the scan is known to see such calls.
func TestTraceBuildCallsNoMapWriteHelper(t *testing.T) {
	trace, err := bpf.LoadSluiceTrace()
	if err != nil {
		t.Fatal(err)
	}
	if calls := mapWriteCalls(trace); len(calls) > 0 {
		t.Errorf("trace build writes maps: %s", strings.Join(calls, ", "))
	}
	real, err := bpf.LoadSluice()
	if err != nil {
		t.Fatal(err)
	}
	if calls := mapWriteCalls(real); len(calls) == 0 {
		t.Error("the scan finds no map write in the datapath build either: it sees nothing")
	}
}

// Stores into map values (through a pointer bpf_map_lookup_elem returned)
// are not helper calls. The verifier knows them all: with every datapath
// map created BPF_F_RDONLY_PROG it refuses any program that writes one,
// by helper or by store ("write into map forbidden"). The trace build must
// load so; the datapath build, which writes, must not, so the check is
// known to fail when it should.
func TestTraceBuildStoresIntoNoMap(t *testing.T) {
	testenv.Privileged(t)
	trace, err := bpf.LoadSluiceTrace()
	if err != nil {
		t.Fatal(err)
	}
	var objs bpf.SluiceTraceObjects
	if err := loadReadOnly(trace, &objs); err != nil {
		t.Fatalf("trace build against maps the programs may not write: %+v", err)
	}
	objs.Close()

	real, err := bpf.LoadSluice()
	if err != nil {
		t.Fatal(err)
	}
	var robjs bpf.SluiceObjects
	err = loadReadOnly(real, &robjs)
	if err == nil {
		robjs.Close()
		t.Fatal("the datapath build loads against read-only maps: the check proves nothing")
	}
	if ve := (*ebpf.VerifierError)(nil); !errors.As(err, &ve) || !strings.Contains(ve.Error()+strings.Join(ve.Log, "\n"), "write into map forbidden") {
		t.Fatalf("datapath build refused for another reason than a map write: %v", err)
	}
}

// loadReadOnly loads spec with every map of the datapath (not the
// program's own globals) made read-only for programs.
func loadReadOnly(spec *ebpf.CollectionSpec, objs any) error {
	for name, m := range spec.Maps {
		m.Pinning = ebpf.PinNone
		if !strings.HasPrefix(name, ".") {
			m.Flags |= unix.BPF_F_RDONLY_PROG
		}
	}
	return spec.LoadAndAssign(objs, nil)
}
