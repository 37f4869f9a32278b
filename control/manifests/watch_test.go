package manifests

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// watching runs d.Watch for the test's duration and returns the
// snapshots it delivers.
func watching(t *testing.T, d *Dir) <-chan Snapshot {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	snaps := make(chan Snapshot, 256)
	done := make(chan error, 1)
	go func() { done <- d.Watch(ctx, func(s Snapshot) { snaps <- s }) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Watch: %v", err)
		}
	})
	return snaps
}

// until receives snapshots until one satisfies done, and checks every
// snapshot received on the way (the last one included) with check.
func until(t *testing.T, snaps <-chan Snapshot, what string, check func(Snapshot) string, done func(Snapshot) bool) {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case s := <-snaps:
			if bad := check(s); bad != "" {
				t.Fatalf("while waiting for %s: %s (snapshot %v)", what, bad, names(s))
			}
			if done(s) {
				return
			}
		case <-deadline:
			t.Fatalf("never saw %s", what)
		}
	}
}

func has(s Snapshot, name string) bool { return slices.Contains(names(s), name) }

func sliceAddr(s Snapshot) string {
	if len(s.Slices) != 1 || len(s.Slices[0].Endpoints) != 1 {
		return ""
	}
	return s.Slices[0].Endpoints[0].Addresses[0]
}

const svcB = `apiVersion: v1
kind: Service
metadata: {name: b, namespace: ns}
spec: {clusterIP: 10.96.0.2, ports: [{name: http, port: 80}]}
`

// A manifest rewritten in place, slowly, is read once its writer closes
// it: no snapshot shows it truncated or half written (here: the slice,
// updated, without the Service that follows it in the file).
func TestWatchReadsRewrittenFileOnlyWhenClosed(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "a.yaml", sliceA+"---\n"+svcA)
	d := open(t, dir)
	snaps := watching(t, d)

	whole := func(s Snapshot) string {
		if !has(s, "Service ns/a") {
			return "Service ns/a is missing: a.yaml was read truncated or half written"
		}
		return ""
	}
	f, err := os.OpenFile(filepath.Join(dir, "a.yaml"), os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	half := strings.ReplaceAll(sliceA, "10.0.0.1", "10.0.0.2") + "---\n"
	if _, err := f.WriteString(half); err != nil {
		t.Fatal(err)
	}
	// The watcher has had the truncation and the write once it reports
	// what follows them: another file written whole, and a change of the
	// kind a ConfigMap volume makes, which rereads every file.
	if err := os.Mkdir(filepath.Join(dir, "..2026_01_01"), 0o755); err != nil {
		t.Fatal(err)
	}
	write(t, dir, "b.yaml", svcB)
	until(t, snaps, "b.yaml", whole, func(s Snapshot) bool { return has(s, "Service ns/b") })
	if _, err := f.WriteString(svcA); err != nil {
		t.Fatal(err)
	}
	// Still open: nothing new is read.
	write(t, dir, "c.yaml", strings.ReplaceAll(svcB, "name: b,", "name: c,"))
	until(t, snaps, "c.yaml", func(s Snapshot) string {
		if bad := whole(s); bad != "" {
			return bad
		}
		if sliceAddr(s) != "10.0.0.1" {
			return "a.yaml was read while still open for writing"
		}
		return ""
	}, func(s Snapshot) bool { return has(s, "Service ns/c") })
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	until(t, snaps, "the rewritten a.yaml", whole, func(s Snapshot) bool { return sliceAddr(s) == "10.0.0.2" })
}

// A new file is read when its writer closes it, not when it is created.
func TestWatchReadsNewFileOnlyWhenClosed(t *testing.T) {
	dir := t.TempDir()
	d := open(t, dir)
	snaps := watching(t, d)

	f, err := os.Create(filepath.Join(dir, "a.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(svcA + "---\n"); err != nil {
		t.Fatal(err)
	}
	write(t, dir, "b.yaml", svcB)
	until(t, snaps, "b.yaml", func(s Snapshot) string {
		if has(s, "Service ns/a") {
			return "a.yaml was read while still open for writing"
		}
		return ""
	}, func(s Snapshot) bool { return has(s, "Service ns/b") })
	if _, err := f.WriteString(sliceA); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	until(t, snaps, "a.yaml whole", func(s Snapshot) string {
		if has(s, "Service ns/a") && !has(s, "EndpointSlice ns/a-1") {
			return "a.yaml was read half written"
		}
		return ""
	}, func(s Snapshot) bool { return has(s, "EndpointSlice ns/a-1") })
}

// Names that appear complete, with no writer to close them, are read at
// once: a symlink, a hard link, a file moved in.
func TestWatchReadsLinksAndMovesAtOnce(t *testing.T) {
	dir, elsewhere := t.TempDir(), t.TempDir()
	write(t, elsewhere, "a.yaml", svcA)
	write(t, elsewhere, "b.yaml", svcB)
	write(t, elsewhere, "slice.yaml", sliceA)
	d := open(t, dir)
	snaps := watching(t, d)
	none := func(Snapshot) string { return "" }

	if err := os.Symlink(filepath.Join(elsewhere, "a.yaml"), filepath.Join(dir, "a.yaml")); err != nil {
		t.Fatal(err)
	}
	until(t, snaps, "the symlink", none, func(s Snapshot) bool { return has(s, "Service ns/a") })
	if err := os.Link(filepath.Join(elsewhere, "b.yaml"), filepath.Join(dir, "b.yaml")); err != nil {
		t.Fatal(err)
	}
	until(t, snaps, "the hard link", none, func(s Snapshot) bool { return has(s, "Service ns/b") })
	if err := os.Rename(filepath.Join(elsewhere, "slice.yaml"), filepath.Join(dir, "slice.yaml")); err != nil {
		t.Fatal(err)
	}
	until(t, snaps, "the file moved in", none, func(s Snapshot) bool { return has(s, "EndpointSlice ns/a-1") })
	if err := os.Rename(filepath.Join(dir, "slice.yaml"), filepath.Join(elsewhere, "slice.yaml")); err != nil {
		t.Fatal(err)
	}
	until(t, snaps, "the file moved out", none, func(s Snapshot) bool { return !has(s, "EndpointSlice ns/a-1") })
}

// Watch returns when ctx ends, and a later Watch still gets the changes
// made in between.
func TestWatchAgainAfterCancel(t *testing.T) {
	dir := t.TempDir()
	d := open(t, dir)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Watch(ctx, func(Snapshot) {}) }()
	time.Sleep(20 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Watch: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Watch did not return when its context ended")
	}
	write(t, dir, "a.yaml", svcA)
	snaps := watching(t, d)
	until(t, snaps, "a.yaml", func(Snapshot) string { return "" }, func(s Snapshot) bool { return has(s, "Service ns/a") })
}

// A directory that goes away ends Watch with an error rather than leaving
// it watching nothing.
func TestWatchEndsWhenTheDirectoryGoes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "manifests")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	d := open(t, dir)
	done := make(chan error, 1)
	go func() { done <- d.Watch(context.Background(), func(Snapshot) {}) }()
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "removed") {
			t.Errorf("Watch returned %v, want the directory reported removed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Watch goes on watching a directory that was removed")
	}
}
