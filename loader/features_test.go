package loader

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/sluice-lb/sluice/bpf"
	"github.com/sluice-lb/sluice/internal/testenv"
)

// In auto mode the loader finds TCX by trying it: kernels from 6.6 have it
// and must get it; older ones fall back to clsact. A kernel that should
// have TCX but ends up on the fallback fails the test. The result line is
// what the kernel matrix (hack/vmtest) collects for the README.
func TestAutoAttachPath(t *testing.T) {
	ns := vethNS(t)
	dir := pinDir(t)
	var logs bytes.Buffer
	var dp *Datapath
	err := ns.Do(func() error {
		var err error
		if dp, err = Load(Options{PinDir: dir, Log: quietLog(&logs)}); err != nil {
			return err
		}
		l, err := netlink.LinkByName("x0")
		if err != nil {
			return err
		}
		return dp.Attach(l.Attrs().Index, "x0")
	})
	if err != nil {
		t.Fatal(err)
	}
	defer dp.Close()
	defer ns.Do(func() error { return Uninstall(dir, quietLog(&logs)) })

	want := AttachTC
	if testenv.KernelAtLeast("6.6") {
		want = AttachTCX
	}
	if dp.Mode() != want {
		t.Errorf("auto attach took %s, want %s on this kernel", dp.Mode(), want)
	}
	if _, n := attachedProgram(t, ns, "x0", dp.Mode()); n != 1 {
		t.Errorf("%d attachments through %s, want 1", n, dp.Mode())
	}

	// Batch map operations (5.6+): every kernel sluice supports has them.
	keys := []uint32{1, 2, 3}
	vals := make([]bpf.SluiceLb4Backend, 3)
	if err := dp.Maps.LB4.Backends.PutAll(keys, vals); err != nil {
		t.Fatal(err)
	}
	if !dp.Maps.LB4.Backends.Batched() {
		t.Error("batch map updates fell back to single updates")
	}
	major, minor := testenv.KernelVersion()
	fmt.Printf("sluice-kernel-features: kernel=%d.%d attach=%s batch=%v\n", major, minor, dp.Mode(), dp.Maps.LB4.Backends.Batched())
}
