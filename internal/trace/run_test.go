package trace_test

import (
	"testing"

	"github.com/cilium/ebpf"
)

type ebpfRun struct {
	prog    *ebpf.Program
	in, out []byte
}

func (r *ebpfRun) run(t *testing.T) uint32 {
	t.Helper()
	opts := &ebpf.RunOptions{Data: r.in, DataOut: r.out}
	ret, err := r.prog.Run(opts)
	if err != nil {
		t.Fatalf("test run: %v", err)
	}
	r.out = opts.DataOut
	return ret
}
