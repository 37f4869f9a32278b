package manifests

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
)

// settle is how long Watch waits after a change for the writes that follow
// it (an editor's write-then-rename, a copy of many files) before reading.
const settle = 4 * time.Millisecond

// rescanAll marks a change that may concern every file.
const rescanAll = "\x00all"

// rescan reads again every manifest in the directory and every file known.
func (d *Dir) rescan() {
	names := map[string]bool{}
	for n := range d.files {
		names[n] = true
	}
	if entries, err := os.ReadDir(d.path); err == nil {
		for _, e := range entries {
			names[e.Name()] = true
		}
	}
	for n := range names {
		d.Reload(n)
	}
}

// Watch calls onChange with a new snapshot after files in the directory
// change since Open, until ctx ends. Only the changed files are read again.
func (d *Dir) Watch(ctx context.Context, onChange func(Snapshot)) error {
	w := d.watcher

	dirty := map[string]bool{}
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return nil
			}
			name := filepath.Base(ev.Name)
			if ev.Op == fsnotify.Chmod {
				continue
			}
			if !isManifest(name) {
				// A ConfigMap volume swaps its ..data symlink: every
				// file may have changed without an event of its own.
				if !strings.HasPrefix(name, "..") {
					continue
				}
				name = rescanAll
			}
			if len(dirty) == 0 {
				timer.Reset(settle)
			}
			dirty[name] = true
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			return fmt.Errorf("watch %s: %w", d.path, err)
		case <-timer.C:
			if dirty[rescanAll] {
				d.rescan()
			}
			for name := range dirty {
				if name != rescanAll {
					d.Reload(name)
				}
			}
			clear(dirty)
			onChange(d.Snapshot())
		}
	}
}
