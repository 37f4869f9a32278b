// Package testenv decides whether a privileged test can run. Outside CI a
// test that lacks root or a kernel feature is skipped with the reason; with
// CI=true it fails, so a CI run can never pass by skipping.
package testenv

import (
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/rlimit"
)

// InCI reports whether CI=true is set.
func InCI() bool { return os.Getenv("CI") == "true" }

// Unavailable skips t, or fails it under CI.
func Unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	if InCI() {
		t.Fatalf("CI=true: cannot run: "+format, args...)
	}
	t.Skipf(format, args...)
}

// Privileged requires root and a kernel that creates BPF maps.
func Privileged(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Unavailable(t, "needs root (BPF, network namespaces)")
		return
	}
	_ = rlimit.RemoveMemlock()
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err != nil {
		Unavailable(t, "kernel refuses BPF maps: %v", err)
		return
	}
	m.Close()
}

// Scaled stretches a test's time budget by SLUICE_TEST_TIME_SCALE, which
// the VM runner sets under software emulation (where everything runs
// several times slower). Natively the scale is 1, so a budget the
// requirements state (a change applied within 1 s) is asserted as is.
func Scaled(d time.Duration) time.Duration {
	if f, err := strconv.ParseFloat(os.Getenv("SLUICE_TEST_TIME_SCALE"), 64); err == nil && f > 1 {
		return time.Duration(float64(d) * f)
	}
	return d
}
