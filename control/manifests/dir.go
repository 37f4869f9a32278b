// Package manifests serves Services, EndpointSlices and this node's Node
// from a directory of YAML or JSON manifests, the way sluice runs without
// a cluster.
package manifests

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// Problem is a file, or an object in it, that was skipped.
type Problem struct {
	File   string
	Object string // empty when the whole file failed
	Reason string
}

func (p Problem) String() string {
	if p.Object == "" {
		return p.File + ": " + p.Reason
	}
	return p.File + ": " + p.Object + ": " + p.Reason
}

// Snapshot is the directory's content at one moment.
type Snapshot struct {
	Services []*corev1.Service
	Slices   []*discoveryv1.EndpointSlice
	// Nodes are every Node in the directory (a lab writes one per node
	// into a directory all its agents share); the source picks its own.
	Nodes    []*corev1.Node
	Problems []Problem
}

// Dir keeps the last good content of every manifest file in a directory.
type Dir struct {
	path  string
	files map[string]*fileState
	// owners lists, in name order, the files defining each object: the
	// first one's definition counts.
	owners map[objectKey][]string
	names  []string // of files, sorted; nil when it must be rebuilt
	// watcher is registered before the first read, so that no change
	// between reading and watching is lost.
	watcher *watcher
	// dirty holds the names changed and not read yet, rescanAll among
	// them, kept from one Watch to the next.
	dirty map[string]bool
	// writing holds the files written to and not closed since: they are
	// read when their writer closes them, not half written.
	writing map[string]bool
}

type fileState struct {
	objects  map[objectKey]object // last good version of each object
	order    []objectKey          // the file's order, for stable output
	problems []Problem            // of the most recent read
}

// Open starts watching path and reads every manifest in it. Close releases
// the watch; Watch delivers the changes.
func Open(path string) (*Dir, error) {
	w, err := newWatcher(path)
	if err != nil {
		return nil, fmt.Errorf("watch %s: %w", path, err)
	}
	d := &Dir{path: path, files: map[string]*fileState{}, owners: map[objectKey][]string{}, watcher: w,
		dirty: map[string]bool{}, writing: map[string]bool{}}
	entries, err := os.ReadDir(path)
	if err != nil {
		w.close()
		return nil, fmt.Errorf("read manifests dir: %w", err)
	}
	for _, e := range entries {
		if isManifest(e.Name()) && !e.IsDir() {
			d.Reload(e.Name())
		}
	}
	return d, nil
}

// Close stops watching the directory.
func (d *Dir) Close() error { return d.watcher.close() }

// Path returns the directory.
func (d *Dir) Path() string { return d.path }

func isManifest(name string) bool {
	if strings.HasPrefix(name, ".") {
		return false
	}
	switch strings.ToLower(filepath.Ext(name)) {
	case ".yaml", ".yml", ".json":
		return true
	}
	return false
}

// Reload reads one file (a name within the directory) again. A file that
// no longer exists drops its objects. A file that does not parse keeps the
// objects it had; an object that became invalid keeps its last good
// version from that file.
func (d *Dir) Reload(name string) {
	if !isManifest(name) {
		return
	}
	data, err := os.ReadFile(filepath.Join(d.path, name))
	if errors.Is(err, fs.ErrNotExist) {
		d.setFile(name, nil)
		return
	}
	prev := d.files[name]
	if prev == nil {
		prev = &fileState{objects: map[objectKey]object{}}
	}
	if err != nil {
		prev.problems = []Problem{{File: name, Reason: err.Error()}}
		d.setFile(name, prev)
		return
	}
	objs, bad, err := decodeFile(data)
	if err != nil {
		prev.problems = []Problem{{File: name, Reason: "does not parse, keeping its previous content: " + err.Error()}}
		d.setFile(name, prev)
		return
	}
	next := &fileState{objects: map[objectKey]object{}}
	for _, o := range objs {
		if _, dup := next.objects[o.key]; dup {
			next.problems = append(next.problems, Problem{File: name, Object: o.key.String(), Reason: "defined twice in the file; the first wins"})
			continue
		}
		next.objects[o.key] = o
		next.order = append(next.order, o.key)
	}
	for _, b := range bad {
		reason := b.reason
		// Keep the last good version of an object that is now invalid.
		for _, k := range prev.order {
			if k.String() == b.object {
				if _, have := next.objects[k]; !have {
					next.objects[k] = prev.objects[k]
					next.order = append(next.order, k)
					reason += " (keeping its previous version)"
				}
			}
		}
		next.problems = append(next.problems, Problem{File: name, Object: b.object, Reason: reason})
	}
	d.setFile(name, next)
}

// setFile replaces a file's state (nil: the file is gone) and keeps the
// owners index in step.
func (d *Dir) setFile(name string, f *fileState) {
	old := d.files[name]
	if old == f {
		return
	}
	if old != nil {
		for _, k := range old.order {
			d.owners[k] = slices.DeleteFunc(d.owners[k], func(n string) bool { return n == name })
			if len(d.owners[k]) == 0 {
				delete(d.owners, k)
			}
		}
	} else {
		d.names = nil
	}
	if f == nil {
		delete(d.files, name)
		d.names = nil
		return
	}
	d.files[name] = f
	for _, k := range f.order {
		owners := d.owners[k]
		i, _ := slices.BinarySearch(owners, name)
		d.owners[k] = slices.Insert(owners, i, name)
	}
}

// Snapshot returns every object, files in name order. An object defined in
// two files is taken from the first.
func (d *Dir) Snapshot() Snapshot {
	var s Snapshot
	d.snapshotInto(&s)
	return s
}

// snapshotInto fills s, reusing its slices: Watch hands the same buffers
// to every change, so a change does not allocate the whole directory's
// worth of pointers again.
func (d *Dir) snapshotInto(s *Snapshot) {
	s.Services, s.Slices, s.Nodes, s.Problems = s.Services[:0], s.Slices[:0], s.Nodes[:0], s.Problems[:0]
	if d.names == nil {
		for n := range d.files {
			d.names = append(d.names, n)
		}
		slices.Sort(d.names)
	}
	for _, n := range d.names {
		f := d.files[n]
		s.Problems = append(s.Problems, f.problems...)
		for _, k := range f.order {
			if first := d.owners[k][0]; first != n {
				s.Problems = append(s.Problems, Problem{File: n, Object: k.String(), Reason: "also defined in " + first + ", which wins"})
				continue
			}
			switch o := f.objects[k]; {
			case o.service != nil:
				s.Services = append(s.Services, o.service)
			case o.slice != nil:
				s.Slices = append(s.Slices, o.slice)
			case o.node != nil:
				s.Nodes = append(s.Nodes, o.node)
			}
		}
	}
}
