package loader

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/sluice-lb/sluice/internal/testenv"
)

// cgroupPrograms returns, by hook, the programs attached to the cgroup
// itself (not inherited) and the links they are attached by.
func cgroupPrograms(t *testing.T, cg string) map[string][]link.AttachedProgram {
	t.Helper()
	f, err := os.Open(cg)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string][]link.AttachedProgram{}
	for _, h := range sockHooks {
		res, err := link.QueryPrograms(link.QueryOptions{Target: int(f.Fd()), Attach: h.attach})
		if err != nil {
			t.Fatalf("query %s: %v", h.name, err)
		}
		out[h.name] = res.Programs
	}
	return out
}

// expectSockAttached checks that each hook of cg runs exactly d's program.
func expectSockAttached(t *testing.T, d *Datapath, cg string) map[string]link.ID {
	t.Helper()
	if root, err := d.SocketLB(); root != cg || err != nil {
		t.Fatalf("SocketLB %q, %v; want %q", root, err, cg)
	}
	links := map[string]link.ID{}
	for name, progs := range cgroupPrograms(t, cg) {
		var h sockHook
		for _, sh := range sockHooks {
			if sh.name == name {
				h = sh
			}
		}
		info, err := h.program(&d.sock.SluiceSockPrograms).Info()
		if err != nil {
			t.Fatal(err)
		}
		want, _ := info.ID()
		if len(progs) != 1 || progs[0].ID != want {
			t.Errorf("%s: attached %v, want exactly program %d", name, progs, want)
			continue
		}
		// The cgroup query reports no link ids on every kernel: the
		// pinned link says which cgroup and hook it is on.
		l, err := link.LoadPinnedLink(d.sockPin(h), nil)
		if err != nil {
			t.Errorf("%s: link pin: %v", name, err)
			continue
		}
		li, err := l.Info()
		l.Close()
		if err != nil {
			t.Fatal(err)
		}
		if cgid, _ := cgroupID(cg); li.Cgroup() == nil || li.Cgroup().CgroupId != cgid || li.Program != want {
			t.Errorf("%s: pinned link %+v, want on cgroup %d with program %d", name, li, cgid, want)
		}
		links[name] = li.ID
	}
	return links
}

func expectSockDetached(t *testing.T, cg string) {
	t.Helper()
	for name, progs := range cgroupPrograms(t, cg) {
		if len(progs) != 0 {
			t.Errorf("%s: still attached: %v", name, progs)
		}
	}
}

func TestSockAttachAdoptDetach(t *testing.T) {
	testenv.Privileged(t)
	cg := testenv.Cgroup(t)
	dir := pinDir(t)
	var logs bytes.Buffer

	d1, err := Load(Options{PinDir: dir, CgroupRoot: cg, Log: quietLog(&logs)})
	if err != nil {
		t.Fatal(err)
	}
	first := expectSockAttached(t, d1, cg)

	// The socket programs use the tc collection's maps, not copies.
	tcMaps := map[ebpf.MapID]bool{}
	for _, m := range mapsByName(&d1.Objs.SluiceMaps) {
		info, err := m.Info()
		if err != nil {
			t.Fatal(err)
		}
		id, _ := info.ID()
		tcMaps[id] = true
	}
	info, err := d1.sock.SluiceSockConnect4.Info()
	if err != nil {
		t.Fatal(err)
	}
	ids, ok := info.MapIDs()
	if !ok {
		t.Fatal("kernel does not report a program's maps")
	}
	shared := 0
	for _, id := range ids {
		if tcMaps[id] {
			shared++
		}
	}
	// All but the program's own .rodata (sock_set_retval and friends).
	if shared != len(ids)-1 {
		t.Errorf("connect4 uses maps %v, of which %d are the datapath's; want all but its .rodata", ids, shared)
	}
	d1.Close()

	// The pinned links outlive the agent: still attached.
	if got := cgroupPrograms(t, cg); len(got["connect4"]) != 1 {
		t.Fatalf("after Close: %v", got)
	}

	// A restarted agent updates the links in place: same links, its programs.
	d2, err := Load(Options{PinDir: dir, CgroupRoot: cg, Log: quietLog(&logs)})
	if err != nil {
		t.Fatal(err)
	}
	if again := expectSockAttached(t, d2, cg); len(again) != len(sockHooks) || !mapsEqual(first, again) {
		t.Errorf("links %v after restart, want the same %v", again, first)
	}
	d2.Close()

	// Another root: the links move, none stays on the old cgroup.
	cg2 := testenv.Cgroup(&subName{t, "2"})
	d3, err := Load(Options{PinDir: dir, CgroupRoot: cg2, Log: quietLog(&logs)})
	if err != nil {
		t.Fatal(err)
	}
	expectSockAttached(t, d3, cg2)
	expectSockDetached(t, cg)
	d3.Close()

	// No root: the previous agent's links are detached.
	d4, err := Load(Options{PinDir: dir, Log: quietLog(&logs)})
	if err != nil {
		t.Fatal(err)
	}
	if root, err := d4.SocketLB(); root != "" || err == nil {
		t.Errorf("SocketLB %q, %v; want none and why", root, err)
	}
	expectSockDetached(t, cg2)
	if pins, _ := filepath.Glob(filepath.Join(dir, "links", "cgroup_*")); len(pins) != 0 {
		t.Errorf("pins left: %v", pins)
	}
	d4.Close()

	// Uninstall detaches them too.
	d5, err := Load(Options{PinDir: dir, CgroupRoot: cg, Log: quietLog(&logs)})
	if err != nil {
		t.Fatal(err)
	}
	expectSockAttached(t, d5, cg)
	d5.Close()
	if err := Uninstall(dir, quietLog(&logs)); err != nil {
		t.Fatal(err)
	}
	expectSockDetached(t, cg)
}

// A root that is no cgroup v2 directory leaves the tc datapath loaded.
func TestSockNotCgroup2(t *testing.T) {
	testenv.Privileged(t)
	var logs bytes.Buffer
	d, err := Load(Options{PinDir: pinDir(t), CgroupRoot: t.TempDir(), Log: quietLog(&logs)})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if _, err := d.SocketLB(); !errors.Is(err, ErrNotCgroup2) {
		t.Errorf("SocketLB error %v, want ErrNotCgroup2", err)
	}
	if d.Objs.SluiceIngress == nil || !bytes.Contains(logs.Bytes(), []byte("socket-level load balancing unavailable")) {
		t.Errorf("want the tc datapath loaded and the reason logged; log:\n%s", logs.String())
	}
}

func mapsEqual(a, b map[string]link.ID) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// subName gives a second cgroup of one test its own name.
type subName struct {
	*testing.T
	suffix string
}

func (s *subName) Name() string { return s.T.Name() + "-" + s.suffix }
