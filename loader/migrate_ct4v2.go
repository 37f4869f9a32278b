package loader

import (
	"fmt"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"

	"github.com/sluice-lb/sluice/bpf"
	"github.com/sluice-lb/sluice/maps"
)

// ct4_v2 -> ct4_v3: v3 adds the SNAT fields (nat_addr, nat_port) after
// v2's. No v2 flow was SNATed, so every entry keeps its fields, its
// lifetimes and its flags, and gets zero SNAT fields.

// checkCT4V2 accepts the map the v2 datapath made: a hash of ct4_key to
// v2's 24-byte value, whose BTF (where it can be read) has v2's members.
func checkCT4V2(env migrationEnv, old *ebpf.Map) error {
	var (
		k bpf.SluiceCt4Key
		v bpf.SluiceCt4EntryV2
	)
	if old.Type() != ebpf.Hash {
		return fmt.Errorf("map type %s", old.Type())
	}
	if old.KeySize() != uint32(unsafe.Sizeof(k)) || old.ValueSize() != uint32(unsafe.Sizeof(v)) {
		return fmt.Errorf("key size %d, value size %d", old.KeySize(), old.ValueSize())
	}
	var want *btf.Struct
	if err := env.spec.Types.TypeByName("ct4_entry_v2", &want); err != nil {
		return err
	}
	return checkPinnedMembers(old, want)
}

func moveCT4V2(env migrationEnv, old, fresh *ebpf.Map) (moved, skipped int, err error) {
	var (
		keys  []bpf.SluiceCt4Key
		vals  []bpf.SluiceCt4Entry
		limit = int(fresh.MaxEntries())
	)
	err = maps.New[bpf.SluiceCt4Key, bpf.SluiceCt4EntryV2](old).Each(func(k bpf.SluiceCt4Key, v bpf.SluiceCt4EntryV2) bool {
		if len(keys) >= limit {
			skipped++
			return true
		}
		keys = append(keys, k)
		vals = append(vals, bpf.SluiceCt4Entry{
			BackendAddr: v.BackendAddr,
			BackendPort: v.BackendPort,
			Kind:        v.Kind,
			Flags:       v.Flags,
			RevNatId:    v.RevNatId,
			BackendId:   v.BackendId,
			Expires:     v.Expires,
			Created:     v.Created,
		})
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
