package loader

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
)

// A map's own BTF is the best witness of what its bytes mean, but reading
// it takes CAP_SYS_ADMIN, which the agent does not have (deploy/: CAP_BPF
// and three more). So every Load also records the layout of each pinned
// map, as layout.go describes it, in a small map of its own, pinned beside
// them; a later agent without the privilege compares against the record.
// The datapath never reads it: it is made here, not in C.

const (
	layoutRecordName = "sluice_layouts"
	layoutNameLen    = 32   // a map name (BPF_OBJ_NAME_LEN is 16; pins may be longer)
	layoutValueLen   = 2048 // a layout description, NUL-padded; longer ones are cut
	layoutRecordMax  = 64
)

type layoutKey [layoutNameLen]byte
type layoutValue [layoutValueLen]byte

var layoutRecordSpec = ebpf.MapSpec{
	Name:       layoutRecordName,
	Type:       ebpf.Hash,
	KeySize:    layoutNameLen,
	ValueSize:  layoutValueLen,
	MaxEntries: layoutRecordMax,
}

// readLayoutRecord returns the layouts recorded under dir by map name;
// none when nothing was recorded (an agent older than the record).
func readLayoutRecord(dir string) (map[string]string, error) {
	m, err := ebpf.LoadPinnedMap(filepath.Join(dir, layoutRecordName), &ebpf.LoadPinOptions{ReadOnly: true})
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", layoutRecordName, err)
	}
	defer m.Close()
	out := map[string]string{}
	var (
		k layoutKey
		v layoutValue
	)
	it := m.Iterate()
	for it.Next(&k, &v) {
		out[string(bytes.TrimRight(k[:], "\x00"))] = string(bytes.TrimRight(v[:], "\x00"))
	}
	return out, it.Err()
}

// writeLayoutRecord records the layout of every pinned map of spec, as
// this binary made or adopted them.
func writeLayoutRecord(spec *ebpf.CollectionSpec, dir string) error {
	path := filepath.Join(dir, layoutRecordName)
	m, err := ebpf.LoadPinnedMap(path, nil)
	if errors.Is(err, os.ErrNotExist) {
		if m, err = ebpf.NewMap(&layoutRecordSpec); err == nil {
			err = m.Pin(path)
		}
	}
	if err != nil {
		return fmt.Errorf("%s: %w", layoutRecordName, err)
	}
	defer m.Close()
	for name, ms := range spec.Maps {
		if ms.Pinning != ebpf.PinByName || ms.Key == nil || ms.Value == nil {
			continue
		}
		var (
			k layoutKey
			v layoutValue
		)
		copy(k[:], name)
		copy(v[:], layoutOf(ms.Key, ms.Value))
		if err := m.Put(&k, &v); err != nil {
			return fmt.Errorf("%s: record %s: %w", layoutRecordName, name, err)
		}
	}
	return nil
}
