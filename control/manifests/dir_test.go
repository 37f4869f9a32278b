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

func write(t *testing.T, dir, name, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// open opens dir for the test's duration.
func open(t *testing.T, dir string) *Dir {
	t.Helper()
	d, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func names(s Snapshot) []string {
	var out []string
	for _, svc := range s.Services {
		out = append(out, "Service "+svc.Namespace+"/"+svc.Name)
	}
	for _, es := range s.Slices {
		out = append(out, "EndpointSlice "+es.Namespace+"/"+es.Name)
	}
	slices.Sort(out)
	return out
}

const svcA = `apiVersion: v1
kind: Service
metadata: {name: a, namespace: ns}
spec: {clusterIP: 10.96.0.1, ports: [{name: http, port: 80}]}
`

const sliceA = `apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: a-1, namespace: ns, labels: {kubernetes.io/service-name: a}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints: [{addresses: [10.0.0.1]}]
`

func TestReadsMultiDocumentYAMLListsAndJSON(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "a.yaml", svcA+"---\n"+sliceA+"---\n# only a comment\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: ignored}\n")
	write(t, dir, "b.yml", `apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Service
  metadata: {name: b}
  spec: {clusterIP: 10.96.0.2, ports: [{port: 80}]}
- apiVersion: v1
  kind: ServiceList
  items: []
`)
	write(t, dir, "c.json", `{"apiVersion":"v1","kind":"Service","metadata":{"name":"c","namespace":"x"},"spec":{"clusterIP":"10.96.0.3","ports":[{"port":53,"protocol":"UDP"}]}}`)
	write(t, dir, "notes.txt", "not a manifest")
	write(t, dir, ".hidden.yaml", "{{{")
	d := open(t, dir)
	s := d.Snapshot()
	want := []string{"EndpointSlice ns/a-1", "Service default/b", "Service ns/a", "Service x/c"}
	if got := names(s); !slices.Equal(got, want) {
		t.Errorf("objects %v, want %v", got, want)
	}
	// The nested ServiceList is refused, the rest of the List kept.
	if len(s.Problems) != 1 || !strings.Contains(s.Problems[0].String(), "b.yml") || !strings.Contains(s.Problems[0].String(), "nested list") {
		t.Errorf("problems %v", s.Problems)
	}
}

// A file that stops parsing keeps what it had; an object that becomes
// invalid keeps its last good version; both are reported with the file.
func TestBadContentKeepsLastGood(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "a.yaml", svcA+"---\n"+sliceA)
	write(t, dir, "b.yaml", strings.ReplaceAll(svcA, "name: a,", "name: b,"))
	d := open(t, dir)

	write(t, dir, "a.yaml", "apiVersion: v1\nkind: Service\nmetadata: [unclosed\n")
	d.Reload("a.yaml")
	s := d.Snapshot()
	if got := names(s); !slices.Equal(got, []string{"EndpointSlice ns/a-1", "Service ns/a", "Service ns/b"}) {
		t.Errorf("after a syntax error: %v", got)
	}
	if len(s.Problems) != 1 || !strings.HasPrefix(s.Problems[0].String(), "a.yaml: does not parse") {
		t.Errorf("problems %v", s.Problems)
	}

	// The Service's port becomes a string: that object keeps its old
	// version, the slice in the same file is updated.
	bad := strings.ReplaceAll(svcA, "port: 80", "port: eighty") + "---\n" + strings.ReplaceAll(sliceA, "10.0.0.1", "10.0.0.2")
	write(t, dir, "a.yaml", bad)
	d.Reload("a.yaml")
	s = d.Snapshot()
	if len(s.Services) != 2 || s.Services[0].Spec.Ports[0].Port != 80 {
		t.Errorf("invalid Service did not keep its last good version: %+v", s.Services)
	}
	if len(s.Slices) != 1 || s.Slices[0].Endpoints[0].Addresses[0] != "10.0.0.2" {
		t.Errorf("valid slice of the same file not updated: %+v", s.Slices)
	}
	if len(s.Problems) != 1 || !strings.Contains(s.Problems[0].String(), "a.yaml: Service ns/a:") || !strings.Contains(s.Problems[0].String(), "keeping its previous version") {
		t.Errorf("problems %v", s.Problems)
	}

	// Fixed again: the problem goes away.
	write(t, dir, "a.yaml", svcA)
	d.Reload("a.yaml")
	if s = d.Snapshot(); len(s.Problems) != 0 || len(s.Slices) != 0 {
		t.Errorf("after the fix: problems %v, slices %d", s.Problems, len(s.Slices))
	}

	// Deleted: its objects go.
	os.Remove(filepath.Join(dir, "a.yaml"))
	d.Reload("a.yaml")
	if got := names(d.Snapshot()); !slices.Equal(got, []string{"Service ns/b"}) {
		t.Errorf("after delete: %v", got)
	}
}

func TestDuplicateAcrossFilesFirstWins(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "1.yaml", svcA)
	write(t, dir, "2.yaml", strings.ReplaceAll(svcA, "10.96.0.1", "10.96.0.9"))
	d := open(t, dir)
	s := d.Snapshot()
	if len(s.Services) != 1 || s.Services[0].Spec.ClusterIP != "10.96.0.1" {
		t.Errorf("services %+v", s.Services)
	}
	if len(s.Problems) != 1 || !strings.Contains(s.Problems[0].String(), "also defined in 1.yaml") {
		t.Errorf("problems %v", s.Problems)
	}
}

func TestWatchSeesWritesRenamesAndRemoves(t *testing.T) {
	dir := t.TempDir()
	d := open(t, dir)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	snaps := make(chan Snapshot, 16)
	go d.Watch(ctx, func(s Snapshot) { snaps <- s })
	time.Sleep(50 * time.Millisecond) // the watch is registered

	expect := func(what string, want []string) {
		t.Helper()
		deadline := time.After(5 * time.Second)
		for {
			select {
			case s := <-snaps:
				if slices.Equal(names(s), want) {
					return
				}
			case <-deadline:
				t.Fatalf("%s: never saw %v", what, want)
			}
		}
	}
	write(t, dir, "a.yaml", svcA)
	expect("write", []string{"Service ns/a"})
	// An editor's save: write a temporary file, rename it over.
	write(t, dir, ".a.yaml.tmp", svcA+"---\n"+sliceA)
	if err := os.Rename(filepath.Join(dir, ".a.yaml.tmp"), filepath.Join(dir, "a.yaml")); err != nil {
		t.Fatal(err)
	}
	expect("rename", []string{"EndpointSlice ns/a-1", "Service ns/a"})
	os.Remove(filepath.Join(dir, "a.yaml"))
	expect("remove", nil)
}

// A ConfigMap volume updates by swapping its ..data symlink; the visible
// names are symlinks that never change themselves.
func TestWatchFollowsConfigMapSwap(t *testing.T) {
	dir := t.TempDir()
	os.Mkdir(filepath.Join(dir, "..v1"), 0o755)
	write(t, filepath.Join(dir, "..v1"), "a.yaml", svcA)
	os.Symlink("..v1", filepath.Join(dir, "..data"))
	os.Symlink("..data/a.yaml", filepath.Join(dir, "a.yaml"))
	d := open(t, dir)
	if got := names(d.Snapshot()); !slices.Equal(got, []string{"Service ns/a"}) {
		t.Fatalf("initial %v", got)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	snaps := make(chan Snapshot, 16)
	go d.Watch(ctx, func(s Snapshot) { snaps <- s })
	time.Sleep(50 * time.Millisecond)

	os.Mkdir(filepath.Join(dir, "..v2"), 0o755)
	write(t, filepath.Join(dir, "..v2"), "a.yaml", svcA+"---\n"+sliceA)
	os.Symlink("..v2", filepath.Join(dir, "..data_tmp"))
	if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(5 * time.Second)
	for {
		select {
		case s := <-snaps:
			if slices.Equal(names(s), []string{"EndpointSlice ns/a-1", "Service ns/a"}) {
				return
			}
		case <-deadline:
			t.Fatal("ConfigMap update not seen")
		}
	}
}

// A change made after Open but before Watch is delivered, not lost.
func TestWatchSeesChangesMadeBeforeItStarted(t *testing.T) {
	dir := t.TempDir()
	d := open(t, dir)
	write(t, dir, "a.yaml", svcA)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	snaps := make(chan Snapshot, 4)
	go d.Watch(ctx, func(s Snapshot) { snaps <- s })
	select {
	case s := <-snaps:
		if got := names(s); !slices.Equal(got, []string{"Service ns/a"}) {
			t.Errorf("snapshot %v", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the change made before Watch was lost")
	}
}
