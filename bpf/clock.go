package bpf

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
)

// UseCoarseClock makes a datapath spec (Sluice, SluiceTrace or SluiceBench)
// read conntrack time with bpf_ktime_get_coarse_ns where the kernel has the
// helper, and leaves the precise clock where it does not (see
// ct_coarse_clock in lib/conntrack.h). It reports which it chose.
func UseCoarseClock(spec *ebpf.CollectionSpec) (bool, error) {
	err := features.HaveProgramHelper(ebpf.SchedCLS, asm.FnKtimeGetCoarseNs)
	if errors.Is(err, ebpf.ErrNotSupported) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("probe bpf_ktime_get_coarse_ns: %w", err)
	}
	v, ok := spec.Variables["ct_coarse_clock"]
	if !ok {
		return false, errors.New("datapath has no ct_coarse_clock")
	}
	if err := v.Set(uint8(1)); err != nil {
		return false, fmt.Errorf("set ct_coarse_clock: %w", err)
	}
	return true, nil
}
