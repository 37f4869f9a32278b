package loader

import (
	"bytes"
	"testing"

	"github.com/sluice-lb/sluice/bpf"
	"github.com/sluice-lb/sluice/internal/testenv"
)

// The conntrack table takes the size the agent derived, and every load
// writes all lifetimes: one the agent no longer sets goes back to 0 (the
// datapath's default) instead of keeping the previous agent's value.
func TestLoadSizesConntrackAndWritesTimeouts(t *testing.T) {
	testenv.Privileged(t)
	dir := pinDir(t)
	var logs bytes.Buffer
	var secs [bpf.SluiceCtTimeoutCT_TIMEOUT_MAX]uint32
	secs[bpf.SluiceCtTimeoutCT_TIMEOUT_UDP] = 7
	secs[bpf.SluiceCtTimeoutCT_TIMEOUT_TCP_CLOSE] = 3
	dp, err := Load(Options{PinDir: dir, CTEntries: 1 << 12, CTTimeouts: secs, Log: quietLog(&logs)})
	if err != nil {
		t.Fatal(err)
	}
	if got := dp.Objs.Ct4V3.MaxEntries(); got != 1<<12 {
		t.Errorf("ct4_v3 has %d entries, want %d", got, 1<<12)
	}
	for k, want := range secs {
		if got, err := dp.Maps.CTTimeouts.Lookup(bpf.SluiceCtTimeout(k)); err != nil || got != want {
			t.Errorf("timeout %d = %d (%v), want %d", k, got, err, want)
		}
	}
	dp.Close()

	secs[bpf.SluiceCtTimeoutCT_TIMEOUT_UDP] = 0
	dp, err = Load(Options{PinDir: dir, CTEntries: 1 << 13, CTTimeouts: secs, Log: quietLog(&logs)})
	if err != nil {
		t.Fatal(err)
	}
	defer dp.Close()
	if got := dp.Objs.Ct4V3.MaxEntries(); got != 1<<13 {
		t.Errorf("ct4_v3 resized to %d entries, want %d", got, 1<<13)
	}
	if got, _ := dp.Maps.CTTimeouts.Lookup(bpf.SluiceCtTimeoutCT_TIMEOUT_UDP); got != 0 {
		t.Errorf("UDP timeout kept the previous agent's %d", got)
	}
	if got, _ := dp.Maps.CTTimeouts.Lookup(bpf.SluiceCtTimeoutCT_TIMEOUT_TCP_CLOSE); got != 3 {
		t.Errorf("close timeout %d, want 3", got)
	}
}
