package loader

import (
	"bytes"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"

	"github.com/sluice-lb/sluice/bpf"
	"github.com/sluice-lb/sluice/control"
	"github.com/sluice-lb/sluice/internal/packet"
	"github.com/sluice-lb/sluice/internal/testenv"
	"github.com/sluice-lb/sluice/maps"
)

var (
	migVIP     = netip.MustParseAddrPort("10.96.0.10:80")
	migBackend = netip.MustParseAddrPort("10.1.0.5:8080")
	migClient  = netip.MustParseAddrPort("192.168.7.2:40000")
)

// v1Spec is the ct4 map of agents up to commit 90bed31, made from the
// generated struct ct4_entry_v1 (named ct4_entry in that version's BTF).
func v1Spec(t *testing.T, spec *ebpf.CollectionSpec) *ebpf.MapSpec {
	t.Helper()
	var v1 *btf.Struct
	if err := spec.Types.TypeByName("ct4_entry_v1", &v1); err != nil {
		t.Fatal(err)
	}
	val := btf.Copy(v1).(*btf.Struct)
	val.Name = "ct4_entry"
	return &ebpf.MapSpec{
		Name:       "ct4",
		Type:       ebpf.LRUHash,
		Flags:      unix.BPF_F_NO_COMMON_LRU,
		KeySize:    16,
		ValueSize:  16,
		MaxEntries: 1024,
		Key:        spec.Maps[bpf.SluiceMapCt4V3].Key,
		Value:      val,
	}
}

// The state an agent of the v1 layout leaves: lb4 maps programmed for one
// TCP frontend, and ct4 (v1) holding an established flow to it, plus a UDP
// flow's forward entry. The current layout's ct4_v3 is not pinned.
func pinV1State(t *testing.T, dir string) (revNat, backendID uint32) {
	t.Helper()
	var logs bytes.Buffer
	dp, err := Load(Options{PinDir: dir, Log: quietLog(&logs)})
	if err != nil {
		t.Fatal(err)
	}
	defer dp.Close()
	rec, err := control.NewReconciler(dp.Maps.LB4, quietLog(&logs))
	if err != nil {
		t.Fatal(err)
	}
	fe := control.Frontend{Addr: migVIP.Addr(), Port: migVIP.Port(), Proto: control.TCP}
	sp := &control.ServicePort{Name: control.ServicePortName{Namespace: "ns", Name: "web", Proto: control.TCP}, Frontend: fe,
		Backends: []control.Backend{{Addr: migBackend.Addr(), Port: migBackend.Port()}}}
	if _, problems, err := rec.Apply(&control.State{Ports: map[control.Frontend]*control.ServicePort{fe: sp}}); err != nil || len(problems) > 0 {
		t.Fatalf("apply: %v %v", err, problems)
	}
	key := bpf.SluiceLb4Key{Address: maps.Addr4(migVIP.Addr()), Dport: maps.Port(migVIP.Port()), Proto: packet.ProtoTCP}
	master, err := dp.Maps.LB4.Services.Lookup(key)
	if err != nil {
		t.Fatal(err)
	}
	key.BackendSlot = 1
	slot, err := dp.Maps.LB4.Services.Lookup(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, bpf.SluiceMapCt4V3)); err != nil {
		t.Fatal(err)
	}

	spec, err := bpf.LoadSluice()
	if err != nil {
		t.Fatal(err)
	}
	v1, err := ebpf.NewMap(v1Spec(t, spec))
	if err != nil {
		t.Fatal(err)
	}
	defer v1.Close()
	for k, v := range v1Flows(master.RevNatId, slot.BackendId) {
		if err := v1.Put(k, v); err != nil {
			t.Fatal(err)
		}
	}
	if err := v1.Pin(filepath.Join(dir, "ct4")); err != nil {
		t.Fatal(err)
	}
	return master.RevNatId, slot.BackendId
}

func v1Flows(revNat, backendID uint32) map[bpf.SluiceCt4Key]bpf.SluiceCt4EntryV1 {
	fwd := bpf.SluiceCt4Key{Saddr: maps.Addr4(migClient.Addr()), Daddr: maps.Addr4(migVIP.Addr()),
		Sport: maps.Port(migClient.Port()), Dport: maps.Port(migVIP.Port()), Proto: packet.ProtoTCP}
	rev := bpf.SluiceCt4Key{Saddr: maps.Addr4(migBackend.Addr()), Daddr: maps.Addr4(migClient.Addr()),
		Sport: maps.Port(migBackend.Port()), Dport: maps.Port(migClient.Port()), Proto: packet.ProtoTCP}
	udp := fwd
	udp.Proto, udp.Sport = packet.ProtoUDP, maps.Port(5353)
	return map[bpf.SluiceCt4Key]bpf.SluiceCt4EntryV1{
		fwd: {BackendAddr: maps.Addr4(migBackend.Addr()), BackendPort: maps.Port(migBackend.Port()),
			Kind: bpf.SluiceCtKindCT_FORWARD, RevNatId: revNat, BackendId: backendID},
		rev: {Kind: bpf.SluiceCtKindCT_REPLY, RevNatId: revNat},
		udp: {BackendAddr: maps.Addr4(migBackend.Addr()), BackendPort: maps.Port(migBackend.Port()),
			Kind: bpf.SluiceCtKindCT_FORWARD, RevNatId: revNat, BackendId: backendID},
	}
}

func monoSeconds(t *testing.T) uint32 {
	t.Helper()
	s, err := monotonicSeconds()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// An agent of the current layout starting on the pinned state of a v1
// agent moves every ct4 entry into ct4_v3 as an answered, live flow,
// removes the ct4 pin, and says so; the established flow is then
// translated both ways to the backend and frontend it had.
func TestCT4V1IsMigrated(t *testing.T) {
	testenv.Privileged(t)
	dir := pinDir(t)
	revNat, backendID := pinV1State(t, dir)

	var logs bytes.Buffer
	before := monoSeconds(t)
	dp, err := Load(Options{PinDir: dir, Log: quietLog(&logs)})
	after := monoSeconds(t)
	if err != nil {
		t.Fatal(err)
	}
	defer dp.Close()
	if !strings.Contains(logs.String(), "old layout migrated") || !strings.Contains(logs.String(), "entries=3") {
		t.Errorf("no migration log line with the count:\n%s", logs.String())
	}
	if _, err := os.Stat(filepath.Join(dir, "ct4")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("v1 pin still there: %v", err)
	}

	spec, _ := bpf.LoadSluice()
	tcpLife, _ := ctLifetime(migrationEnv{spec: spec, dir: dir}, bpf.SluiceCtTimeoutCT_TIMEOUT_TCP_ESTABLISHED, bpf.SluiceCtTimeoutDefaultCT_DEFAULT_TCP_ESTABLISHED)
	udpLife, _ := ctLifetime(migrationEnv{spec: spec, dir: dir}, bpf.SluiceCtTimeoutCT_TIMEOUT_UDP_REPLIED, bpf.SluiceCtTimeoutDefaultCT_DEFAULT_UDP_REPLIED)
	if tcpLife != 86400 || udpLife != 120 {
		t.Fatalf("lifetimes %d, %d; want the C defaults 86400, 120", tcpLife, udpLife)
	}
	want := v1Flows(revNat, backendID)
	got := map[bpf.SluiceCt4Key]bpf.SluiceCt4Entry{}
	if err := dp.Maps.CT4.Each(func(k bpf.SluiceCt4Key, v bpf.SluiceCt4Entry) bool { got[k] = v; return true }); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("ct4_v3 holds %d entries, want %d: %+v", len(got), len(want), got)
	}
	for k, w := range want {
		e, ok := got[k]
		if !ok {
			t.Errorf("entry %+v not migrated", k)
			continue
		}
		life, flags := udpLife, bpf.SluiceCtFlagsCT_F_SEEN_REPLY
		if k.Proto == packet.ProtoTCP {
			life = tcpLife
		}
		if w.Kind == bpf.SluiceCtKindCT_REPLY {
			flags = bpf.SluiceCtFlagsCT_F_PEER_TOLD
		}
		if e.BackendAddr != w.BackendAddr || e.BackendPort != w.BackendPort || e.Kind != w.Kind ||
			e.RevNatId != w.RevNatId || e.BackendId != w.BackendId || e.Flags != flags {
			t.Errorf("entry %+v: %+v, from v1 %+v (flags want %d)", k, e, w, flags)
		}
		// A UDP flow was answered under the old datapath: it is made a
		// stream (lasted past CT_UDP_STREAM_AFTER), which its next
		// packets keep on the stream lifetime.
		age := uint32(0)
		if k.Proto != packet.ProtoTCP {
			age = uint32(bpf.SluiceCtUdpStreamCT_UDP_STREAM_AFTER) + 2
		}
		if e.Created+age < before || e.Created+age > after || e.Expires < before+life || e.Expires > after+life {
			t.Errorf("entry %+v: created %d expires %d; want created in [%d, %d] less %d s, %ds later to expire", k, e.Created, e.Expires, before, after, age, life)
		}
	}

	// The established flow goes on: the client's next segment goes to the
	// same backend as an established flow, the backend's reply comes back
	// from the frontend.
	counts := func() map[string]uint64 {
		c, err := dp.Maps.Packets()
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	c0 := counts()
	_, out := runProg(t, dp.Objs.SluiceIngress, packet.Build(packet.Spec{Src: migClient, Dst: migVIP, Proto: packet.ProtoTCP, TCPFlags: packet.TCPAck}))
	f, err := packet.Parse(out)
	if err != nil {
		t.Fatal(err)
	}
	if got := netip.AddrPortFrom(f.Dst, f.DstPort); got != migBackend {
		t.Errorf("client's segment sent to %s, want the migrated flow's backend %s", got, migBackend)
	}
	_, out = runProg(t, dp.Objs.SluiceEgress, packet.Build(packet.Spec{Src: migBackend, Dst: migClient, Proto: packet.ProtoTCP, TCPFlags: packet.TCPAck}))
	if f, err = packet.Parse(out); err != nil {
		t.Fatal(err)
	}
	if got := netip.AddrPortFrom(f.Src, f.SrcPort); got != migVIP {
		t.Errorf("backend's reply from %s, want the frontend %s", got, migVIP)
	}
	c1 := counts()
	if c1["established"]-c0["established"] != 1 || c1["reply"]-c0["reply"] != 1 || c1["new-flow"] != c0["new-flow"] {
		t.Errorf("counters: established +%d, reply +%d, new-flow +%d; want 1, 1, 0",
			c1["established"]-c0["established"], c1["reply"]-c0["reply"], c1["new-flow"]-c0["new-flow"])
	}
}

func runProg(t *testing.T, prog *ebpf.Program, in []byte) (uint32, []byte) {
	t.Helper()
	opts := &ebpf.RunOptions{Data: in, DataOut: make([]byte, len(in)+256)}
	ret, err := prog.Run(opts)
	if err != nil {
		t.Fatalf("test run: %v", err)
	}
	return ret, opts.DataOut
}

// A pinned map with the sizes of the spec's but another struct (lb4_revnat
// whose address and port swapped names: 8 bytes either way) is a layout
// change: recreated empty, with a line naming the map and the difference.
// A map of the same layout is adopted without one.
func TestSameSizesOtherMeaningIsDetected(t *testing.T) {
	testenv.Privileged(t)
	dir := pinDir(t)
	var logs bytes.Buffer
	dp, err := Load(Options{PinDir: dir, Log: quietLog(&logs)})
	if err != nil {
		t.Fatal(err)
	}
	dp.Close()
	dp, err = Load(Options{PinDir: dir, Log: quietLog(&logs)})
	if err != nil {
		t.Fatal(err)
	}
	dp.Close()
	if strings.Contains(logs.String(), "layout changed") {
		t.Fatalf("maps of this binary's own layout judged changed:\n%s", logs.String())
	}

	pinSwappedRevNat(t, dir)
	logs.Reset()
	dp, err = Load(Options{PinDir: dir, Log: quietLog(&logs)})
	if err != nil {
		t.Fatal(err)
	}
	defer dp.Close()
	line := logs.String()
	if !strings.Contains(line, "another meaning") || !strings.Contains(line, bpf.SluiceMapLb4Revnat) || !strings.Contains(line, "port@0") {
		t.Errorf("no clear log line for the swapped members:\n%s", line)
	}
	if rn, err := dp.Maps.LB4.RevNat.Lookup(3); err != nil || rn != (bpf.SluiceLb4ReverseNat{}) {
		t.Errorf("entry of the other layout kept: %+v %v", rn, err)
	}
}

// pinSwappedRevNat pins under dir an lb4_revnat whose struct has the
// spec's sizes but its first two members' names swapped, holding key 3.
func pinSwappedRevNat(t *testing.T, dir string) {
	t.Helper()
	spec, err := bpf.LoadSluice()
	if err != nil {
		t.Fatal(err)
	}
	ms := spec.Maps[bpf.SluiceMapLb4Revnat].Copy()
	val := btf.Copy(ms.Value).(*btf.Struct)
	val.Members[0].Name, val.Members[1].Name = val.Members[1].Name, val.Members[0].Name
	ms.Value, ms.Pinning = val, ebpf.PinNone
	swapped, err := ebpf.NewMap(ms)
	if err != nil {
		t.Fatal(err)
	}
	defer swapped.Close()
	if err := swapped.Put(uint32(3), bpf.SluiceLb4ReverseNat{Address: 7, Port: 8}); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, bpf.SluiceMapLb4Revnat)
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := swapped.Pin(path); err != nil {
		t.Fatal(err)
	}
	// As the agent that made it would have recorded it.
	rec, err := ebpf.LoadPinnedMap(filepath.Join(dir, layoutRecordName), nil)
	if errors.Is(err, os.ErrNotExist) {
		if rec, err = ebpf.NewMap(&layoutRecordSpec); err == nil {
			err = rec.Pin(filepath.Join(dir, layoutRecordName))
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	defer rec.Close()
	var (
		k layoutKey
		v layoutValue
	)
	copy(k[:], bpf.SluiceMapLb4Revnat)
	copy(v[:], layoutOf(ms.Key, val))
	if err := rec.Put(&k, &v); err != nil {
		t.Fatal(err)
	}
}

// A layout change under the same name with a migration registered for it
// runs the migration instead of recreating the map empty.
func TestSameNameLayoutChangeRunsItsMigration(t *testing.T) {
	testenv.Privileged(t)
	dir := pinDir(t)
	pinSwappedRevNat(t, dir)
	saved := migrations
	t.Cleanup(func() { migrations = saved })
	migrations = append(migrations[:len(migrations):len(migrations)], migration{
		from: bpf.SluiceMapLb4Revnat, to: bpf.SluiceMapLb4Revnat,
		check: func(migrationEnv, *ebpf.Map) error { return nil },
		move: func(_ migrationEnv, old, fresh *ebpf.Map) (int, int, error) {
			var v bpf.SluiceLb4ReverseNat
			if err := old.Lookup(uint32(3), &v); err != nil {
				return 0, 0, err
			}
			// The swap's meaning: what was called port is the address.
			v.Address, v.Port = uint32(v.Port), uint16(v.Address)
			return 1, 0, fresh.Put(uint32(3), v)
		},
	})
	var logs bytes.Buffer
	dp, err := Load(Options{PinDir: dir, Log: quietLog(&logs)})
	if err != nil {
		t.Fatal(err)
	}
	defer dp.Close()
	if rn, err := dp.Maps.LB4.RevNat.Lookup(3); err != nil || rn != (bpf.SluiceLb4ReverseNat{Address: 8, Port: 7}) {
		t.Errorf("entry after the migration: %+v %v, want address 8, port 7", rn, err)
	}
	if !strings.Contains(logs.String(), "migrating its entries") || !strings.Contains(logs.String(), "entries=1") {
		t.Errorf("no migration log lines:\n%s", logs.String())
	}
}

// A v1 ct4 left beside a ct4_v3 (a start stopped between pinning the new
// map and removing the old) is removed without touching ct4_v3; one whose
// layout is not v1's is removed and said so, its entries dropped.
func TestCT4V1LeftoversAreRemoved(t *testing.T) {
	testenv.Privileged(t)
	spec, err := bpf.LoadSluice()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, log   string
		keepV2      bool
		valueSize   uint32
		wantEntries int
	}{
		{"beside its successor", "beside its successor", true, 16, 1},
		{"not v1's layout", "not as its migration expects", false, 24, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := pinDir(t)
			var logs bytes.Buffer
			dp, err := Load(Options{PinDir: dir, Log: quietLog(&logs)})
			if err != nil {
				t.Fatal(err)
			}
			k := bpf.SluiceCt4Key{Saddr: 1, Daddr: 2, Proto: packet.ProtoTCP}
			if err := dp.Maps.CT4.Put(k, bpf.SluiceCt4Entry{Kind: bpf.SluiceCtKindCT_FORWARD, Expires: 1 << 31}); err != nil {
				t.Fatal(err)
			}
			dp.Close()
			if !c.keepV2 {
				os.Remove(filepath.Join(dir, bpf.SluiceMapCt4V3))
			}
			ms := v1Spec(t, spec)
			ms.ValueSize, ms.Value = c.valueSize, nil
			v1, err := ebpf.NewMap(ms)
			if err != nil {
				t.Fatal(err)
			}
			if err := v1.Put(make([]byte, 16), make([]byte, c.valueSize)); err != nil {
				t.Fatal(err)
			}
			if err := v1.Pin(filepath.Join(dir, "ct4")); err != nil {
				t.Fatal(err)
			}
			v1.Close()

			dp, err = Load(Options{PinDir: dir, Log: quietLog(&logs)})
			if err != nil {
				t.Fatal(err)
			}
			defer dp.Close()
			if _, err := os.Stat(filepath.Join(dir, "ct4")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("v1 pin still there: %v", err)
			}
			n := 0
			dp.Maps.CT4.Each(func(bpf.SluiceCt4Key, bpf.SluiceCt4Entry) bool { n++; return true })
			if n != c.wantEntries {
				t.Errorf("ct4_v3 holds %d entries, want %d", n, c.wantEntries)
			}
			if !strings.Contains(logs.String(), c.log) {
				t.Errorf("no log line %q:\n%s", c.log, logs.String())
			}
		})
	}
}
