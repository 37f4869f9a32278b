package test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluice-lb/sluice/bpf"
	"github.com/sluice-lb/sluice/internal/netlab"
	"github.com/sluice-lb/sluice/internal/testenv"
	"github.com/sluice-lb/sluice/internal/trace"
	"github.com/sluice-lb/sluice/loader"
)

// `sluice trace` of the running agent: a packet of an open connection is
// traced to the backend that connection really has, a new one to one of
// the service's backends, and neither trace changes the agent's conntrack
// or its counters.
func TestTraceOfRunningAgent(t *testing.T) {
	c := newCluster(t, 2, "auto")
	c.write("whoami.yaml", whoamiManifest(1, 2))
	c.startAgent()

	// An open, idle connection (no keepalive probes) whose backend the
	// server names in its greeting.
	var conn net.Conn
	err := c.topo.Client.Do(func() (err error) {
		d := net.Dialer{Timeout: testenv.Scaled(2 * time.Second), KeepAlive: -1}
		conn, err = d.Dial("tcp", vip+":80")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(testenv.Scaled(5 * time.Second)))
	greeting := readGreeting(t, bufio.NewReader(conn))
	var flowBackend string
	for i := 1; i <= 2; i++ {
		if greeting == fmt.Sprintf("backend-%d", i) {
			flowBackend = fmt.Sprintf("%s:8080", netlab.BackendAddr(i))
		}
	}
	if flowBackend == "" {
		t.Fatalf("greeting %q names no backend", greeting)
	}
	client := conn.LocalAddr().String()

	before := agentState(t, c.pinDir)
	established := c.traceJSON("tcp", client, vip+":80", "--flags", "A")
	fresh := c.traceJSON("tcp", "10.244.0.2:1", vip+":80")
	after := agentState(t, c.pinDir)

	if established.Verdict != "pass" || !slices.Equal(established.Reasons, []string{"established"}) ||
		established.Frontend != vip+":80/tcp" || established.Conntrack == nil ||
		established.Backend == nil || established.Backend.Address != flowBackend ||
		established.Output == nil || established.Output.Dst != flowBackend {
		t.Errorf("trace of the open connection %s: %+v, want established to its backend %s", client, established, flowBackend)
	}
	backends := []string{netlab.BackendAddr(1).String() + ":8080", netlab.BackendAddr(2).String() + ":8080"}
	if fresh.Verdict != "pass" || !slices.Equal(fresh.Reasons, []string{"new-flow"}) ||
		fresh.Frontend != vip+":80/tcp" || fresh.Conntrack != nil || fresh.Choices != 2 ||
		fresh.Backend == nil || !slices.Contains(backends, fresh.Backend.Address) {
		t.Errorf("trace of a new connection: %+v, want a new flow to one of %v", fresh, backends)
	}
	for _, name := range []string{"conntrack", "affinity", "counters"} {
		if !slices.Equal(before[name], after[name]) {
			t.Errorf("the traces changed the agent's %s:\nbefore %v\nafter  %v", name, before[name], after[name])
		}
	}

	// The table names the same.
	for _, args := range [][]string{{"tcp", client, vip + ":80", "--flags", "A"}, {"tcp", "10.244.0.2:1", vip + ":80"}} {
		out, err := c.sluice(append([]string{"trace", "--pin-dir", c.pinDir}, args...)...)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(out), "FRONTEND   "+vip+":80/tcp") {
			t.Errorf("sluice trace %v names no frontend:\n%s", args, out)
		}
		t.Logf("sluice trace %v:\n%s", args, out)
	}
}

func (c *cluster) traceJSON(args ...string) *trace.Result {
	c.t.Helper()
	out, err := c.sluice(append([]string{"trace", "-o", "json", "--pin-dir", c.pinDir}, args...)...)
	if err != nil {
		c.t.Fatalf("sluice trace %v: %v", args, err)
	}
	var r trace.Result
	if err := json.Unmarshal(out, &r); err != nil {
		c.t.Fatalf("sluice trace output %q: %v", out, err)
	}
	return &r
}

// agentState reads the agent's conntrack, affinity entries and counters
// from its pins. The pass counter is left out: the namespaces' own
// traffic (IPv6 neighbour discovery, ARP) moves it whenever it likes.
func agentState(t *testing.T, pinDir string) map[string][]string {
	t.Helper()
	dp, done, err := loader.OpenPinnedMaps(pinDir)
	if err != nil {
		t.Fatal(err)
	}
	defer done()
	st := map[string][]string{}
	err = dp.CT4.Each(func(k bpf.SluiceCt4Key, v bpf.SluiceCt4Entry) bool {
		st["conntrack"] = append(st["conntrack"], fmt.Sprintf("%+v=%+v", k, v))
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	err = dp.LB4.Affinity.Each(func(k bpf.SluiceLb4AffinityKey, v bpf.SluiceLb4Affinity) bool {
		st["affinity"] = append(st["affinity"], fmt.Sprintf("%+v=%+v", k, v))
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	counts, err := dp.ReadCounters()
	if err != nil {
		t.Fatal(err)
	}
	for _, rc := range counts {
		if rc.Reason != "pass" {
			st["counters"] = append(st["counters"], fmt.Sprintf("%+v", rc))
		}
	}
	for _, v := range st {
		slices.Sort(v)
	}
	if len(st["conntrack"]) == 0 {
		t.Fatal("the agent's conntrack is empty: the open connection is not in it")
	}
	return st
}
