package manifests

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// settle is how long Watch waits after a change for the changes that
// follow it (a copy of many files, a ConfigMap's swap) before reading.
const settle = 4 * time.Millisecond

// rescanAll marks a change that may concern every file.
const rescanAll = "\x00all"

// A file is read when it is complete: when its writer closes it
// (IN_CLOSE_WRITE), or when it appears whole under its name (moved or
// linked into place), never on a write or on the creation of a file that
// is still open for writing. A write (IN_MODIFY) only marks the file as
// being written, so that no rescan reads it half written either.
//
// fsnotify, which this used before, reports writes but not closes (its
// close-write op is not exported), hence inotify itself.
const watchMask = unix.IN_CLOSE_WRITE | unix.IN_MODIFY | unix.IN_CREATE |
	unix.IN_MOVED_TO | unix.IN_MOVED_FROM | unix.IN_DELETE |
	unix.IN_DELETE_SELF | unix.IN_MOVE_SELF | unix.IN_ONLYDIR | unix.IN_EXCL_UNLINK

// watcher is an inotify instance watching one directory. Its descriptor is
// non-blocking, so reads go through the runtime's poller: a read deadline
// wakes Watch up, Close ends it.
type watcher struct {
	f   *os.File
	buf []byte
}

type event struct {
	mask uint32
	name string // empty for an event of the directory itself
}

func newWatcher(path string) (*watcher, error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("inotify: %w", err)
	}
	if _, err := unix.InotifyAddWatch(fd, path, watchMask); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return &watcher{f: os.NewFile(uintptr(fd), "inotify "+path), buf: make([]byte, 64<<10)}, nil
}

func (w *watcher) close() error { return w.f.Close() }

// read returns the next events, waiting for them until the read deadline.
func (w *watcher) read() ([]event, error) {
	n, err := w.f.Read(w.buf)
	if err != nil {
		return nil, err
	}
	var evs []event
	for off := 0; off+unix.SizeofInotifyEvent <= n; {
		// struct inotify_event: wd, mask, cookie, len, then name[len].
		mask := binary.NativeEndian.Uint32(w.buf[off+4:])
		nameLen := int(binary.NativeEndian.Uint32(w.buf[off+12:]))
		off += unix.SizeofInotifyEvent
		if off+nameLen > n {
			return evs, fmt.Errorf("inotify: short event")
		}
		name := string(bytes.TrimRight(w.buf[off:off+nameLen], "\x00"))
		off += nameLen
		evs = append(evs, event{mask: mask, name: name})
	}
	return evs, nil
}

// note records what ev changed: names to read again in d.dirty, files
// being written in d.writing. It returns an error when the directory
// itself is gone.
func (d *Dir) note(ev event) error {
	switch {
	case ev.mask&unix.IN_Q_OVERFLOW != 0:
		// Events were lost: what is being written is not known either.
		clear(d.writing)
		d.dirty[rescanAll] = true
		return nil
	case ev.mask&(unix.IN_DELETE_SELF|unix.IN_MOVE_SELF|unix.IN_IGNORED|unix.IN_UNMOUNT) != 0:
		return fmt.Errorf("watch %s: the directory was removed, moved or unmounted", d.path)
	case ev.name == "":
		return nil
	case strings.HasPrefix(ev.name, ".."):
		// A ConfigMap volume swaps its ..data symlink: every file may
		// have changed without an event of its own.
		d.dirty[rescanAll] = true
		return nil
	case !isManifest(ev.name):
		return nil
	}
	name := ev.name
	switch {
	case ev.mask&(unix.IN_CLOSE_WRITE|unix.IN_MOVED_TO|unix.IN_MOVED_FROM|unix.IN_DELETE) != 0:
		// Closed by its writer, or another file under this name now, or
		// none: it is whole (or gone), read it.
		delete(d.writing, name)
		d.dirty[name] = true
	case ev.mask&unix.IN_MODIFY != 0:
		d.writing[name] = true
	case ev.mask&unix.IN_CREATE != 0 && ev.mask&unix.IN_ISDIR == 0:
		// A file created by open(2) is read when it is closed. A name
		// created whole has no writer to close it: a symlink, or a hard
		// link to a file that exists already.
		fi, err := os.Lstat(d.filePath(name))
		if errors.Is(err, fs.ErrNotExist) {
			d.dirty[name] = true
			break
		}
		if err != nil {
			break
		}
		st, _ := fi.Sys().(*syscall.Stat_t)
		if fi.Mode()&fs.ModeSymlink != 0 || (fi.Mode().IsRegular() && st != nil && st.Nlink > 1) {
			d.dirty[name] = true
		}
	}
	return nil
}

func (d *Dir) filePath(name string) string { return d.path + string(os.PathSeparator) + name }

// rescan reads again every manifest in the directory and every file known,
// but those being written, which are read when closed.
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
		if !d.writing[n] {
			d.Reload(n)
		}
	}
}

// flush reads the changed files again.
func (d *Dir) flush() {
	if d.dirty[rescanAll] {
		d.rescan()
	}
	for name := range d.dirty {
		// One written to again since its change is read at its close.
		if name != rescanAll && !d.writing[name] {
			d.Reload(name)
		}
	}
	clear(d.dirty)
}

// Watch calls onChange with a new snapshot after files in the directory
// change since Open, until ctx ends. Only the changed files are read
// again, and only once complete: a file being written is read when its
// writer closes it. Watch returns an error when the directory is gone.
// onChange must not keep the snapshot's slices past its return (their
// objects it may keep).
func (d *Dir) Watch(ctx context.Context, onChange func(Snapshot)) error {
	w := d.watcher
	// Wake the read up when ctx ends. A wake-up left over from a previous
	// Watch is told apart by ctx, and ignored.
	stop := context.AfterFunc(ctx, func() { w.f.SetReadDeadline(time.Now()) })
	defer stop()

	var flushAt time.Time // when to read the dirty files; zero: none
	// The snapshot handed to onChange, reused: onChange must not keep
	// its slices.
	var snap Snapshot
	if len(d.dirty) > 0 {
		flushAt = time.Now().Add(settle)
	}
	for {
		if err := w.f.SetReadDeadline(flushAt); err != nil {
			if errors.Is(err, os.ErrClosed) {
				return nil
			}
			return fmt.Errorf("watch %s: %w", d.path, err)
		}
		if ctx.Err() != nil {
			return nil
		}
		evs, err := w.read()
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded):
			if ctx.Err() != nil {
				return nil
			}
			if flushAt.IsZero() || time.Now().Before(flushAt) {
				continue
			}
			flushAt = time.Time{}
			d.flush()
			d.snapshotInto(&snap)
			onChange(snap)
			continue
		case errors.Is(err, os.ErrClosed):
			return nil
		case err != nil:
			return fmt.Errorf("watch %s: %w", d.path, err)
		}
		for _, ev := range evs {
			if err := d.note(ev); err != nil {
				return err
			}
		}
		if flushAt.IsZero() && len(d.dirty) > 0 {
			flushAt = time.Now().Add(settle)
		}
	}
}
