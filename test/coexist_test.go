package test

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-lb/sluice/internal/testenv"
)

// The datapath shares the node with its routing and its firewall. Forward
// packets are translated at ingress, before PREROUTING, and replies at
// egress, after POSTROUTING, so both see each flow as one client <->
// backend connection: strict rp_filter finds each reply's source routed
// back through the device it came in on, and netfilter's conntrack sees
// the backend's answer as the reply of the client's packets, neither
// INVALID (a SYN-ACK out of nowhere) nor a NEW connection of its own.

// Strict reverse-path filtering on every device of the node, as many
// distributions set it, leaves ClusterIP TCP and UDP working.
func TestServiceUnderStrictRPFilter(t *testing.T) {
	eachMode(t, 2, whoamiManifest(1, 2), func(t *testing.T, c *cluster) {
		if err := c.topo.Node.StrictRPFilter(); err != nil {
			t.Fatal(err)
		}
		c.askEach(t, 20)
	})
}

// A stateful nftables firewall on the node (drop INVALID, accept
// established) leaves ClusterIP TCP and UDP working, classes no packet of
// theirs INVALID, and sees the backends' answers as replies.
func TestServiceUnderConntrackFirewall(t *testing.T) {
	requireNft(t)
	eachMode(t, 2, whoamiManifest(1, 2), func(t *testing.T, c *cluster) {
		fw := newStatefulFirewall(t, c)
		c.askEach(t, 20)
		fw.check(t, 20)
	})
}

// Both at once, as on a hardened node. REJECT still refuses at once: its
// ICMP error leaves by the client's device without crossing the node's
// routing or firewall.
func TestServiceUnderStrictRPFilterAndConntrackFirewall(t *testing.T) {
	requireNft(t)
	eachMode(t, 2, whoamiManifest(1, 2), func(t *testing.T, c *cluster) {
		if err := c.topo.Node.StrictRPFilter(); err != nil {
			t.Fatal(err)
		}
		fw := newStatefulFirewall(t, c)
		c.askEach(t, 20)
		fw.check(t, 20)
		for _, addr := range []string{emptyVIP + ":80", vip + ":81"} {
			conn, err := c.dial(addr, testenv.Scaled(2*time.Second))
			if conn != nil {
				conn.Close()
			}
			if !errors.Is(err, syscall.ECONNREFUSED) {
				t.Errorf("dial %s: %v, want ECONNREFUSED", addr, err)
			}
		}
	})
}

// askEach makes n whoami requests over TCP (HTTP) and n over UDP, each a
// new connection or socket. Each protocol stops at its first request
// without an answer (an error of the test), so both are always tried.
func (c *cluster) askEach(t *testing.T, n int) {
	t.Helper()
	for _, proto := range []string{"tcp", "udp"} {
		for i := range n {
			if _, err := c.ask(proto, vip+":80"); err != nil {
				t.Errorf("%s request %d of %d to %s: %v", proto, i+1, n, vip, err)
				break
			}
		}
	}
}

// statefulRuleset is a node's stateful firewall. Named counters count the
// INVALID packets each chain drops, and the packets forwarded in the
// reply direction of a connection netfilter tracks, per protocol.
const statefulRuleset = `
table inet filter {
	counter invalid_forward {}
	counter invalid_input {}
	counter reply_tcp {}
	counter reply_udp {}
	chain forward {
		type filter hook forward priority filter; policy accept;
		ct state invalid counter name "invalid_forward" drop
		meta l4proto tcp ct direction reply counter name "reply_tcp"
		meta l4proto udp ct direction reply counter name "reply_udp"
		ct state established,related accept
	}
	chain input {
		type filter hook input priority filter; policy accept;
		ct state invalid counter name "invalid_input" drop
		ct state established,related accept
	}
}
`

// requireNft skips the test where nft is not installed, and fails it
// under CI=true, except in the kernel matrix's VMs: their busybox image has
// neither nft nor the nf_tables modules, and the host run of `make test`
// (whose set-up installs nftables) covers these tests.
func requireNft(t *testing.T) {
	t.Helper()
	if k := os.Getenv("SLUICE_VMTEST_KERNEL"); k != "" {
		t.Skipf("kernel matrix VM (%s): no nftables in its image; run on the host by make test", k)
	}
	if _, err := exec.LookPath("nft"); err != nil {
		testenv.Unavailable(t, "needs nft (nftables): %v", err)
	}
}

type statefulFirewall struct{ c *cluster }

// newStatefulFirewall loads statefulRuleset into the node's namespace (and
// only there: it goes with the namespace). Its ct expressions make the
// namespace track connections.
func newStatefulFirewall(t *testing.T, c *cluster) *statefulFirewall {
	t.Helper()
	if _, err := c.topo.Node.Run(statefulRuleset, "nft", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	return &statefulFirewall{c: c}
}

// counters reads the ruleset's named counters (packets) from the
// namespace's `nft -j list ruleset`.
func (f *statefulFirewall) counters(t *testing.T) map[string]uint64 {
	t.Helper()
	out, err := f.c.topo.Node.Run("", "nft", "-j", "list", "ruleset")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Nftables []struct {
			Counter *struct {
				Family, Table, Name string
				Packets             uint64
			} `json:"counter"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		t.Fatalf("nft -j: %v: %s", err, out)
	}
	got := map[string]uint64{}
	for _, o := range doc.Nftables {
		if o.Counter != nil && o.Counter.Family == "inet" && o.Counter.Table == "filter" {
			got[o.Counter.Name] = o.Counter.Packets
		}
	}
	for _, name := range []string{"invalid_forward", "invalid_input", "reply_tcp", "reply_udp"} {
		if _, ok := got[name]; !ok {
			t.Fatalf("no counter %s in the node's ruleset: %s", name, out)
		}
	}
	return got
}

// check asserts that nothing was INVALID and that each of the n
// connections per protocol had its answers tracked as replies (a TCP
// connection's SYN-ACK at least, a UDP socket's one answer).
func (f *statefulFirewall) check(t *testing.T, n int) {
	t.Helper()
	got := f.counters(t)
	for _, name := range []string{"invalid_forward", "invalid_input"} {
		if got[name] != 0 {
			t.Errorf("conntrack classed %d packets INVALID (%s)", got[name], name)
		}
	}
	for _, name := range []string{"reply_tcp", "reply_udp"} {
		if got[name] < uint64(n) {
			t.Errorf("%s counted %d packets, want at least %d: conntrack did not see the backends' answers as replies",
				name, got[name], n)
		}
	}
	t.Logf("nft counters: %v", got)
}
