package loader

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
)

// checkPinnedMaps compares every map pinned under dir with the spec this
// binary carries, before anything is loaded. A compatible map is adopted
// as it is by the load. Compatible means the same meaning, not only the
// same sizes: the key and value types the map was created with (its BTF)
// must have the spec's names, members, offsets and sizes (layout.go).
//   - Only the size changed: a new map is created, the entries are
//     copied, and the new pin replaces the old one in one rename.
//   - The layout changed and a migration is registered for the map
//     (migrate.go): its entries are converted into a new map the same way.
//   - Any other change (type, key or value size, or members that mean
//     something else within the same sizes): the old entries cannot be
//     read. The pin is removed, the map is created empty, and the control
//     plane reprograms it.
func checkPinnedMaps(spec *ebpf.CollectionSpec, dir string, log *slog.Logger) error {
	recorded, err := readLayoutRecord(dir)
	if err != nil {
		return err
	}
	for name, ms := range spec.Maps {
		if ms.Pinning != ebpf.PinByName {
			continue
		}
		path := filepath.Join(dir, name)
		old, err := ebpf.LoadPinnedMap(path, nil)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("open pinned map %s: %w", path, err)
		}
		err = checkPinnedMap(spec, dir, name, ms, old, recorded, log)
		old.Close()
		if err != nil {
			return fmt.Errorf("map %s: %w", name, err)
		}
	}
	return nil
}

func checkPinnedMap(spec *ebpf.CollectionSpec, dir, name string, ms *ebpf.MapSpec, old *ebpf.Map, recorded map[string]string, log *slog.Logger) error {
	path := filepath.Join(dir, name)
	change := ""
	if sameLayout(ms, old) {
		var err error
		if change, err = layoutChange(name, ms, old, recorded); err != nil {
			return err
		}
	}
	if change != "" {
		if mig := migrationTo(name); mig != nil {
			log.Warn("pinned map layout changed: migrating its entries", "map", name, "change", change)
			return runMigration(spec, dir, mig, old, log)
		}
		log.Warn("pinned map layout changed (same sizes, another meaning): recreating it empty",
			"map", name, "change", change)
		return os.Remove(path)
	}
	err := ms.Compatible(old)
	switch {
	case err == nil:
		return nil
	case sameLayout(ms, old) && !perCPU(ms.Type):
		n, err := migrateMap(ms, old, path)
		if err == nil {
			log.Warn("pinned map resized: entries migrated", "map", name,
				"from", old.MaxEntries(), "to", ms.MaxEntries, "entries", n)
		}
		return err
	default:
		log.Warn("pinned map layout changed: recreating it empty", "map", name, "change", err.Error())
		return os.Remove(path)
	}
}

func migrateMap(ms *ebpf.MapSpec, old *ebpf.Map, path string) (int, error) {
	fresh := ms.Copy()
	fresh.Pinning = ebpf.PinNone
	m, err := ebpf.NewMap(fresh)
	if err != nil {
		return 0, err
	}
	defer m.Close()

	var (
		n   int
		key = make([]byte, old.KeySize())
		val []byte
	)
	it := old.Iterate()
	for it.Next(&key, &val) {
		if n >= int(ms.MaxEntries) {
			break // shrunk below its content: the rest is dropped
		}
		if err := m.Put(key, val); err != nil {
			return n, fmt.Errorf("copy entry: %w", err)
		}
		n++
	}
	if err := it.Err(); err != nil {
		return n, err
	}
	tmp := path + "_migrating" // bpffs refuses names with a dot
	_ = os.Remove(tmp)
	if err := m.Pin(tmp); err != nil {
		return n, err
	}
	return n, os.Rename(tmp, path)
}

// sameLayout reports whether m holds entries of spec's kind: same type,
// key size and value size, whatever its size.
func sameLayout(spec *ebpf.MapSpec, m *ebpf.Map) bool {
	return m.Type() == spec.Type && m.KeySize() == spec.KeySize && m.ValueSize() == spec.ValueSize
}

// perCPU maps (the counters) are recreated rather than migrated: their
// values are statistics that restart from zero.
func perCPU(t ebpf.MapType) bool {
	return t == ebpf.PerCPUArray || t == ebpf.PerCPUHash || t == ebpf.LRUCPUHash
}
