package netlab

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Cgroup2Root is the lab's mount of the cgroup v2 hierarchy. Only the
// cgroups it creates below it are the lab's: the root itself is the
// machine's, and nothing is ever attached to it or moved into it.
type Cgroup2Root struct {
	Path    string
	mounted bool // until Unmount
}

// MountCgroup2 mounts the cgroup v2 hierarchy at dir (created if
// missing), a mount of the lab's own beside whatever the machine mounts
// (here v1 controllers, and maybe a v2 mount of its own): the lab makes its
// cgroups through its own mount and unmounts it when it is done. The
// hierarchy is one per machine whatever its mount point, so cgroups made
// under dir are as real as any, and visible through every v2 mount.
func MountCgroup2(dir string) (*Cgroup2Root, error) {
	if isCgroup2(dir) {
		// Left mounted by an earlier run that did not get to unmount.
		return &Cgroup2Root{Path: dir, mounted: true}, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if err := unix.Mount("cgroup2", dir, "cgroup2", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return nil, fmt.Errorf("mount cgroup2 at %s: %w", dir, err)
	}
	return &Cgroup2Root{Path: dir, mounted: true}, nil
}

// IsCgroup2 reports whether p is in a cgroup v2 hierarchy.
func IsCgroup2(p string) bool { return isCgroup2(p) }

func isCgroup2(p string) bool {
	var st unix.Statfs_t
	return unix.Statfs(p, &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC
}

// Unmount unmounts the hierarchy, and removes
// the then empty mount point. The cgroups made under it must be removed
// first: they would outlive the mount, invisible.
func (r *Cgroup2Root) Unmount() error {
	if r == nil || !r.mounted {
		return nil
	}
	if err := UnmountCgroup2(r.Path); err != nil {
		return err
	}
	r.mounted = false
	return nil
}

// UnmountCgroup2 unmounts a cgroup2 mount at dir, if there is one, and
// removes dir once it is an empty directory again. It never walks the
// hierarchy: removing a tree under a cgroup2 mount would remove cgroups.
func UnmountCgroup2(dir string) error {
	for isCgroup2(dir) {
		if err := unix.Unmount(dir, 0); err != nil {
			if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
				return fmt.Errorf("unmount %s: %w", dir, err)
			}
		}
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// Cgroup is one cgroup the lab made (a node's, say).
type Cgroup struct {
	Path string
}

// NewCgroup makes the cgroup rel (a path, "sluice-lab/node-1") under the
// root, and its parents. One left from an earlier run is reused.
func (r *Cgroup2Root) NewCgroup(rel string) (*Cgroup, error) {
	if rel == "" || filepath.IsAbs(rel) || strings.Contains(rel, "..") {
		return nil, fmt.Errorf("cgroup %q: want a relative path below the root", rel)
	}
	p := filepath.Join(r.Path, rel)
	if err := os.MkdirAll(p, 0o755); err != nil {
		return nil, fmt.Errorf("make cgroup %s: %w", p, err)
	}
	return &Cgroup{Path: p}, nil
}

// StartInCgroup starts cmd in the namespace, born in the cgroup (clone3 with
// CLONE_INTO_CGROUP): it never runs a moment anywhere else, so whatever is
// attached to the cgroup sees every socket it opens.
func (n *NS) StartInCgroup(cg *Cgroup, cmd *exec.Cmd) error {
	fd, err := unix.Open(cg.Path, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open cgroup %s: %w", cg.Path, err)
	}
	defer unix.Close(fd)
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.UseCgroupFD = true
	cmd.SysProcAttr.CgroupFD = fd
	return n.Start(cmd)
}

// Pids lists the processes in the cgroup itself (not its children).
func (cg *Cgroup) Pids() ([]int, error) {
	f, err := os.Open(filepath.Join(cg.Path, "cgroup.procs"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var pids []int
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var pid int
		if _, err := fmt.Sscan(sc.Text(), &pid); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids, sc.Err()
}

// Remove kills what still runs in the cgroup and below (cgroup.kill: only
// processes the lab started there can be in it), waits for them to go and
// removes the cgroup and its children. A missing cgroup is not an error.
func (cg *Cgroup) Remove() error {
	return removeCgroup(cg.Path)
}

// RemoveCgroup removes the cgroup at path as Cgroup.Remove does.
func RemoveCgroup(path string) error { return removeCgroup(path) }

func removeCgroup(path string) error {
	if !isCgroup2(path) {
		return nil
	}
	if !isCgroup2(filepath.Dir(path)) {
		return fmt.Errorf("remove cgroup %s: it is a hierarchy's root, not a cgroup the lab made", path)
	}
	entries, err := os.ReadDir(path)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if e.IsDir() {
			if err := removeCgroup(filepath.Join(path, e.Name())); err != nil {
				return err
			}
		}
	}
	if err := killCgroup(path); err != nil {
		return fmt.Errorf("kill cgroup %s: %w", path, err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := unix.Rmdir(path)
		if err == nil || errors.Is(err, unix.ENOENT) {
			return nil
		}
		if !errors.Is(err, unix.EBUSY) || time.Now().After(deadline) {
			return fmt.Errorf("remove cgroup %s: %w", path, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// killCgroup kills every process in the cgroup itself (its children are
// removed first): with cgroup.kill where the kernel has it (5.14+), else
// one by one from cgroup.procs (5.10 in the matrix), which is as good here,
// where nothing forks into a cgroup being removed.
func killCgroup(path string) error {
	if _, err := os.Stat(filepath.Join(path, "cgroup.kill")); err == nil {
		return os.WriteFile(filepath.Join(path, "cgroup.kill"), []byte("1"), 0)
	}
	pids, err := (&Cgroup{Path: path}).Pids()
	if err != nil {
		return err
	}
	for _, pid := range pids {
		if err := unix.Kill(pid, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
			return err
		}
	}
	return nil
}
