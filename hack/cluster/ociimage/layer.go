package main

import (
	"archive/tar"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// epoch is every entry's mtime and the image's creation time, so that the
// same inputs make the same layer and the same digests.
var epoch = time.Unix(0, 0).UTC()

type entryKind int

const (
	kindDir entryKind = iota
	kindFile
	kindSymlink
)

// entry is one path of the layer. A file's content is read from src when
// the layer is written.
type entry struct {
	kind   entryKind
	mode   int64 // the tar header's: permission, setuid, setgid and sticky bits
	src    string
	target string // a symlink's
}

// tree is the layer's file system: clean absolute paths without the leading
// slash ("bin/sh") to what is there. Parents are added as 0755 directories.
type tree map[string]*entry

// unixMode is the tar header's mode of a file mode: its permission bits
// and its setuid, setgid and sticky bits.
func unixMode(m fs.FileMode) int64 {
	u := int64(m.Perm())
	if m&fs.ModeSetuid != 0 {
		u |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		u |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		u |= 0o1000
	}
	return u
}

// cleanDst makes an image path ("/bin/sh") a tar name ("bin/sh").
func cleanDst(dst string) (string, error) {
	if !strings.HasPrefix(dst, "/") {
		return "", fmt.Errorf("image path %q: not absolute", dst)
	}
	p := strings.TrimPrefix(path.Clean(dst), "/")
	if p == "" {
		return "", fmt.Errorf("image path %q: the root itself", dst)
	}
	return p, nil
}

func (t tree) addParents(p string) error {
	for d := path.Dir(p); d != "."; d = path.Dir(d) {
		e, ok := t[d]
		if !ok {
			t[d] = &entry{kind: kindDir, mode: 0o755}
			continue
		}
		if e.kind != kindDir {
			return fmt.Errorf("image path /%s: parent /%s is not a directory", p, d)
		}
	}
	return nil
}

// put adds e at p. A later entry replaces an earlier file or symlink at the
// same path (so a tool can override one applet), but not a directory with
// something else.
func (t tree) put(p string, e *entry) error {
	if old, ok := t[p]; ok && (old.kind == kindDir) != (e.kind == kindDir) {
		return fmt.Errorf("image path /%s: both a directory and not", p)
	}
	if err := t.addParents(p); err != nil {
		return err
	}
	t[p] = e
	return nil
}

// addDir makes dst a directory with mode.
func (t tree) addDir(dst string, mode int64) error {
	p, err := cleanDst(dst)
	if err != nil {
		return err
	}
	return t.put(p, &entry{kind: kindDir, mode: mode})
}

// addSymlink makes dst a symlink to target.
func (t tree) addSymlink(dst, target string) error {
	p, err := cleanDst(dst)
	if err != nil {
		return err
	}
	if target == "" {
		return fmt.Errorf("symlink /%s: empty target", p)
	}
	return t.put(p, &entry{kind: kindSymlink, mode: 0o777, target: target})
}

// addPath copies src (a file, followed if a symlink, or a directory,
// recursively, its symlinks kept as such) to dst. mode, when not zero,
// replaces the permission bits of a file, or of every file under a
// directory.
func (t tree) addPath(src, dst string, mode int64) error {
	p, err := cleanDst(dst)
	if err != nil {
		return err
	}
	fi, err := os.Stat(src)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		if !fi.Mode().IsRegular() {
			return fmt.Errorf("%s: not a regular file or directory", src)
		}
		m := unixMode(fi.Mode())
		if mode != 0 {
			m = mode
		}
		return t.put(p, &entry{kind: kindFile, mode: m, src: src})
	}
	return filepath.WalkDir(src, func(s string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, s)
		if err != nil {
			return err
		}
		q := p
		if rel != "." {
			q = path.Join(p, filepath.ToSlash(rel))
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			return t.put(q, &entry{kind: kindDir, mode: unixMode(info.Mode())})
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(s)
			if err != nil {
				return err
			}
			return t.put(q, &entry{kind: kindSymlink, mode: 0o777, target: target})
		case d.Type().IsRegular():
			m := unixMode(info.Mode())
			if mode != 0 {
				m = mode
			}
			return t.put(q, &entry{kind: kindFile, mode: m, src: s})
		default:
			return fmt.Errorf("%s: not a regular file, directory or symlink", s)
		}
	})
}

// write writes the layer as an uncompressed tar: entries sorted by path
// (so a directory precedes what is in it), owned by root, every mtime
// epoch.
func (t tree) write(w io.Writer) error {
	names := make([]string, 0, len(t))
	for p := range t {
		names = append(names, p)
	}
	sort.Strings(names)
	tw := tar.NewWriter(w)
	for _, p := range names {
		e := t[p]
		h := &tar.Header{Name: p, Mode: e.mode, ModTime: epoch, Format: tar.FormatPAX}
		var f *os.File
		switch e.kind {
		case kindDir:
			h.Typeflag = tar.TypeDir
			h.Name += "/"
		case kindSymlink:
			h.Typeflag = tar.TypeSymlink
			h.Linkname = e.target
		case kindFile:
			h.Typeflag = tar.TypeReg
			var err error
			if f, err = os.Open(e.src); err != nil {
				return err
			}
			fi, err := f.Stat()
			if err != nil {
				f.Close()
				return err
			}
			h.Size = fi.Size()
		}
		if err := tw.WriteHeader(h); err != nil {
			if f != nil {
				f.Close()
			}
			return fmt.Errorf("/%s: %w", p, err)
		}
		if f != nil {
			n, err := io.Copy(tw, f)
			f.Close()
			if err != nil {
				return fmt.Errorf("%s: %w", e.src, err)
			}
			if n != h.Size {
				return fmt.Errorf("%s: changed while read", e.src)
			}
		}
	}
	return tw.Close()
}
