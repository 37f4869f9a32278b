package loader

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// DefaultBPFFS is where the kernel's bpf filesystem is conventionally mounted.
const DefaultBPFFS = "/sys/fs/bpf"

// ensureBPFFS makes sure dir can hold pins: it must be on a bpf filesystem.
// When dir is under /sys/fs/bpf and nothing is mounted there (a fresh host,
// or a mount namespace without it), bpffs is mounted.
func ensureBPFFS(dir string) error {
	probe := dir
	for {
		var st unix.Statfs_t
		if err := unix.Statfs(probe, &st); err == nil {
			if st.Type == unix.BPF_FS_MAGIC {
				return os.MkdirAll(dir, 0o700)
			}
			break
		}
		parent := filepath.Dir(probe)
		if parent == probe {
			break
		}
		probe = parent
	}
	if dir != DefaultBPFFS && !strings.HasPrefix(dir, DefaultBPFFS+"/") {
		return fmt.Errorf("pin dir %s is not on a bpf filesystem", dir)
	}
	if err := os.MkdirAll(DefaultBPFFS, 0o755); err != nil {
		return err
	}
	if err := unix.Mount("bpf", DefaultBPFFS, "bpf", 0, "mode=0700"); err != nil {
		return fmt.Errorf("mount bpffs at %s: %w", DefaultBPFFS, err)
	}
	return os.MkdirAll(dir, 0o700)
}
