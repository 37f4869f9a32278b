package loader

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"

	"github.com/sluice-lb/sluice/bpf"
	"github.com/sluice-lb/sluice/internal/netlab"
	"github.com/sluice-lb/sluice/internal/testenv"
)

func pinDir(t *testing.T) string {
	dir := filepath.Join(DefaultBPFFS, fmt.Sprintf("sluice-test-%d-%s", os.Getpid(), strings.ReplaceAll(t.Name(), "/", "_")))
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// vethNS is a namespace holding a veth pair, so attaching never touches
// this machine's own devices.
func vethNS(t *testing.T) *netlab.NS {
	t.Helper()
	testenv.Privileged(t)
	ns, err := netlab.NewNS(fmt.Sprintf("sl-ld-%d", os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Delete() })
	if err := netlab.Veth(ns, "x0", ns, "x1"); err != nil {
		t.Fatal(err)
	}
	return ns
}

func quietLog(buf *bytes.Buffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(buf, nil))
}

// attachedProgram returns the id of the program sluice attached to dev's
// ingress in mode, or 0, and how many sluice attachments there are.
func attachedProgram(t *testing.T, ns *netlab.NS, dev string, mode AttachMode) (ebpf.ProgramID, int) {
	t.Helper()
	l, err := ns.Netlink().LinkByName(dev)
	if err != nil {
		t.Fatal(err)
	}
	var id ebpf.ProgramID
	n := 0
	switch mode {
	case AttachTCX:
		err = ns.Do(func() error {
			res, err := link.QueryPrograms(link.QueryOptions{Target: l.Attrs().Index, Attach: ebpf.AttachTCXIngress})
			if err != nil {
				return err
			}
			for _, p := range res.Programs {
				id = p.ID
				n++
			}
			return nil
		})
	case AttachTC:
		filters, ferr := ns.Netlink().FilterList(l, netlink.HANDLE_MIN_INGRESS)
		err = ferr
		for _, f := range filters {
			if bf, ok := f.(*netlink.BpfFilter); ok {
				id = ebpf.ProgramID(bf.Id)
				n++
			}
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	return id, n
}

func TestAttachReplaceUninstall(t *testing.T) {
	for _, mode := range []AttachMode{AttachTCX, AttachTC} {
		t.Run(string(mode), func(t *testing.T) {
			if mode == AttachTCX {
				testenv.SkipOnOldKernel(t, "6.6", "TCX")
			}
			ns := vethNS(t)
			dir := pinDir(t)
			var logs bytes.Buffer
			load := func() *Datapath {
				var dp *Datapath
				if err := ns.Do(func() error {
					var err error
					if dp, err = Load(Options{PinDir: dir, Attach: mode, Log: quietLog(&logs)}); err != nil {
						return err
					}
					l, err := netlink.LinkByName("x0")
					if err != nil {
						return err
					}
					return dp.Attach(l.Attrs().Index, "x0")
				}); err != nil {
					t.Fatalf("load and attach: %v", err)
				}
				return dp
			}

			dp := load()
			if dp.Mode() != mode {
				t.Fatalf("mode %s, want %s", dp.Mode(), mode)
			}
			first, n := attachedProgram(t, ns, "x0", mode)
			if n != 1 {
				t.Fatalf("%d attachments after the first agent, want 1", n)
			}
			dp.Close() // the agent exits: the datapath stays attached
			if id, n := attachedProgram(t, ns, "x0", mode); id != first || n != 1 {
				t.Fatalf("after the agent exited: program %d (%d attachments), want %d", id, n, first)
			}

			// A restarted agent replaces the program in place and adopts
			// the maps.
			dp = load()
			defer dp.Close()
			second, n := attachedProgram(t, ns, "x0", mode)
			if n != 1 || second == first {
				t.Fatalf("after restart: program %d (%d attachments), want one new program", second, n)
			}
			pinnedProg, err := ebpf.LoadPinnedProgram(filepath.Join(dir, bpf.SluiceProgSluiceIngress), nil)
			if err != nil {
				t.Fatal(err)
			}
			if info, err := pinnedProg.Info(); err != nil {
				t.Fatal(err)
			} else if id, _ := info.ID(); id != second {
				t.Errorf("pinned program %d, attached %d", id, second)
			}
			pinnedProg.Close()
			if err := dp.Maps.LB4.Backends.Put(7, bpf.SluiceLb4Backend{Address: 1, Flags: 1}); err != nil {
				t.Fatal(err)
			}
			pinned, err := ebpf.LoadPinnedMap(filepath.Join(dir, bpf.SluiceMapLb4Backends), nil)
			if err != nil {
				t.Fatal(err)
			}
			var be bpf.SluiceLb4Backend
			if err := pinned.Lookup(uint32(7), &be); err != nil || be.Address != 1 {
				t.Errorf("restarted agent does not use the pinned lb4_backends: %+v %v", be, err)
			}
			pinned.Close()

			if err := ns.Do(func() error { return Uninstall(dir, quietLog(&logs)) }); err != nil {
				t.Fatalf("uninstall: %v", err)
			}
			if _, n := attachedProgram(t, ns, "x0", mode); n != 0 {
				t.Errorf("%d attachments left after uninstall", n)
			}
			if _, err := os.Stat(dir); !os.IsNotExist(err) {
				t.Errorf("pin dir still there after uninstall: %v", err)
			}
		})
	}
}

// Uninstall leaves another agent's attachment alone.
func TestUninstallRemovesOnlyItsOwn(t *testing.T) {
	ns := vethNS(t)
	mine, theirs := pinDir(t), pinDir(t)+"-other"
	t.Cleanup(func() { os.RemoveAll(theirs) })
	var logs bytes.Buffer
	err := ns.Do(func() error {
		for dir, dev := range map[string]string{mine: "x0", theirs: "x1"} {
			dp, err := Load(Options{PinDir: dir, Attach: AttachTC, Log: quietLog(&logs)})
			if err != nil {
				return err
			}
			l, _ := netlink.LinkByName(dev)
			if err := dp.Attach(l.Attrs().Index, dev); err != nil {
				return err
			}
			dp.Close()
		}
		return Uninstall(mine, quietLog(&logs))
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, n := attachedProgram(t, ns, "x0", AttachTC); n != 0 {
		t.Error("own filter left on x0")
	}
	if _, n := attachedProgram(t, ns, "x1", AttachTC); n != 1 {
		t.Error("the other agent's filter on x1 was removed")
	}
}

func TestPinnedMapResizedIsMigrated(t *testing.T) {
	testenv.Privileged(t)
	dir := pinDir(t)
	var logs bytes.Buffer
	dp, err := Load(Options{PinDir: dir, MaxEntries: map[string]uint32{bpf.SluiceMapLb4Backends: 64}, Log: quietLog(&logs)})
	if err != nil {
		t.Fatal(err)
	}
	if err := dp.Maps.LB4.Backends.Put(9, bpf.SluiceLb4Backend{Address: 99, Flags: 1}); err != nil {
		t.Fatal(err)
	}
	dp.Close()

	dp, err = Load(Options{PinDir: dir, MaxEntries: map[string]uint32{bpf.SluiceMapLb4Backends: 128}, Log: quietLog(&logs)})
	if err != nil {
		t.Fatal(err)
	}
	defer dp.Close()
	if got := dp.Objs.Lb4Backends.MaxEntries(); got != 128 {
		t.Errorf("max entries %d, want 128", got)
	}
	if be, err := dp.Maps.LB4.Backends.Lookup(9); err != nil || be.Address != 99 {
		t.Errorf("entry not migrated: %+v %v", be, err)
	}
	if !strings.Contains(logs.String(), "entries migrated") {
		t.Errorf("no migration log line in:\n%s", logs.String())
	}
}

// A pinned map whose entries this binary cannot read is recreated empty and
// logged: another key size, or lb4_services as agents before session
// affinity made it (value 12 bytes, now 20).
func TestIncompatiblePinnedMapIsRecreated(t *testing.T) {
	for _, c := range []struct {
		name             string
		keySize, valSize uint32
	}{
		{"other key size", 4, 4},
		{"lb4_services before affinity", 12, 12},
	} {
		t.Run(c.name, func(t *testing.T) {
			testenv.Privileged(t)
			dir := pinDir(t)
			if err := os.MkdirAll(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			old, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Hash, KeySize: c.keySize, ValueSize: c.valSize, MaxEntries: 8})
			if err != nil {
				t.Fatal(err)
			}
			if err := old.Put(make([]byte, c.keySize), make([]byte, c.valSize)); err != nil {
				t.Fatal(err)
			}
			if err := old.Pin(filepath.Join(dir, bpf.SluiceMapLb4Services)); err != nil {
				t.Fatal(err)
			}
			old.Close()
			var logs bytes.Buffer
			dp, err := Load(Options{PinDir: dir, Log: quietLog(&logs)})
			if err != nil {
				t.Fatalf("load over an incompatible pin: %v", err)
			}
			defer dp.Close()
			if ks, vs := dp.Objs.Lb4Services.KeySize(), dp.Objs.Lb4Services.ValueSize(); ks != 12 || vs != 20 {
				t.Errorf("lb4_services key size %d, value size %d; want 12, 20", ks, vs)
			}
			n := 0
			if err := dp.Maps.LB4.Services.Each(func(bpf.SluiceLb4Key, bpf.SluiceLb4Service) bool { n++; return true }); err != nil || n != 0 {
				t.Errorf("recreated lb4_services holds %d entries (%v), want none", n, err)
			}
			if !strings.Contains(logs.String(), "layout changed: recreating it empty") || !strings.Contains(logs.String(), "lb4_services") {
				t.Errorf("no clear log line:\n%s", logs.String())
			}
		})
	}
}
