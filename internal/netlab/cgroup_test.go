package netlab

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/sluice-lb/sluice/internal/testenv"
)

// A process started in a node's namespace and cgroup is born in the
// cgroup; removing the cgroup kills it and leaves nothing; the lab never
// removes a hierarchy's root, nor makes a cgroup outside its mount; the
// mount goes with Unmount.
func TestCgroupLifecycle(t *testing.T) {
	testenv.Privileged(t)
	base := fmt.Sprintf("/run/sluice-slhcg-%d", os.Getpid())
	dir := filepath.Join(base, "cgroup2")
	t.Cleanup(func() { UnmountCgroup2(dir); os.Remove(base) })
	root, err := MountCgroup2(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := root.NewCgroup("../escape"); err == nil {
		t.Error("a cgroup outside the mount was made")
	}
	if err := RemoveCgroup(root.Path); err == nil {
		t.Error("the hierarchy's root was accepted for removal")
	}
	prefix := fmt.Sprintf("slhcg%d", os.Getpid())
	cg, err := root.NewCgroup(prefix + "/node-1")
	if err != nil {
		t.Fatal(err)
	}
	ns, err := NewNS(prefix + "-node")
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Delete()
	cmd := exec.Command("sleep", "60")
	if err := ns.StartInCgroup(cg, cmd); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	pids, err := cg.Pids()
	if err != nil || !slices.Contains(pids, cmd.Process.Pid) {
		t.Errorf("cgroup %s holds %v (%v), want %d", cg.Path, pids, err, cmd.Process.Pid)
	}
	if err := RemoveCgroup(filepath.Join(root.Path, prefix)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		cmd.Process.Kill()
		t.Fatal("the process outlived its cgroup")
	}
	if _, err := os.Stat(filepath.Join(root.Path, prefix)); !os.IsNotExist(err) {
		t.Errorf("cgroup left: %v", err)
	}
	if err := root.Unmount(); err != nil {
		t.Fatal(err)
	}
	if IsCgroup2(dir) {
		t.Error("still mounted")
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("mount point left: %v", err)
	}
}
