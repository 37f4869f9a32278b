package test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/sluice-lb/sluice/control"
	"github.com/sluice-lb/sluice/control/lbipam"
	"github.com/sluice-lb/sluice/internal/agenttest"
	"github.com/sluice-lb/sluice/internal/netlab"
	"github.com/sluice-lb/sluice/loader"
)

// announcedIP is a load-balancer address on the underlay's own subnet,
// which the external client reaches on-link, with no route: by ARP alone.
const announcedIP = "192.168.50.200"

// underlayOf is the node's underlay device as the announcer sees it.
func underlayOf(t *testing.T, n *mnode) lbipam.Device {
	t.Helper()
	var d lbipam.Device
	if err := n.NS.Do(func() error {
		l, err := netlink.LinkByName(netlab.UnderlayDev)
		if err != nil {
			return err
		}
		d = lbipam.Device{Ifindex: l.Attrs().Index, MAC: l.Attrs().HardwareAddr}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return d
}

// announce makes the node's l2_announce4 hold addrs on its underlay, as
// its announcer would, through the pinned maps; it returns what was added.
func (n *mnode) announce(t *testing.T, addrs ...netip.Addr) []control.L2Entry {
	t.Helper()
	dp, closeMaps, err := loader.OpenPinnedMapsWritable(n.pinDir)
	if err != nil {
		t.Fatal(err)
	}
	defer closeMaps()
	d := underlayOf(t, n)
	var want []control.L2Entry
	for _, a := range addrs {
		want = append(want, control.L2Entry{Ifindex: d.Ifindex, Addr: a, MAC: d.MAC})
	}
	added, err := control.NewL2Reconciler(dp.L2Announce, nil).Apply(want)
	if err != nil {
		t.Fatal(err)
	}
	return added
}

// clientNeighbour is the external client's neighbour entry for a: its
// MAC, "" when it has none that is usable.
func clientNeighbour(c *multiCluster, a netip.Addr) (string, error) {
	var mac string
	err := c.external().Do(func() error {
		l, err := netlink.LinkByName(netlab.UnderlayDev)
		if err != nil {
			return err
		}
		ns, err := netlink.NeighList(l.Attrs().Index, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		for _, n := range ns {
			if n.IP.Equal(a.AsSlice()) && n.State&(netlink.NUD_REACHABLE|netlink.NUD_STALE|netlink.NUD_DELAY|netlink.NUD_PROBE|netlink.NUD_PERMANENT) != 0 {
				mac = n.HardwareAddr.String()
			}
		}
		return nil
	})
	return mac, err
}

func flushClientNeighbour(t *testing.T, c *multiCluster, a netip.Addr) {
	t.Helper()
	if err := c.external().Do(func() error {
		l, err := netlink.LinkByName(netlab.UnderlayDev)
		if err != nil {
			return err
		}
		err = netlink.NeighDel(&netlink.Neigh{LinkIndex: l.Attrs().Index, IP: net.IP(a.AsSlice()), Family: netlink.FAMILY_V4})
		if err != nil && err.Error() != "no such file or directory" {
			return err
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// l2List is `sluice l2 list -o json` run in the node's namespace.
func (n *mnode) l2List(t *testing.T) []map[string]any {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(self, "l2", "list", "-o", "json", "--pin-dir", n.pinDir)
	cmd.Env = append(os.Environ(), runAsSluice+"=1")
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := n.NS.Start(cmd); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("l2 list: %v: %s", err, stderr.String())
	}
	var rows []map[string]any
	if err := json.Unmarshal(stdout.Bytes(), &rows); err != nil {
		t.Fatalf("l2 list output %q: %v", stdout.String(), err)
	}
	return rows
}

// A load-balancer address announced by one node's datapath is reached by
// an on-link client with no route: the client resolves it to that node's
// MAC, also while the node's agent is down; when the announcement moves to
// another node, whose gratuitous ARPs follow, the client's neighbour entry
// and its traffic follow them.
func TestL2AnnouncementFailover(t *testing.T) {
	c := newMultiCluster(t, 2, 1, "auto")
	addr := netip.MustParseAddr(announcedIP)
	c.write("lb.yaml", podService(svcSpec{Name: "lb", ClusterIP: vip, NodePort: npPort, Spec: fmt.Sprintf(
		"  type: LoadBalancer\nstatus:\n  loadBalancer:\n    ingress: [{ip: %s, ipMode: VIP}]", announcedIP)},
		c.node(1).pod(1), c.node(2).pod(1)))
	c.startAgents()
	n1, n2 := c.node(1), c.node(2)
	mac1, mac2 := underlayOf(t, n1).MAC.String(), underlayOf(t, n2).MAC.String()

	// Nothing announces it yet: the client cannot resolve it.
	if a, err := c.ask(c.external(), "tcp", announcedIP+":80"); err == nil {
		t.Fatalf("answered before any announcement: %+v", a)
	}
	if added := n1.announce(t, addr); len(added) != 1 {
		t.Fatalf("node 1 added %v, want the address", added)
	}
	// The datapath answers, not the agent: stop it first.
	n1.killAgent()
	flushClientNeighbour(t, c, addr)
	before := agenttest.Counter(t, n1.pinDir, "l2-announce-reply")
	a := c.waitAnswer(c.external(), "tcp", announcedIP+":80")
	if a.Hostname != n1.pod(1).Name && a.Hostname != n2.pod(1).Name {
		t.Errorf("answered by %q, not a backend", a.Hostname)
	}
	if mac, err := clientNeighbour(c, addr); err != nil || mac != mac1 {
		t.Fatalf("client resolves %s to %q (%v), want node 1's %s", addr, mac, err, mac1)
	}
	if after := agenttest.Counter(t, n1.pinDir, "l2-announce-reply"); after <= before {
		t.Errorf("node 1's l2-announce-reply stayed at %d", after)
	}
	n1.startAgent()

	// The announcement moves to node 2: node 1 withdraws, node 2 takes
	// it and sends its gratuitous ARPs.
	n1.announce(t)
	added := n2.announce(t, addr)
	if len(added) != 1 {
		t.Fatalf("node 2 added %v, want the address", added)
	}
	d2 := underlayOf(t, n2)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sent := make(chan error, lbipam.GARPCount)
	go n2.NS.Do(func() error {
		lbipam.AnnounceTakeover(ctx, d2.Ifindex, addr, d2.MAC, func(err error) { sent <- err })
		close(sent)
		return nil
	})
	c.waitFor("the client's neighbour entry to move to node 2", 10*time.Second, func() error {
		mac, err := clientNeighbour(c, addr)
		if err != nil {
			return err
		}
		if mac != mac2 {
			return fmt.Errorf("client resolves %s to %q, want node 2's %s", addr, mac, mac2)
		}
		return nil
	})
	for err := range sent {
		t.Errorf("gratuitous ARP: %v", err)
	}
	if rows := n2.l2List(t); len(rows) != 1 || rows[0]["addr"] != announcedIP || rows[0]["device"] != netlab.UnderlayDev ||
		rows[0]["mac"] != mac2 || rows[0]["ifindex"] != float64(d2.Ifindex) {
		t.Errorf("node 2's l2 list %v, want %s on %s at %s", rows, announcedIP, netlab.UnderlayDev, mac2)
	}
	if rows := n1.l2List(t); len(rows) != 0 {
		t.Errorf("node 1's l2 list %v after withdrawing, want none", rows)
	}
	before2 := agenttest.Counters(t, n2.pinDir)
	a = c.waitAnswer(c.external(), "tcp", announcedIP+":80")
	if a.Hostname != n1.pod(1).Name && a.Hostname != n2.pod(1).Name {
		t.Errorf("answered by %q, not a backend", a.Hostname)
	}
	if after := agenttest.Counters(t, n2.pinDir); after["new-flow"] <= before2["new-flow"] {
		t.Errorf("node 2 translated no new flow after the takeover: %v -> %v", before2["new-flow"], after["new-flow"])
	}
}
