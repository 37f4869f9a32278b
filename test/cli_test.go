package test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/sluice-lb/sluice/control"
	"github.com/sluice-lb/sluice/maps"
)

// sluice runs the sluice command (this binary re-executed) in the node
// namespace and returns its standard output.
func (c *cluster) sluice(args ...string) ([]byte, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(self, args...)
	cmd.Env = append(os.Environ(), runAsSluice+"=1")
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := c.topo.Node.Start(cmd); err != nil {
		return nil, err
	}
	if err := cmd.Wait(); err != nil {
		return stdout.Bytes(), fmt.Errorf("%w: %s", err, stderr.String())
	}
	return stdout.Bytes(), nil
}

// The inspection commands read the running agent's pinned maps, and
// uninstall takes the datapath away.
func TestCLIListsCountsAndUninstalls(t *testing.T) {
	c := newCluster(t, 2, "auto")
	c.write("whoami.yaml", whoamiManifest(1, 2))
	c.startAgent()
	if _, err := c.ask("tcp", vip+":80"); err != nil {
		t.Fatal(err)
	}

	out, err := c.sluice("lb", "list", "-o", "json", "--pin-dir", c.pinDir)
	if err != nil {
		t.Fatalf("lb list: %v", err)
	}
	var views []control.FrontendView
	if err := json.Unmarshal(out, &views); err != nil {
		t.Fatalf("lb list output %q: %v", out, err)
	}
	got := map[string]int{}
	for _, v := range views {
		got[v.Frontend+"/"+v.Protocol] = len(v.Backends)
	}
	want := map[string]int{vip + ":80/TCP": 2, vip + ":80/UDP": 2, emptyVIP + ":80/TCP": 0}
	if len(got) != len(want) {
		t.Errorf("lb list: %v, want %v", got, want)
	}
	for k, n := range want {
		if got[k] != n {
			t.Errorf("lb list: %s has %d backends, want %d", k, got[k], n)
		}
	}

	out, err = c.sluice("stats", "-o", "json", "--pin-dir", c.pinDir)
	if err != nil {
		t.Fatalf("stats: %v", err)
	}
	var counts []maps.ReasonCount
	if err := json.Unmarshal(out, &counts); err != nil {
		t.Fatalf("stats output %q: %v", out, err)
	}
	byReason := map[string]uint64{}
	for _, rc := range counts {
		byReason[rc.Reason] = rc.Packets
	}
	if byReason["new-flow"] == 0 || byReason["reply"] == 0 {
		t.Errorf("stats after a request: %v", byReason)
	}

	c.killAgent()
	if _, err := c.sluice("uninstall", "--pin-dir", c.pinDir); err != nil {
		t.Fatalf("uninstall: %v", err)
	}
	if _, err := os.Stat(c.pinDir); !os.IsNotExist(err) {
		t.Errorf("pin dir left after uninstall: %v", err)
	}
	// Nothing translates the service IP any more: the node has no route
	// for it, so the client's connection fails.
	if conn, err := c.dial(vip+":80", 500*time.Millisecond); err == nil {
		conn.Close()
		t.Error("the service still answers after uninstall")
	}
	if _, err := c.sluice("lb", "list", "--pin-dir", c.pinDir); err == nil {
		t.Error("lb list of an uninstalled agent succeeded")
	}
}
