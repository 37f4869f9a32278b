package manifests

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
)

// settle is how long Watch waits after a change for the writes that follow
// it (an editor's write-then-rename, a copy of many files) before reading.
const settle = 4 * time.Millisecond

// Watch calls onChange with a new snapshot after files in the directory
// change, until ctx ends. Only the changed files are read again.
func (d *Dir) Watch(ctx context.Context, onChange func(Snapshot)) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch manifests: %w", err)
	}
	defer w.Close()
	if err := w.Add(d.path); err != nil {
		return fmt.Errorf("watch %s: %w", d.path, err)
	}

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
			if !isManifest(name) || ev.Op == fsnotify.Chmod {
				continue
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
			for name := range dirty {
				d.Reload(name)
			}
			clear(dirty)
			onChange(d.Snapshot())
		}
	}
}
