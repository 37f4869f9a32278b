package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"

	"github.com/sluice-lb/sluice/bpf"
	"github.com/sluice-lb/sluice/maps"
)

// ct4 (v1) -> ct4_v3: the conntrack of agents up to commit 90bed31, an LRU
// hash with per-CPU lists whose entries had no lifetimes (struct
// ct4_entry_v1). Every v1 entry was a live flow, or the LRU would have
// evicted it: each becomes an entry of an answered flow, as if seen now.

// checkCT4V1 accepts the map the v1 datapath made: an LRU hash of ct4_key
// to a 16-byte value, whose BTF (where it has one) is v1's struct.
func checkCT4V1(env migrationEnv, old *ebpf.Map) error {
	if t := old.Type(); t != ebpf.LRUHash && t != ebpf.LRUCPUHash && t != ebpf.Hash {
		return fmt.Errorf("map type %s", t)
	}
	var (
		k bpf.SluiceCt4Key
		v bpf.SluiceCt4EntryV1
	)
	if old.KeySize() != uint32(unsafe.Sizeof(k)) || old.ValueSize() != uint32(unsafe.Sizeof(v)) {
		return fmt.Errorf("key size %d, value size %d", old.KeySize(), old.ValueSize())
	}
	var want *btf.Struct
	if err := env.spec.Types.TypeByName("ct4_entry_v1", &want); err != nil {
		return err
	}
	return checkPinnedMembers(old, want)
}

// checkPinnedMembers compares the members of a pinned map's value type
// with want's, where its BTF can be read. An old version named its struct
// ct4_entry; only the members must agree.
func checkPinnedMembers(old *ebpf.Map, want *btf.Struct) error {
	_, got, err := pinnedKeyValue(old)
	if errors.Is(err, errBTFDenied) || (err == nil && got == nil) {
		return nil // no BTF to read: the sizes are all there is
	}
	if err != nil {
		return err
	}
	if w, g := membersOf(layout(want)), membersOf(layout(got)); w != g {
		return fmt.Errorf("value %s, want %s", g, w)
	}
	return nil
}

func membersOf(layout string) string {
	if i := strings.IndexByte(layout, '{'); i >= 0 {
		return layout[i:]
	}
	return layout
}

func moveCT4V1(env migrationEnv, old, fresh *ebpf.Map) (moved, skipped int, err error) {
	now, err := monotonicSeconds()
	if err != nil {
		return 0, 0, err
	}
	tcp, err := ctLifetime(env, bpf.SluiceCtTimeoutCT_TIMEOUT_TCP_ESTABLISHED, bpf.SluiceCtTimeoutDefaultCT_DEFAULT_TCP_ESTABLISHED)
	if err != nil {
		return 0, 0, err
	}
	udp, err := ctLifetime(env, bpf.SluiceCtTimeoutCT_TIMEOUT_UDP_REPLIED, bpf.SluiceCtTimeoutDefaultCT_DEFAULT_UDP_REPLIED)
	if err != nil {
		return 0, 0, err
	}
	var (
		keys  []bpf.SluiceCt4Key
		vals  []bpf.SluiceCt4Entry
		limit = int(fresh.MaxEntries())
	)
	// Read in batches (or by iteration): a lookup by key would count as a
	// use of an LRU entry, and the map must be read as it is.
	err = maps.New[bpf.SluiceCt4Key, bpf.SluiceCt4EntryV1](old).Each(func(k bpf.SluiceCt4Key, v bpf.SluiceCt4EntryV1) bool {
		e, ok := ct4FromV1(v, now, tcp, udp, k.Proto == unix.IPPROTO_TCP)
		if !ok || len(keys) >= limit {
			skipped++
			return true
		}
		keys, vals = append(keys, k), append(vals, e)
		return true
	})
	if err != nil {
		return 0, 0, fmt.Errorf("read %s: %w", old, err)
	}
	if err := maps.New[bpf.SluiceCt4Key, bpf.SluiceCt4Entry](fresh).PutAll(keys, vals); err != nil {
		return 0, 0, err
	}
	return len(keys), skipped, nil
}

// ct4FromV1 converts one v1 entry; false for an entry of no known kind.
// A forward entry is marked answered (the backend's replies had been
// translated), a reply entry as having told it so, which is what the v2
// datapath's own entries of an established flow carry.
func ct4FromV1(v bpf.SluiceCt4EntryV1, now, tcpLifetime, udpLifetime uint32, isTCP bool) (bpf.SluiceCt4Entry, bool) {
	e := bpf.SluiceCt4Entry{
		BackendAddr: v.BackendAddr,
		BackendPort: v.BackendPort,
		Kind:        v.Kind,
		RevNatId:    v.RevNatId,
		BackendId:   v.BackendId,
		Created:     now,
		Expires:     now + udpLifetime,
	}
	if isTCP {
		e.Expires = now + tcpLifetime
	} else {
		// Answered before the upgrade, as a stream of the old
		// datapath: its next packets must not cut it to the short
		// lifetime of a flow answered within its first seconds. A
		// second more than the stream age, as the datapath's coarse
		// clock may read the second before now.
		e.Created = now - uint32(bpf.SluiceCtUdpStreamCT_UDP_STREAM_AFTER) - 2
	}
	switch v.Kind {
	case bpf.SluiceCtKindCT_FORWARD:
		e.Flags = bpf.SluiceCtFlagsCT_F_SEEN_REPLY
	case bpf.SluiceCtKindCT_REPLY:
		e.Flags = bpf.SluiceCtFlagsCT_F_PEER_TOLD
	default:
		return e, false
	}
	return e, true
}

// monotonicSeconds is the datapath's clock (bpf_ktime_get_ns / 1e9).
func monotonicSeconds() (uint32, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0, err
	}
	return uint32(ts.Sec), nil
}

// ctLifetime is the lifetime the datapath gives a state: the pinned
// sluice_ct_timeouts entry when there is one and it is set, else the C
// default (enum ct_timeout_default, generated).
func ctLifetime(env migrationEnv, which bpf.SluiceCtTimeout, def bpf.SluiceCtTimeoutDefault) (uint32, error) {
	pinned, err := ebpf.LoadPinnedMap(filepath.Join(env.dir, bpf.SluiceMapSluiceCtTimeouts), &ebpf.LoadPinOptions{ReadOnly: true})
	if err == nil {
		var secs uint32
		lerr := pinned.Lookup(which, &secs)
		pinned.Close()
		if lerr == nil && secs != 0 {
			return secs, nil
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return 0, err
	}
	return uint32(def), nil
}
