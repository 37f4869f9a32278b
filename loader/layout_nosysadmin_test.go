package loader

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/sluice-lb/sluice/bpf"
	"github.com/sluice-lb/sluice/internal/testenv"
)

// withoutSysAdmin runs f on a thread whose effective capabilities lack
// CAP_SYS_ADMIN, as the agent's (deploy/) do: every bpf(2) call f makes
// runs on that thread, which is discarded afterwards (its goroutine exits
// locked to it), so the rest of the test binary keeps its privileges.
func withoutSysAdmin(t *testing.T, f func()) {
	t.Helper()
	done := make(chan struct{})
	failed := make(chan error, 1)
	go func() {
		defer close(done)
		runtime.LockOSThread() // never unlocked: the thread goes with the goroutine
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var data [2]unix.CapUserData
		if err := unix.Capget(&hdr, &data[0]); err != nil {
			failed <- err
			return
		}
		data[unix.CAP_SYS_ADMIN/32].Effective &^= 1 << (unix.CAP_SYS_ADMIN % 32)
		if err := unix.Capset(&hdr, &data[0]); err != nil {
			failed <- err
			return
		}
		f()
	}()
	<-done
	select {
	case err := <-failed:
		t.Fatalf("drop CAP_SYS_ADMIN: %v", err)
	default:
	}
}

// Without CAP_SYS_ADMIN a map's BTF cannot be read: the layouts recorded
// when the maps were pinned stand in for it. A pinned map recorded with
// another struct of the same sizes is detected; this binary's own maps are
// not; and a v1 ct4 is still migrated (by its sizes).
func TestLayoutJudgedWithoutSysAdmin(t *testing.T) {
	testenv.Privileged(t)
	dir := pinDir(t)
	var logs bytes.Buffer
	dp, err := Load(Options{PinDir: dir, Log: quietLog(&logs)})
	if err != nil {
		t.Fatal(err)
	}
	dp.Close()
	pinSwappedRevNat(t, dir)

	withoutSysAdmin(t, func() {
		m, err := ebpf.LoadPinnedMap(filepath.Join(dir, bpf.SluiceMapLb4Revnat), nil)
		if err != nil {
			t.Error(err)
			return
		}
		_, _, err = pinnedKeyValue(m)
		m.Close()
		if !errors.Is(err, errBTFDenied) {
			t.Errorf("BTF read without CAP_SYS_ADMIN: %v, want it denied (is the test dropping it?)", err)
			return
		}
		logs.Reset()
		dp, err := Load(Options{PinDir: dir, Log: quietLog(&logs)})
		if err != nil {
			t.Errorf("load: %v", err)
			return
		}
		rn, _ := dp.Maps.LB4.RevNat.Lookup(3)
		dp.Close()
		if !strings.Contains(logs.String(), "another meaning") || !strings.Contains(logs.String(), "lb4_revnat") ||
			strings.Count(logs.String(), "layout changed") != 1 {
			t.Errorf("want exactly lb4_revnat judged changed, by its record:\n%s", logs.String())
		}
		if rn != (bpf.SluiceLb4ReverseNat{}) {
			t.Errorf("entry of the other layout kept: %+v", rn)
		}
		logs.Reset()
		if dp, err = Load(Options{PinDir: dir, Log: quietLog(&logs)}); err != nil {
			t.Errorf("reload: %v", err)
			return
		}
		dp.Close()
		if strings.Contains(logs.String(), "layout changed") {
			t.Errorf("this binary's own maps judged changed:\n%s", logs.String())
		}
	})

	dir2 := pinDir(t) + "-v1"
	t.Cleanup(func() { os.RemoveAll(dir2) })
	pinV1State(t, dir2)
	withoutSysAdmin(t, func() {
		logs.Reset()
		dp, err := Load(Options{PinDir: dir2, Log: quietLog(&logs)})
		if err != nil {
			t.Errorf("load over v1 state: %v", err)
			return
		}
		dp.Close()
		if !strings.Contains(logs.String(), "old layout migrated") || !strings.Contains(logs.String(), "entries=3") {
			t.Errorf("v1 not migrated without CAP_SYS_ADMIN:\n%s", logs.String())
		}
	})
}
