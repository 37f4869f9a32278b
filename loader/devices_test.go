package loader

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/sluice-lb/sluice/internal/netlab"
	"github.com/sluice-lb/sluice/internal/testenv"
)

// The default selection and what a device list changes, on the links as
// netlink describes them. Bonds and VLANs are described rather than
// created: not every kernel the tests run on has their drivers.
func TestDeviceChoice(t *testing.T) {
	attrs := func(name string, index int, encap string) netlink.LinkAttrs {
		return netlink.LinkAttrs{Name: name, Index: index, EncapType: encap, NetNsID: -1}
	}
	with := func(a netlink.LinkAttrs, f func(*netlink.LinkAttrs)) netlink.LinkAttrs { f(&a); return a }
	br := &netlink.Bridge{LinkAttrs: attrs("br0", 10, "ether")}
	bond := &netlink.Bond{LinkAttrs: attrs("bond0", 11, "ether")}
	eth := &netlink.Device{LinkAttrs: attrs("eth0", 12, "ether")}
	byIndex := map[int]netlink.Link{10: br, 11: bond, 12: eth}
	master := func(i int) netlink.Link { return byIndex[i] }

	cases := []struct {
		link          netlink.Link
		serve, listed bool // by default, and named in a device list
		refused       bool
	}{
		{&netlink.Veth{LinkAttrs: attrs("veth1", 2, "ether")}, true, true, false},
		{eth, true, true, false},
		{&netlink.Device{LinkAttrs: with(attrs("lo", 1, "loopback"), func(a *netlink.LinkAttrs) { a.RawFlags = unix.IFF_LOOPBACK })}, false, true, false},
		{&netlink.Tuntap{LinkAttrs: attrs("tun0", 3, "none"), Mode: netlink.TUNTAP_MODE_TUN}, false, false, true},
		{&netlink.Tuntap{LinkAttrs: attrs("tap0", 4, "ether"), Mode: netlink.TUNTAP_MODE_TAP}, true, true, false},
		{&netlink.Wireguard{LinkAttrs: attrs("wg0", 5, "none")}, false, false, true},
		{&netlink.Iptun{LinkAttrs: attrs("ipip0", 6, "ipip")}, false, false, true},
		{br, false, true, false},
		{&netlink.Veth{LinkAttrs: with(attrs("port0", 7, "ether"), func(a *netlink.LinkAttrs) { a.MasterIndex = 10 })}, true, true, false},
		{bond, true, true, false},
		{&netlink.Device{LinkAttrs: with(attrs("eth1", 8, "ether"), func(a *netlink.LinkAttrs) { a.MasterIndex = 11 })}, false, true, false},
		{&netlink.Vlan{LinkAttrs: with(attrs("eth0.5", 9, "ether"), func(a *netlink.LinkAttrs) { a.ParentIndex = 12 }), VlanId: 5}, false, true, false},
		// Parent in another namespace: nothing here sees its frames.
		{&netlink.Vlan{LinkAttrs: with(attrs("pod0.5", 13, "ether"), func(a *netlink.LinkAttrs) { a.ParentIndex = 12; a.NetNsID = 0 }), VlanId: 5}, true, true, false},
		{&netlink.Macvlan{LinkAttrs: with(attrs("mv0", 14, "ether"), func(a *netlink.LinkAttrs) { a.ParentIndex = 12 }), Mode: netlink.MACVLAN_MODE_BRIDGE}, false, true, false},
		{&netlink.Macvtap{Macvlan: netlink.Macvlan{LinkAttrs: with(attrs("mvt0", 15, "ether"), func(a *netlink.LinkAttrs) { a.ParentIndex = 12 })}}, false, true, false},
		{&netlink.IPVlan{LinkAttrs: with(attrs("iv0", 16, "ether"), func(a *netlink.LinkAttrs) { a.ParentIndex = 12 }), Mode: netlink.IPVLAN_MODE_L2}, false, true, false},
		{&netlink.IPVtap{IPVlan: netlink.IPVlan{LinkAttrs: with(attrs("ivt0", 17, "ether"), func(a *netlink.LinkAttrs) { a.ParentIndex = 12 })}}, false, true, false},
		{&netlink.Macvlan{LinkAttrs: with(attrs("podmv0", 18, "ether"), func(a *netlink.LinkAttrs) { a.ParentIndex = 12; a.NetNsID = 0 })}, true, true, false},
	}
	for _, c := range cases {
		name := c.link.Attrs().Name
		t.Run(name, func(t *testing.T) {
			def := DeviceMatcher(nil).choose(c.link, master)
			if def.serve != c.serve || def.refused != c.refused {
				t.Errorf("default: served %v refused %v (%s), want served %v refused %v", def.serve, def.refused, def.reason, c.serve, c.refused)
			}
			if !def.serve && def.reason == "" {
				t.Error("not served without a reason")
			}
			listed := DeviceMatcher{"nothing", name}.choose(c.link, master)
			if listed.serve != c.listed || listed.refused != c.refused {
				t.Errorf("listed: served %v refused %v (%s), want served %v refused %v", listed.serve, listed.refused, listed.reason, c.listed, c.refused)
			}
			if other := (DeviceMatcher{"nothing*"}).choose(c.link, master); other.serve {
				t.Error("served while the list names other devices only")
			}
		})
	}
}

// syncBuffer is a log the serving goroutine writes while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// served is one ServeDevices run inside a namespace.
type served struct {
	dp    *Datapath
	stop  func()
	names []string
}

func serve(t *testing.T, ns *netlab.NS, dir string, m DeviceMatcher, log *syncBuffer) *served {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan []string, 1)
	done := make(chan error, 1)
	s := &served{}
	loaded := make(chan error, 1)
	go func() {
		done <- ns.Do(func() error {
			var err error
			s.dp, err = Load(Options{PinDir: dir, Log: slog.New(slog.NewTextHandler(log, &slog.HandlerOptions{Level: slog.LevelDebug}))})
			loaded <- err
			if err != nil {
				return err
			}
			return s.dp.ServeDevices(ctx, m, func(n []string) { ready <- n }, func(err error) { t.Errorf("serve devices: %v", err) })
		})
	}()
	if err := <-loaded; err != nil {
		t.Fatal(err)
	}
	select {
	case s.names = <-ready:
	case err := <-done:
		t.Fatalf("serve devices ended: %v", err)
	case <-time.After(testenv.Scaled(10 * time.Second)):
		t.Fatal("devices not attached after 10s")
	}
	var once sync.Once
	s.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("serve devices: %v", err)
			}
			s.dp.Close()
		})
	}
	t.Cleanup(s.stop)
	return s
}

// attachments counts sluice's attachments on dev, per hook.
func (s *served) attachments(t *testing.T, ns *netlab.NS, dev string) []int {
	t.Helper()
	var n []int
	for _, h := range hooks {
		n = append(n, len(chain(t, ns, dev, h, s.dp.Mode())))
	}
	return n
}

func (s *served) wantAttached(t *testing.T, ns *netlab.NS, dev string, want int) {
	t.Helper()
	if got := s.attachments(t, ns, dev); got[0] != want || got[1] != want {
		t.Errorf("%s: %v attachments at ingress, egress; want %d each", dev, got, want)
	}
}

// waitAttached waits until dev has want attachments on each hook: a
// device created after the others is a marker that every link update
// sent before it has been handled.
func (s *served) waitAttached(t *testing.T, ns *netlab.NS, dev string, want int) {
	t.Helper()
	testenv.WaitFor(t, dev+" attached", 5*time.Second, func() error {
		if _, err := ns.Netlink().LinkByName(dev); err != nil {
			return err
		}
		if got := s.attachments(t, ns, dev); got[0] != want || got[1] != want {
			return fmt.Errorf("%v attachments", got)
		}
		// Pinned once attached: the pin is the last step.
		for _, h := range hooks {
			_, err := os.Stat(s.dp.tcxPin(h, ifindex(t, ns, dev)))
			if s.dp.Mode() == AttachTCX && (err == nil) != (want > 0) {
				return fmt.Errorf("%s link pin: %v", h.name, err)
			}
		}
		return nil
	})
}

func rename(t *testing.T, ns *netlab.NS, from, to string) {
	t.Helper()
	nl := ns.Netlink()
	l, err := nl.LinkByName(from)
	if err != nil {
		t.Fatal(err)
	}
	// As `ip link set X name Y`: the kernel renames only a device that is down.
	if err := nl.LinkSetDown(l); err != nil {
		t.Fatal(err)
	}
	if err := nl.LinkSetName(l, to); err != nil {
		t.Fatal(err)
	}
	if err := nl.LinkSetUp(l); err != nil {
		t.Fatal(err)
	}
}

// devicesNS is a namespace with veths x0/x1, a bridge br0 with port p0
// (peer p1), and a tun device tun0, which has no Ethernet header.
func devicesNS(t *testing.T) *netlab.NS {
	t.Helper()
	ns := vethNS(t)
	nl := ns.Netlink()
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0"}}
	if err := nl.LinkAdd(br); errors.Is(err, unix.EOPNOTSUPP) {
		testenv.Unavailable(t, "kernel has no bridge driver: %v", err)
	} else if err != nil {
		t.Fatal(err)
	}
	if err := netlab.Veth(ns, "p0", ns, "p1"); err != nil {
		t.Fatal(err)
	}
	p0, _ := nl.LinkByName("p0")
	if err := nl.LinkSetMaster(p0, br); err != nil {
		t.Fatal(err)
	}
	addTun(t, ns, "tun0")
	return ns
}

func addTun(t *testing.T, ns *netlab.NS, name string) {
	t.Helper()
	// The tun device is made in the namespace of the thread opening
	// /dev/net/tun.
	if err := ns.Do(func() error {
		return netlink.LinkAdd(&netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: name}, Mode: netlink.TUNTAP_MODE_TUN})
	}); errors.Is(err, os.ErrNotExist) {
		testenv.Unavailable(t, "kernel has no tun driver (/dev/net/tun): %v", err)
	} else if err != nil {
		t.Fatalf("add tun device: %v", err)
	}
	if err := ns.Netlink().LinkSetUp(mustLink(t, ns, name)); err != nil {
		t.Fatal(err)
	}
}

func mustLink(t *testing.T, ns *netlab.NS, name string) netlink.Link {
	t.Helper()
	l, err := ns.Netlink().LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// The default selection on real devices: the veths and the bridge port are
// served, the bridge is not, the tun device is refused with one log line
// however often it changes. A renamed device keeps exactly one
// attachment, while the agent runs and across a restart.
func TestServeDevicesDefault(t *testing.T) {
	ns := devicesNS(t)
	dir := pinDir(t)
	var log syncBuffer
	s := serve(t, ns, dir, nil, &log)
	for _, dev := range []string{"x0", "x1", "p0", "p1"} {
		s.wantAttached(t, ns, dev, 1)
	}
	for _, dev := range []string{"br0", "tun0", "lo"} {
		s.wantAttached(t, ns, dev, 0)
	}

	tun := mustLink(t, ns, "tun0")
	for range 3 { // link updates: the refusal is not logged again
		ns.Netlink().LinkSetDown(tun)
		ns.Netlink().LinkSetUp(tun)
	}
	rename(t, ns, "x0", "y0")
	if err := netlab.Veth(ns, "m0", ns, "m1"); err != nil {
		t.Fatal(err)
	}
	s.waitAttached(t, ns, "m0", 1)
	s.waitAttached(t, ns, "m1", 1)
	s.wantAttached(t, ns, "y0", 1)
	refusals := strings.Count(log.String(), "device refused")
	if refusals != 1 || !strings.Contains(log.String(), `device refused" device=tun0 reason="no Ethernet header (link type none)`) {
		t.Errorf("%d refusals logged, want one for tun0:\n%s", refusals, log.String())
	}
	pins, _ := filepath.Glob(filepath.Join(dir, "links", "*"))
	if s.dp.Mode() == AttachTCX && len(pins) != 2*6 { // x0 (y0), x1, p0, p1, m0, m1
		t.Errorf("%d link pins, want 12: %v", len(pins), pins)
	}

	// Renamed while no agent runs, then a new agent.
	s.stop()
	rename(t, ns, "y0", "z0")
	s = serve(t, ns, dir, nil, &log)
	s.wantAttached(t, ns, "z0", 1)
	s.wantAttached(t, ns, "m0", 1)
}

// A device list overrides the default skips (the bridge is served), not
// the refusal of a device without an Ethernet header; a device renamed out
// of the list is detached.
func TestServeDevicesListed(t *testing.T) {
	ns := devicesNS(t)
	dir := pinDir(t)
	var log syncBuffer
	s := serve(t, ns, dir, DeviceMatcher{"x1", "br0", "tun*", "m*"}, &log)
	for dev, want := range map[string]int{"x1": 1, "br0": 1, "tun0": 0, "x0": 0, "p0": 0} {
		s.wantAttached(t, ns, dev, want)
	}
	if !strings.Contains(log.String(), `device refused" device=tun0`) {
		t.Errorf("no refusal of tun0 logged:\n%s", log.String())
	}
	rename(t, ns, "x1", "w1")
	if err := netlab.Veth(ns, "m0", ns, "m1"); err != nil {
		t.Fatal(err)
	}
	s.waitAttached(t, ns, "m0", 1)
	s.wantAttached(t, ns, "w1", 0)
	if err := ns.Do(func() error { return Uninstall(dir, slog.New(slog.NewTextHandler(io.Discard, nil))) }); err != nil {
		t.Fatal(err)
	}
}

// Link pins of agents that named them by device are adopted under the
// names by index: the restarted agent updates those links instead of
// attaching second ones.
func TestDeviceNamedLinkPinsAreAdopted(t *testing.T) {
	testenv.SkipOnOldKernel(t, "6.6", "TCX")
	ns := vethNS(t)
	dir := pinDir(t)
	var logs bytes.Buffer
	opts := Options{PinDir: dir, Attach: AttachTCX, Log: quietLog(&logs)}
	dp, err := loadAttach(t, ns, opts, "x0")
	if err != nil {
		t.Fatal(err)
	}
	idx := ifindex(t, ns, "x0")
	for _, h := range hooks {
		old := filepath.Join(dir, "links", "tcx_"+h.name+"_x0")
		if err := os.Rename(dp.tcxPin(h, idx), old); err != nil {
			t.Fatal(err)
		}
	}
	dp.Close()
	dp, err = loadAttach(t, ns, opts, "x0")
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hooks {
		if ids := chain(t, ns, "x0", h, AttachTCX); len(ids) != 1 || ids[0] != programID(t, h.program(dp)) {
			t.Errorf("%s: programs %v, want the restarted agent's only", h.name, ids)
		}
	}
	pins, _ := filepath.Glob(filepath.Join(dir, "links", "*"))
	if len(pins) != 2 || !strings.HasSuffix(pins[0], fmt.Sprintf("_if%d", idx)) {
		t.Errorf("link pins %v, want two named by index", pins)
	}
	if err := ns.Do(func() error { return Uninstall(dir, quietLog(&logs)) }); err != nil {
		t.Fatal(err)
	}
}

// addDriverLink adds l in ns, skipping t when the kernel has no driver for
// it: bonding and 8021q are modules some kernels the tests run on lack
// (the VM kernels have them).
func addDriverLink(t *testing.T, ns *netlab.NS, l netlink.Link) {
	t.Helper()
	if err := ns.Netlink().LinkAdd(l); errors.Is(err, unix.EOPNOTSUPP) {
		t.Skipf("kernel has no %s driver: %v", l.Type(), err)
	} else if err != nil {
		t.Fatalf("add %s %s: %v", l.Type(), l.Attrs().Name, err)
	}
}

func setMaster(t *testing.T, ns *netlab.NS, dev string, master netlink.Link) {
	t.Helper()
	nl := ns.Netlink()
	l := mustLink(t, ns, dev)
	if err := nl.LinkSetDown(l); err != nil { // a bond takes ports that are down
		t.Fatal(err)
	}
	var err error
	if master == nil {
		err = nl.LinkSetNoMaster(l)
	} else {
		err = nl.LinkSetMaster(l, master)
	}
	if err != nil {
		t.Fatalf("set master of %s: %v", dev, err)
	}
	if err := nl.LinkSetUp(l); err != nil {
		t.Fatal(err)
	}
}

// Stacked devices on real drivers: a bond is served and its ports are not,
// a VLAN device is not and its parent is. A device enslaved to the bond
// while the agent runs is detached, and attached again once released.
func TestServeDevicesStacked(t *testing.T) {
	ns := vethNS(t)
	dir := pinDir(t)
	bond := netlink.NewLinkBond(netlink.LinkAttrs{Name: "bd0"})
	bond.Mode = netlink.BOND_MODE_ACTIVE_BACKUP
	addDriverLink(t, ns, bond)
	addDriverLink(t, ns, &netlink.Vlan{LinkAttrs: netlink.LinkAttrs{Name: "x0.5", ParentIndex: ifindex(t, ns, "x0")}, VlanId: 5})
	if err := netlab.Veth(ns, "s0", ns, "s1"); err != nil {
		t.Fatal(err)
	}
	bd := mustLink(t, ns, "bd0")
	setMaster(t, ns, "s0", bd)
	if err := ns.Netlink().LinkSetUp(bd); err != nil {
		t.Fatal(err)
	}

	var log syncBuffer
	s := serve(t, ns, dir, nil, &log)
	for dev, want := range map[string]int{"bd0": 1, "s0": 0, "s1": 1, "x0": 1, "x0.5": 0, "x1": 1} {
		s.wantAttached(t, ns, dev, want)
	}
	for _, line := range []string{
		`device not served" device=s0 reason="port of bond bd0: served there"`,
		`device not served" device=x0.5 reason="VLAN on x0`,
	} {
		if !strings.Contains(log.String(), line) {
			t.Errorf("no %q in the log:\n%s", line, log.String())
		}
	}

	setMaster(t, ns, "x1", bd)
	s.waitAttached(t, ns, "x1", 0)
	setMaster(t, ns, "x1", nil)
	s.waitAttached(t, ns, "x1", 1)
	s.wantAttached(t, ns, "bd0", 1)
}
