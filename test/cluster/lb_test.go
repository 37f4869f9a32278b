//go:build cluster

package cluster

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sluice-lb/sluice/internal/testenv"
)

// The node answering ARP for a LoadBalancer address goes away (its underlay
// port unplugged, as a pulled cable): once the node is NotReady, the other
// node announces the address with a gratuitous ARP, the external client's
// neighbour entry moves to it and the address answers again, with no route
// or ARP entry set by hand. Plugged back in, the node serves again.
func TestLoadBalancerFailover(t *testing.T) {
	const name = "lb-failover"
	backends(t, name, 30220)
	mustKubectl(t, "patch", "service/"+name, "-p", `{"spec":{"type":"LoadBalancer"}}`)
	var lbIP string
	testenv.WaitFor(t, name+" gets an address from the pool", time.Minute, func() error {
		if lbIP = jsonpath(t, "service/"+name, "{.status.loadBalancer.ingress[0].ip}"); lbIP == "" {
			return fmt.Errorf("EXTERNAL-IP pending")
		}
		return nil
	})
	url := "http://" + lbIP + ":80"
	answers := contains(name, func() (string, error) { return fromOutside("curl", "-s", "--max-time", "3", url) })
	testenv.WaitFor(t, url+" from the external client", time.Minute, answers)

	macs := map[string]string{}
	for _, n := range nodes() {
		macs[underlayMAC(t, n)] = n
	}
	announcer := func() (string, error) {
		out, err := fromOutside("ip", "neigh", "show", lbIP)
		if err != nil {
			return "", err
		}
		f := strings.Fields(out)
		for i := range f[:max(len(f)-1, 0)] {
			if f[i] == "lladdr" {
				if n, ok := macs[f[i+1]]; ok {
					return n, nil
				}
				return "", fmt.Errorf("%s is at %s, no node's MAC", lbIP, f[i+1])
			}
		}
		return "", fmt.Errorf("the external client has no neighbour entry for %s: %q", lbIP, out)
	}
	first, err := announcer()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s is announced by %s", lbIP, first)

	unplug(t, first)
	unplugged := time.Now()
	testenv.WaitFor(t, first+" NotReady", 2*time.Minute, func() error {
		if s := jsonpath(t, "node/"+first, `{.status.conditions[?(@.type=="Ready")].status}`); s == "True" {
			return fmt.Errorf("Ready is %s", s)
		}
		return nil
	})
	testenv.WaitFor(t, "another node announces "+lbIP+" and it answers", 2*time.Minute, func() error {
		n, err := announcer()
		if err != nil {
			// A neighbour entry that failed is probed again by the
			// next request: send one.
			answers()
			return err
		}
		if n == first {
			answers()
			return fmt.Errorf("%s still maps to %s", lbIP, first)
		}
		return answers()
	})
	t.Logf("%s answered from the other node %.1fs after %s was unplugged (node-monitor-grace-period is most of it)",
		lbIP, time.Since(unplugged).Seconds(), first)

	plug(t, first)
	testenv.WaitFor(t, first+" Ready again", 2*time.Minute, func() error {
		if s := jsonpath(t, "node/"+first, `{.status.conditions[?(@.type=="Ready")].status}`); s != "True" {
			return fmt.Errorf("Ready is %q", s)
		}
		return nil
	})
	testenv.WaitFor(t, url+" answers with both nodes back", time.Minute, answers)
}

// A pool with no address left: the Service beyond it gets a Warning Event
// naming the pool and no address, nothing crash-loops, and the first
// address released goes to it.
func TestLoadBalancerPoolExhausted(t *testing.T) {
	restarts := agentRestarts(t)
	// The lab's pool (a /29) has six usable addresses: seven Services
	// exhaust it whatever else holds one.
	const n = 7
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "---\napiVersion: v1\nkind: Service\nmetadata: {name: lbfill-%d}\nspec: {type: LoadBalancer, ports: [{port: 80}]}\n", i)
	}
	applyManifest(t, b.String())
	t.Cleanup(func() {
		for i := range n {
			kubectl("delete", fmt.Sprintf("service/lbfill-%d", i), "--wait=true")
		}
	})
	ip := func(i int) string {
		return jsonpath(t, fmt.Sprintf("service/lbfill-%d", i), "{.status.loadBalancer.ingress[0].ip}")
	}
	pool := lab["CLUSTER_LB_POOL"]
	var pending []int
	testenv.WaitFor(t, "every lbfill Service has an address or an LBIPPoolExhausted Event naming "+pool, time.Minute, func() error {
		pending = pending[:0]
		for i := range n {
			if ip(i) != "" {
				continue
			}
			ev := jsonpath(t, fmt.Sprintf("events --field-selector involvedObject.kind=Service,involvedObject.name=lbfill-%d,reason=LBIPPoolExhausted", i),
				"{.items[*].message}")
			if !strings.Contains(ev, pool) {
				return fmt.Errorf("lbfill-%d has no address and no Event naming the pool (%q)", i, ev)
			}
			pending = append(pending, i)
		}
		if len(pending) == 0 {
			return fmt.Errorf("all %d Services got an address from %s", n, pool)
		}
		return nil
	})
	t.Logf("pool %s exhausted: lbfill %v wait", pool, pending)

	freed := ""
	for i := range n {
		if freed = ip(i); freed != "" {
			mustKubectl(t, "delete", fmt.Sprintf("service/lbfill-%d", i), "--wait=true")
			break
		}
	}
	if freed == "" {
		t.Fatal("no lbfill Service holds an address")
	}
	testenv.WaitFor(t, "the oldest waiting Service gets the released "+freed, time.Minute, func() error {
		if got := ip(pending[0]); got != freed {
			return fmt.Errorf("lbfill-%d has %q", pending[0], got)
		}
		return nil
	})
	if after := agentRestarts(t); after != restarts {
		t.Errorf("sluice Pods' restart counts went from %s to %s", restarts, after)
	}
}

// agentRestarts is every sluice Pod's name and restart count.
func agentRestarts(t testing.TB) string {
	return jsonpath(t, "pods -n kube-system -l app.kubernetes.io/name=sluice",
		`{range .items[*]}{.metadata.name}={.status.containerStatuses[0].restartCount} {end}`)
}

// underlayMAC is node's MAC on the underlay (its eth0).
func underlayMAC(t testing.TB, node string) string {
	t.Helper()
	// Not /sys/class/net: nsenter --net keeps the host's sysfs mount.
	out, err := inNode(node, "ip", "-o", "link", "show", "dev", "eth0")
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(out)
	for i := range f[:max(len(f)-1, 0)] {
		if f[i] == "link/ether" {
			return f[i+1]
		}
	}
	t.Fatalf("no MAC in %q", out)
	return ""
}

// unplug takes node's port on the underlay bridge down, as a pulled cable:
// the node keeps its addresses and routes, and nothing reaches it. plug
// undoes it; unplug also does on cleanup.
func unplug(t testing.TB, node string) {
	t.Helper()
	t.Cleanup(func() { plug(t, node) })
	if _, err := run(10*time.Second, "ip", "-n", lab["CLUSTER_UNDERLAY_NS"], "link", "set", "u-"+node, "down"); err != nil {
		t.Fatal(err)
	}
}

func plug(t testing.TB, node string) {
	t.Helper()
	if _, err := run(10*time.Second, "ip", "-n", lab["CLUSTER_UNDERLAY_NS"], "link", "set", "u-"+node, "up"); err != nil {
		t.Fatal(err)
	}
}
