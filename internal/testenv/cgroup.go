package testenv

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// CgroupMountEnv names the directory the tests mount their own view of
// the cgroup v2 hierarchy on (default DefaultCgroupMount). Tests attach
// programs only to cgroups they create under it, never to the mount's
// root, which is the machine's root cgroup.
const CgroupMountEnv = "SLUICE_TEST_CGROUP2"

// DefaultCgroupMount is where the tests mount cgroup2 unless told otherwise.
const DefaultCgroupMount = "/run/sluice-test/cgroup2"

// Cgroup creates a new, empty cgroup for t under the tests' cgroup2 mount
// (mounted on first use) and returns its path. It is removed at cleanup,
// once the processes the test put in it have exited.
func Cgroup(t testing.TB) string {
	t.Helper()
	Privileged(t)
	mnt := os.Getenv(CgroupMountEnv)
	if mnt == "" {
		mnt = DefaultCgroupMount
	}
	if !isCgroup2(mnt) {
		if err := os.MkdirAll(mnt, 0o755); err != nil {
			Unavailable(t, "cgroup2 mount point %s: %v", mnt, err)
			return ""
		}
		if err := unix.Mount("none", mnt, "cgroup2", 0, ""); err != nil && !errors.Is(err, unix.EBUSY) {
			Unavailable(t, "mount cgroup2 on %s: %v", mnt, err)
			return ""
		}
		if !isCgroup2(mnt) {
			Unavailable(t, "%s is not a cgroup2 mount", mnt)
			return ""
		}
	}
	name := fmt.Sprintf("sluice-test-%d-%s", os.Getpid(), strings.NewReplacer("/", "_", " ", "_").Replace(t.Name()))
	dir := filepath.Join(mnt, name)
	_ = unix.Rmdir(dir) // a stale one of a crashed run
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatalf("create cgroup: %v", err)
	}
	t.Cleanup(func() {
		// A child that has exited may leave the cgroup a moment later.
		deadline := time.Now().Add(Scaled(5 * time.Second))
		for {
			err := unix.Rmdir(dir)
			if err == nil || errors.Is(err, unix.ENOENT) {
				return
			}
			if !errors.Is(err, unix.EBUSY) || time.Now().After(deadline) {
				t.Errorf("remove cgroup %s: %v", dir, err)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
	return dir
}

func isCgroup2(path string) bool {
	var st unix.Statfs_t
	return unix.Statfs(path, &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC
}
