package loader

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"

	"github.com/sluice-lb/sluice/bpf"
	"github.com/sluice-lb/sluice/internal/packet"
	"github.com/sluice-lb/sluice/internal/testenv"
	"github.com/sluice-lb/sluice/maps"
)

// renamedStruct is a copy of a generated struct under another name, with
// members renamed (old name: new name), as an older version's BTF had it.
func renamedStruct(t *testing.T, spec *ebpf.CollectionSpec, name, as string, members map[string]string) *btf.Struct {
	t.Helper()
	var s *btf.Struct
	if err := spec.Types.TypeByName(name, &s); err != nil {
		t.Fatal(err)
	}
	c := btf.Copy(s).(*btf.Struct)
	c.Name = as
	for i := range c.Members {
		if n, ok := members[c.Members[i].Name]; ok {
			c.Members[i].Name = n
		}
	}
	return c
}

// An agent of the v2 layout leaves ct4_v2 (24-byte entries) and an
// lb4_services whose master entries' kind byte was padding. The current
// agent migrates both: every flow keeps its fields, lifetimes and flags,
// with no SNAT; every frontend entry is kept, so the datapath serves the
// old Services before the first sync; the old pin goes.
func TestCT4V2AndServicesMigrated(t *testing.T) {
	testenv.Privileged(t)
	dir := pinDir(t)
	revNat, backendID := pinV1State(t, dir) // lb4 maps programmed, no ct4_v3
	if err := os.Remove(filepath.Join(dir, "ct4")); err != nil {
		t.Fatal(err)
	}
	spec, err := bpf.LoadSluice()
	if err != nil {
		t.Fatal(err)
	}

	// ct4_v2 as the v2 datapath made it.
	v2, err := ebpf.NewMap(&ebpf.MapSpec{
		Name: "ct4_v2", Type: ebpf.Hash, KeySize: 16, ValueSize: 24, MaxEntries: 1024,
		Key:   spec.Maps[bpf.SluiceMapCt4V3].Key,
		Value: renamedStruct(t, spec, "ct4_entry_v2", "ct4_entry", nil),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer v2.Close()
	want := map[bpf.SluiceCt4Key]bpf.SluiceCt4EntryV2{}
	for k, v := range v1Flows(revNat, backendID) {
		want[k] = bpf.SluiceCt4EntryV2{BackendAddr: v.BackendAddr, BackendPort: v.BackendPort, Kind: v.Kind,
			Flags: bpf.SluiceCtFlagsCT_F_SEEN_REPLY, RevNatId: v.RevNatId, BackendId: v.BackendId,
			Expires: 1000 + uint32(k.Proto), Created: 900}
		if err := v2.Put(k, want[k]); err != nil {
			t.Fatal(err)
		}
	}
	if err := v2.Pin(filepath.Join(dir, "ct4_v2")); err != nil {
		t.Fatal(err)
	}

	// lb4_services with the v2 value BTF (pad where kind is), same entries.
	svcPath := filepath.Join(dir, bpf.SluiceMapLb4Services)
	cur, err := ebpf.LoadPinnedMap(svcPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	entries := map[bpf.SluiceLb4Key]bpf.SluiceLb4Service{}
	if err := maps.New[bpf.SluiceLb4Key, bpf.SluiceLb4Service](cur).Each(func(k bpf.SluiceLb4Key, v bpf.SluiceLb4Service) bool {
		entries[k] = v
		return true
	}); err != nil {
		t.Fatal(err)
	}
	cur.Close()
	ms := spec.Maps[bpf.SluiceMapLb4Services].Copy()
	ms.Pinning, ms.MaxEntries = ebpf.PinNone, 1024
	ms.Value = renamedStruct(t, spec, "lb4_service", "lb4_service", map[string]string{"kind": "pad"})
	old, err := ebpf.NewMap(ms)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	for k, v := range entries {
		if err := old.Put(k, v); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Remove(svcPath); err != nil {
		t.Fatal(err)
	}
	if err := old.Pin(svcPath); err != nil {
		t.Fatal(err)
	}

	var logs bytes.Buffer
	dp, err := Load(Options{PinDir: dir, Log: quietLog(&logs)})
	if err != nil {
		t.Fatal(err)
	}
	defer dp.Close()
	if _, err := os.Stat(filepath.Join(dir, "ct4_v2")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("ct4_v2 pin still there: %v", err)
	}
	if !strings.Contains(logs.String(), "from=ct4_v2") || !strings.Contains(logs.String(), "from=lb4_services") {
		t.Errorf("no migration log lines for both maps:\n%s", logs.String())
	}
	got := 0
	if err := dp.Maps.CT4.Each(func(k bpf.SluiceCt4Key, e bpf.SluiceCt4Entry) bool {
		got++
		w, ok := want[k]
		if !ok || e.BackendAddr != w.BackendAddr || e.BackendPort != w.BackendPort || e.Kind != w.Kind ||
			e.Flags != w.Flags || e.RevNatId != w.RevNatId || e.BackendId != w.BackendId ||
			e.Expires != w.Expires || e.Created != w.Created || e.NatAddr != 0 || e.NatPort != 0 {
			t.Errorf("entry %+v: %+v, from v2 %+v", k, e, w)
		}
		return true
	}); err != nil {
		t.Fatal(err)
	}
	if got != len(want) {
		t.Errorf("%d flows migrated, want %d", got, len(want))
	}
	for k, v := range entries {
		if e, err := dp.Maps.LB4.Services.Lookup(k); err != nil || e != v {
			t.Errorf("frontend entry %+v: %+v %v, want %+v kept", k, e, err, v)
		}
	}
	// The migrated flow is still served: its next segment goes to its backend.
	_, out := runProg(t, dp.Objs.SluiceIngress, packet.Build(packet.Spec{Src: migClient, Dst: migVIP, Proto: packet.ProtoTCP, TCPFlags: packet.TCPAck}))
	if f, err := packet.Parse(out); err != nil || f.Dst != migBackend.Addr() {
		t.Errorf("segment of the migrated flow: %v %v", f, err)
	}
}
