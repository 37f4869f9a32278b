package test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"

	"github.com/sluice-lb/sluice/bpf"
)

// pinAsV1 turns the conntrack an agent left under pinDir into what an agent
// of the v1 layout (up to commit 90bed31) leaves: a ct4 LRU map of struct
// ct4_entry_v1 values instead of ct4_v3. The running datapath keeps the
// map it holds; only the pins change, as they would have been.
func pinAsV1(t *testing.T, pinDir string) int {
	t.Helper()
	spec, err := bpf.LoadSluice()
	if err != nil {
		t.Fatal(err)
	}
	var v1 *btf.Struct
	if err := spec.Types.TypeByName("ct4_entry_v1", &v1); err != nil {
		t.Fatal(err)
	}
	val := btf.Copy(v1).(*btf.Struct)
	val.Name = "ct4_entry"
	old, err := ebpf.NewMap(&ebpf.MapSpec{Name: "ct4", Type: ebpf.LRUHash, Flags: unix.BPF_F_NO_COMMON_LRU,
		KeySize: 16, ValueSize: 16, MaxEntries: 4096, Key: spec.Maps[bpf.SluiceMapCt4V3].Key, Value: val})
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	v2Path := filepath.Join(pinDir, bpf.SluiceMapCt4V3)
	v2, err := ebpf.LoadPinnedMap(v2Path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer v2.Close()
	var (
		k bpf.SluiceCt4Key
		e bpf.SluiceCt4Entry
		n int
	)
	it := v2.Iterate()
	for it.Next(&k, &e) {
		v := bpf.SluiceCt4EntryV1{BackendAddr: e.BackendAddr, BackendPort: e.BackendPort, Kind: e.Kind,
			RevNatId: e.RevNatId, BackendId: e.BackendId}
		if err := old.Put(&k, &v); err != nil {
			t.Fatal(err)
		}
		n++
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	if err := old.Pin(filepath.Join(pinDir, "ct4")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(v2Path); err != nil {
		t.Fatal(err)
	}
	return n
}

// An agent upgraded from the v1 conntrack layout migrates the live flows:
// a connection open across the upgrade goes on to the same backend, as an
// established flow of the new agent's datapath, not a new one.
func TestUpgradeFromCT4V1KeepsConnections(t *testing.T) {
	c := newCluster(t, 2, "auto")
	c.write("whoami.yaml", whoamiManifest(1, 2))
	c.startAgent()

	ec := c.dialEcho(t, vip+":80")
	who := ec.who
	n := 0
	exchange := func(phase string, times int) {
		t.Helper()
		for range times {
			n++
			ec.exchange(t, fmt.Sprintf("%s: ping %d", phase, n))
		}
	}
	exchange("before the upgrade", 3)

	c.killAgent()
	entries := pinAsV1(t, c.pinDir)
	if entries < 2 {
		t.Fatalf("%d conntrack entries to migrate, want the connection's two at least", entries)
	}
	c.startAgent()
	if log := c.readAgentLog(); !strings.Contains(log, "old layout migrated") || !strings.Contains(log, fmt.Sprintf("entries=%d", entries)) {
		t.Fatalf("no migration of %d entries in the agent's log", entries)
	}
	if _, err := os.Stat(filepath.Join(c.pinDir, "ct4")); !os.IsNotExist(err) {
		t.Errorf("v1 pin left: %v", err)
	}

	newFlows, established := c.counter("new-flow"), c.counter("established")
	exchange("after the upgrade", 10)
	if got := c.counter("new-flow") - newFlows; got != 0 {
		t.Errorf("%d new flows after the upgrade: the connection was not migrated", got)
	}
	if got := c.counter("established") - established; got < 10 {
		t.Errorf("%d established packets for 10 messages after the upgrade", got)
	}
	for _, f := range c.ctList(t) {
		if f.Client == ec.conn.LocalAddr().String() && f.State != "established" {
			t.Errorf("the connection's flow after the upgrade: %+v", f)
		}
	}
	t.Logf("connection to %s exchanged %d messages across the upgrade", who, n)
}
