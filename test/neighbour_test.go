package test

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"

	"github.com/sluice-lb/sluice/internal/netlab"
	"github.com/sluice-lb/sluice/internal/testenv"
)

// A tun device on the node (an L3 device: no Ethernet header, as a VPN's)
// is refused with one log line naming it and why, and nothing is attached
// to it; ClusterIP traffic over the pods' veths is served all the same. A
// tun device appearing while the agent runs is refused too.
func TestL3DeviceIsRefused(t *testing.T) {
	for _, mode := range attachModes {
		t.Run(mode, func(t *testing.T) {
			requireMode(t, mode)
			c := newCluster(t, 2, mode)
			addTun(t, c.topo.Node, "tun0")
			c.write("whoami.yaml", whoamiManifest(1, 2))
			c.startAgent()

			refusal := func(dev string) string {
				return fmt.Sprintf(`msg="device refused" device=%s reason="no Ethernet header (link type none): the datapath parses Ethernet frames only"`, dev)
			}
			if n := strings.Count(c.readAgentLog(), refusal("tun0")); n != 1 {
				t.Errorf("%d lines %s in the agent log, want 1", n, refusal("tun0"))
			}
			for _, proto := range []string{"tcp", "udp"} {
				for range 10 {
					if who, err := c.ask(proto, vip+":80"); err != nil || !strings.HasPrefix(who, "backend-") {
						t.Fatalf("%s to the ClusterIP: answered by %q (%v)", proto, who, err)
					}
				}
			}

			addTun(t, c.topo.Node, "tun1")
			c.waitFor("tun1 refused", 5*time.Second, func() error {
				if !strings.Contains(c.readAgentLog(), refusal("tun1")) {
					return fmt.Errorf("no %s in the agent log", refusal("tun1"))
				}
				return nil
			})
			for _, dev := range []string{"tun0", "tun1"} {
				if n := programsOn(t, c.topo.Node, dev); n != 0 {
					t.Errorf("%d programs attached to %s, want none", n, dev)
				}
			}
			if n := programsOn(t, c.topo.Node, netlab.NodeClientDev); n != 2 {
				t.Errorf("%d programs on the client's veth, want sluice's two", n)
			}
		})
	}
}

// addTun creates a persistent tun device in ns, up, as `ip tuntap add mode
// tun` does: the device is made in the namespace of the thread that opens
// /dev/net/tun.
func addTun(t *testing.T, ns *netlab.NS, name string) {
	t.Helper()
	if err := ns.Do(func() error {
		return netlink.LinkAdd(&netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: name}, Mode: netlink.TUNTAP_MODE_TUN})
	}); errors.Is(err, os.ErrNotExist) {
		testenv.Unavailable(t, "kernel has no tun driver (/dev/net/tun): %v", err)
	} else if err != nil {
		t.Fatalf("add tun device %s: %v", name, err)
	}
	l, err := ns.Netlink().LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := ns.Netlink().LinkSetUp(l); err != nil {
		t.Fatal(err)
	}
}

// programsOn counts the tc programs on dev, TCX and clsact, both directions.
func programsOn(t *testing.T, ns *netlab.NS, dev string) int {
	t.Helper()
	l, err := ns.Netlink().LinkByName(dev)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	if testenv.KernelAtLeast("6.6") {
		for _, at := range []ebpf.AttachType{ebpf.AttachTCXIngress, ebpf.AttachTCXEgress} {
			if err := ns.Do(func() error {
				res, err := link.QueryPrograms(link.QueryOptions{Target: l.Attrs().Index, Attach: at})
				if err == nil {
					n += len(res.Programs)
				}
				return err
			}); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, parent := range []uint32{netlink.HANDLE_MIN_INGRESS, netlink.HANDLE_MIN_EGRESS} {
		filters, err := ns.Netlink().FilterList(l, parent)
		if err != nil {
			continue // no clsact qdisc
		}
		for _, f := range filters {
			if bf, ok := f.(*netlink.BpfFilter); ok && bf.Id != 0 {
				n++
			}
		}
	}
	return n
}
