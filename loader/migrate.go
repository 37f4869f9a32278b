package loader

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
)

// A migration carries the entries of a pinned map of an older layout into
// the map of the current one. Maps carry their layout version in their
// name (ct4 became ct4_v2, then ct4_v3), so an old pin is found by its name; a layout
// changed under the same name is found by comparing BTF (layout.go) and
// migrated by a registration whose from and to are equal. The next layout
// change adds one entry to migrations and one function.
type migration struct {
	from, to string // pinned name of the old map; spec name of the new one
	// check says whether old has the layout move reads; if not, the old
	// pin is removed and the new map starts empty.
	check func(env migrationEnv, old *ebpf.Map) error
	// move puts every entry of old, converted, into fresh, and returns
	// how many it wrote and how many it left out.
	move func(env migrationEnv, old, fresh *ebpf.Map) (moved, skipped int, err error)
}

// migrationEnv is what a migration may read besides the old map.
type migrationEnv struct {
	spec *ebpf.CollectionSpec
	dir  string
}

var migrations = []migration{
	{from: "ct4", to: "ct4_v3", check: checkCT4V1, move: moveCT4V1},
	{from: "ct4_v2", to: "ct4_v3", check: checkCT4V2, move: moveCT4V2},
	{from: "lb4_services", to: "lb4_services", check: checkLB4ServicesPad, move: copyEntries},
}

// migrationTo returns the migration of a same-named map whose layout
// changed, if one is registered.
func migrationTo(name string) *migration {
	for i := range migrations {
		if m := &migrations[i]; m.from == name && m.to == name {
			return m
		}
	}
	return nil
}

// runRenameMigrations runs, before anything is loaded, every migration
// whose old map is pinned under dir: when the new map is not pinned yet,
// its entries are moved into a new map pinned in its place; either way the
// old pin is removed, since nothing reads it any more.
func runRenameMigrations(spec *ebpf.CollectionSpec, dir string, log *slog.Logger) error {
	for i := range migrations {
		mig := &migrations[i]
		if mig.from == mig.to {
			continue
		}
		oldPath := filepath.Join(dir, mig.from)
		old, err := ebpf.LoadPinnedMap(oldPath, nil)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("open pinned map %s: %w", oldPath, err)
		}
		err = runMigration(spec, dir, mig, old, log)
		old.Close()
		if err != nil {
			return fmt.Errorf("migrate %s to %s: %w", mig.from, mig.to, err)
		}
		if err := os.Remove(oldPath); err != nil {
			return fmt.Errorf("remove migrated map %s: %w", oldPath, err)
		}
	}
	return nil
}

// runMigration moves old's entries into a new map of spec.Maps[mig.to]
// and pins it at dir/mig.to in one rename. A map already pinned there (a
// previous start got that far) is kept, and old only removed.
func runMigration(spec *ebpf.CollectionSpec, dir string, mig *migration, old *ebpf.Map, log *slog.Logger) error {
	ms, ok := spec.Maps[mig.to]
	if !ok {
		return fmt.Errorf("no map %s in the datapath", mig.to)
	}
	path := filepath.Join(dir, mig.to)
	if mig.from != mig.to {
		if _, err := os.Stat(path); err == nil {
			log.Warn("pinned map of an old layout beside its successor: removing it", "map", mig.from, "successor", mig.to)
			return nil
		}
	}
	env := migrationEnv{spec: spec, dir: dir}
	if err := mig.check(env, old); err != nil {
		log.Warn("pinned map of an old layout not as its migration expects: its entries are dropped",
			"map", mig.from, "to", mig.to, "err", err.Error())
		return nil
	}
	fresh := ms.Copy()
	fresh.Pinning = ebpf.PinNone
	m, err := ebpf.NewMap(fresh)
	if err != nil {
		return err
	}
	defer m.Close()
	moved, skipped, err := mig.move(env, old, m)
	if err != nil {
		return err
	}
	tmp := path + "_migrating" // bpffs refuses names with a dot
	_ = os.Remove(tmp)
	if err := m.Pin(tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	log.Warn("pinned map of an old layout migrated", "from", mig.from, "to", mig.to,
		"entries", moved, "dropped", skipped)
	return nil
}
