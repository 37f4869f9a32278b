package main

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// readTar returns a tar's entries by name, in order.
func readTar(t *testing.T, r io.Reader) (names []string, headers map[string]*tar.Header, data map[string][]byte) {
	t.Helper()
	headers, data = map[string]*tar.Header{}, map[string][]byte{}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return names, headers, data
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
		headers[h.Name], data[h.Name] = h, b
	}
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

// build writes an archive of a small tree: a file with its mode changed, a
// directory tree with a symlink in it, an added symlink and an empty
// directory.
func build(t *testing.T, dir string, tags ...string) (string, string) {
	t.Helper()
	src := filepath.Join(dir, "src")
	if err := os.MkdirAll(filepath.Join(src, "tree", "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(p, s string, mode os.FileMode) {
		if err := os.WriteFile(filepath.Join(src, p), []byte(s), mode); err != nil {
			t.Fatal(err)
		}
	}
	write("bin", "#!binary\n", 0o600)
	write("tree/a", "a\n", 0o644)
	write("tree/sub/b", "b\n", 0o640)
	if err := os.Symlink("a", filepath.Join(src, "tree", "link")); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out.tar")
	args := []string{"-o", out,
		"-file", filepath.Join(src, "bin") + "=/usr/bin/tool:0755",
		"-file", filepath.Join(src, "tree") + "=/etc/tree",
		"-symlink", "/bin/sh=/usr/bin/tool",
		"-dir", "/tmp:1777",
		"-entrypoint", `["/usr/bin/tool"]`, "-cmd", `["serve"]`,
		"-env", "A=b", "-workdir", "/tmp", "-expose", "8080/tcp"}
	for _, tag := range tags {
		args = append(args, "-tag", tag)
	}
	if err := run(args, io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return out, string(b)
}

func TestArchiveLayout(t *testing.T) {
	tags := []string{"registry.k8s.io/e2e-test-images/agnhost:2.66.1", "registry.k8s.io/e2e-test-images/agnhost:2.55"}
	out, _ := build(t, t.TempDir(), tags...)
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	names, headers, data := readTar(t, f)

	// Every blob is named by the digest of what it holds.
	for _, n := range names {
		if strings.HasPrefix(n, "blobs/sha256/") && headers[n].Typeflag == tar.TypeReg {
			if got := sha(data[n]); got != "sha256:"+strings.TrimPrefix(n, "blobs/sha256/") {
				t.Errorf("%s holds %s", n, got)
			}
		}
	}
	if got := string(data["oci-layout"]); got != `{"imageLayoutVersion":"1.0.0"}` {
		t.Errorf("oci-layout = %s", got)
	}
	blobOf := func(d descriptor) []byte {
		t.Helper()
		b, ok := data["blobs/sha256/"+strings.TrimPrefix(d.Digest, "sha256:")]
		if !ok {
			t.Fatalf("no blob %s", d.Digest)
		}
		if int64(len(b)) != d.Size {
			t.Fatalf("blob %s: %d bytes, descriptor says %d", d.Digest, len(b), d.Size)
		}
		return b
	}

	var idx index
	if err := json.Unmarshal(data["index.json"], &idx); err != nil {
		t.Fatal(err)
	}
	if idx.SchemaVersion != 2 || idx.MediaType != mediaIndex || len(idx.Manifests) != 2 {
		t.Fatalf("index: %+v", idx)
	}
	var named []string
	for _, d := range idx.Manifests {
		named = append(named, d.Annotations[annotationName])
		if d.Digest != idx.Manifests[0].Digest || d.MediaType != mediaManifest {
			t.Errorf("index entry %+v: not the one manifest", d)
		}
		if d.Platform == nil || d.Platform.OS != "linux" || d.Platform.Architecture != "amd64" {
			t.Errorf("index entry %+v: not linux/amd64", d)
		}
		if ref := d.Annotations[annotationName]; !strings.HasSuffix(ref, ":"+d.Annotations[annotationRef]) {
			t.Errorf("index entry %+v: ref.name is not the tag", d)
		}
	}
	if want := []string{tags[1], tags[0]}; !reflect.DeepEqual(named, want) {
		t.Errorf("index names %q, want %q", named, want)
	}

	var mf manifest
	if err := json.Unmarshal(blobOf(idx.Manifests[0]), &mf); err != nil {
		t.Fatal(err)
	}
	if mf.SchemaVersion != 2 || mf.MediaType != mediaManifest || mf.Config.MediaType != mediaConfig || len(mf.Layers) != 1 || mf.Layers[0].MediaType != mediaLayer {
		t.Fatalf("manifest: %+v", mf)
	}
	var cfg imageConfig
	if err := json.Unmarshal(blobOf(mf.Config), &cfg); err != nil {
		t.Fatal(err)
	}
	layer := blobOf(mf.Layers[0])
	if cfg.OS != "linux" || cfg.Architecture != "amd64" || cfg.RootFS.Type != "layers" || !reflect.DeepEqual(cfg.RootFS.DiffIDs, []string{sha(layer)}) {
		t.Errorf("config: %+v, want diff_ids [%s]", cfg, sha(layer))
	}
	want := runConfig{
		Env:          []string{defaultPathEnv, "A=b"},
		Entrypoint:   []string{"/usr/bin/tool"},
		Cmd:          []string{"serve"},
		WorkingDir:   "/tmp",
		ExposedPorts: map[string]struct{}{"8080/tcp": {}},
	}
	if !reflect.DeepEqual(cfg.Config, want) {
		t.Errorf("run config %+v, want %+v", cfg.Config, want)
	}

	// The layer: sorted, parents first, root-owned, fixed mtimes, the modes
	// asked for, symlinks kept.
	lnames, lh, ldata := readTar(t, bytes.NewReader(layer))
	wantNames := []string{"bin/", "bin/sh", "etc/", "etc/tree/", "etc/tree/a", "etc/tree/link", "etc/tree/sub/", "etc/tree/sub/b", "tmp/", "usr/", "usr/bin/", "usr/bin/tool"}
	if !reflect.DeepEqual(lnames, wantNames) {
		t.Fatalf("layer entries %q, want %q", lnames, wantNames)
	}
	for _, n := range lnames {
		h := lh[n]
		if h.Uid != 0 || h.Gid != 0 || !h.ModTime.Equal(epoch) {
			t.Errorf("%s: uid %d gid %d mtime %v", n, h.Uid, h.Gid, h.ModTime)
		}
	}
	modes := map[string]int64{"usr/bin/tool": 0o755, "etc/tree/a": 0o644, "etc/tree/sub/b": 0o640, "tmp/": 0o1777, "usr/": 0o755}
	for n, m := range modes {
		if lh[n].Mode != m {
			t.Errorf("%s: mode %o, want %o", n, lh[n].Mode, m)
		}
	}
	if h := lh["bin/sh"]; h.Typeflag != tar.TypeSymlink || h.Linkname != "/usr/bin/tool" {
		t.Errorf("bin/sh: %+v", h)
	}
	if h := lh["etc/tree/link"]; h.Typeflag != tar.TypeSymlink || h.Linkname != "a" {
		t.Errorf("etc/tree/link: %+v", h)
	}
	if string(ldata["usr/bin/tool"]) != "#!binary\n" || string(ldata["etc/tree/sub/b"]) != "b\n" {
		t.Errorf("file contents: %q %q", ldata["usr/bin/tool"], ldata["etc/tree/sub/b"])
	}
}

// The same inputs, in another directory with other mtimes, make the same
// bytes.
func TestArchiveDeterministic(t *testing.T) {
	_, a := build(t, t.TempDir(), "sluice.local/tools:1")
	_, b := build(t, t.TempDir(), "sluice.local/tools:1")
	if a != b {
		t.Fatal("two builds of the same inputs differ")
	}
	_, c := build(t, t.TempDir(), "sluice.local/tools:2")
	if a == c {
		t.Fatal("another tag made the same archive")
	}
}

func TestBadInput(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "f")
	if err := os.WriteFile(f, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out.tar")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-tag", "sluice.local/x:1"}, "-o is required"},
		{[]string{"-o", out}, "no -tag"},
		{[]string{"-o", out, "-tag", "pause:3.10"}, "not a reference"},
		{[]string{"-o", out, "-tag", "registry.k8s.io/pause"}, "not a reference"},
		{[]string{"-o", out, "-tag", "sluice.local/x:1", "-file", f + "=rel"}, "not absolute"},
		{[]string{"-o", out, "-tag", "sluice.local/x:1", "-file", f + "=/a:9z"}, "not octal"},
		{[]string{"-o", out, "-tag", "sluice.local/x:1", "-file", dir + "/missing=/a"}, "no such file"},
		{[]string{"-o", out, "-tag", "sluice.local/x:1", "-file", f + "=/a", "-file", f + "=/a/b"}, "not a directory"},
		{[]string{"-o", out, "-tag", "sluice.local/x:1", "-entrypoint", "/pause"}, "JSON array"},
		{[]string{"-o", out, "-tag", "sluice.local/x:1", "-expose", "80"}, "port/tcp"},
	} {
		err := run(tc.args, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want one saying %q", tc.args, err, tc.want)
		}
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("a failed run left %s", out)
	}
}
