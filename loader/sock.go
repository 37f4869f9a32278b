package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/sluice-lb/sluice/bpf"
)

// Socket-level load balancing (bpf/sock.c): the node's own processes
// reach frontends through cgroup socket programs, since no tc hook sees
// their connects. The programs share every map with the tc programs, and
// their links are pinned beside the tc links, so a restarted agent
// updates them in place and Uninstall detaches them.

// sockHook is one socket call the programs run at.
type sockHook struct {
	name    string // pin name: links/cgroup_<name>
	attach  ebpf.AttachType
	program func(*bpf.SluiceSockPrograms) *ebpf.Program
}

// The reverse hooks come first: a socket translated at connect must find
// its replies and its peer shown as the frontend, as egress is attached
// before ingress on a device.
var sockHooks = []sockHook{
	{"recvmsg4", ebpf.AttachCGroupUDP4Recvmsg, func(p *bpf.SluiceSockPrograms) *ebpf.Program { return p.SluiceSockRecvmsg4 }},
	{"getpeername4", ebpf.AttachCgroupInet4GetPeername, func(p *bpf.SluiceSockPrograms) *ebpf.Program { return p.SluiceSockGetpeername4 }},
	{"connect4", ebpf.AttachCGroupInet4Connect, func(p *bpf.SluiceSockPrograms) *ebpf.Program { return p.SluiceSockConnect4 }},
	{"sendmsg4", ebpf.AttachCGroupUDP4Sendmsg, func(p *bpf.SluiceSockPrograms) *ebpf.Program { return p.SluiceSockSendmsg4 }},
}

// ErrNotCgroup2 is a cgroup root that is not a cgroup v2 mount (or a
// directory in one).
var ErrNotCgroup2 = errors.New("not a cgroup v2 directory")

// IsCgroup2 reports whether path is a directory of a cgroup v2 hierarchy.
func IsCgroup2(path string) bool {
	var st unix.Statfs_t
	return unix.Statfs(path, &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC
}

// DefaultCgroupRoot is the root of the unified hierarchy: /sys/fs/cgroup on
// a pure cgroup v2 host, /sys/fs/cgroup/unified on a hybrid one; "" when
// neither is a cgroup v2 mount.
func DefaultCgroupRoot() string {
	for _, p := range []string{"/sys/fs/cgroup", "/sys/fs/cgroup/unified"} {
		if IsCgroup2(p) {
			return p
		}
	}
	return ""
}

// SocketLB reports whether the socket programs are attached (to which
// cgroup), and why not when they are not.
func (d *Datapath) SocketLB() (cgroup string, err error) { return d.sockRoot, d.sockErr }

func (d *Datapath) sockPin(h sockHook) string {
	return filepath.Join(d.linkDir(), "cgroup_"+h.name)
}

// serveSockets loads the socket programs against the loaded maps, pins
// them, and attaches them to root, taking over the links a previous agent
// pinned. On failure nothing of them stays attached to root.
func (d *Datapath) serveSockets(root string, so SockOptions) error {
	if !IsCgroup2(root) {
		return fmt.Errorf("cgroup root %s: %w", root, ErrNotCgroup2)
	}
	cgid, err := cgroupID(root)
	if err != nil {
		return err
	}
	objs, err := LoadSock(&d.Objs.SluiceMaps, so)
	if err != nil {
		return err
	}
	d.sock = objs
	for _, h := range sockHooks {
		// As the tc programs are: for bpftool, and the record of
		// what this agent runs.
		pin := filepath.Join(d.pinDir, "sluice_sock_"+h.name)
		_ = os.Remove(pin)
		if err := h.program(&objs.SluiceSockPrograms).Pin(pin); err != nil {
			return fmt.Errorf("pin program %s: %w", h.name, err)
		}
	}
	for _, h := range sockHooks {
		if err := d.attachSock(h, root, cgid); err != nil {
			d.detachSockets()
			return fmt.Errorf("attach %s to cgroup %s: %w", h.name, root, err)
		}
	}
	return nil
}

// attachSock updates the pinned link of the hook in place when it is on
// this cgroup (no call goes untranslated meanwhile), else attaches anew.
func (d *Datapath) attachSock(h sockHook, root string, cgid uint64) error {
	prog := h.program(&d.sock.SluiceSockPrograms)
	path := d.sockPin(h)
	if l, err := link.LoadPinnedLink(path, nil); err == nil {
		if cgroupTarget(l) == (cgroupKey{cgid, h.attach}) {
			err := l.Update(prog)
			l.Close()
			return err
		}
		// Another cgroup (the root was changed) or another hook: the
		// old link goes, or the programs would run there too.
		_ = dropLink(l)
		l.Close()
	}
	l, err := link.AttachCgroup(link.CgroupOptions{Path: root, Attach: h.attach, Program: prog})
	if err != nil {
		return err
	}
	defer l.Close()
	// A kernel without cgroup bpf_link (before 5.7) makes an
	// attachment that cannot be pinned; closing it detaches it.
	return d.pinLink(l, path)
}

// detachSockets removes the pinned socket links, which detaches them.
func (d *Datapath) detachSockets() {
	for _, h := range sockHooks {
		l, err := link.LoadPinnedLink(d.sockPin(h), nil)
		if err != nil {
			continue
		}
		if err := dropLink(l); err == nil {
			d.log.Info("detached socket program", "hook", h.name)
		}
		l.Close()
	}
}

// dropLink detaches a pinned link at once and removes its pin. Unpinning
// alone detaches too, once the last reference goes, but some kernels (5.10
// in the matrix) drop the pin's reference only after an RCU grace period,
// when bpffs frees the inode: for a moment the program would still run.
func dropLink(l link.Link) error {
	err := l.Detach()
	if errors.Is(err, ebpf.ErrNotSupported) {
		err = nil // before 5.9: the unpin's release does it
	}
	return errors.Join(err, l.Unpin())
}

type cgroupKey struct {
	id     uint64
	attach ebpf.AttachType
}

func cgroupTarget(l link.Link) cgroupKey {
	info, err := l.Info()
	if err != nil || info.Cgroup() == nil {
		return cgroupKey{}
	}
	return cgroupKey{info.Cgroup().CgroupId, ebpf.AttachType(info.Cgroup().AttachType)}
}

// cgroupID is the id the kernel reports a cgroup link's target by: the
// inode number of the cgroup's directory.
func cgroupID(path string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, fmt.Errorf("cgroup %s: %w", path, err)
	}
	return st.Ino, nil
}

// SockOptions are what the socket programs translate besides the node's
// own sockets: by default also the TCP connects of the cgroup subtree's
// other network namespaces, its Pods' (lib/sock4.h's sock_pods).
type SockOptions struct {
	// HostOnly leaves every Pod socket to tc, as their UDP always is
	// (--socket-lb-host-only: for service meshes whose sidecars steer a
	// Pod's connections by the Service address).
	HostOnly bool
}

// LoadSock loads bpf/sock.c with the tc collection's maps in place of its
// own: one set of maps, pinned once, which both read and write.
func LoadSock(maps *bpf.SluiceMaps, so SockOptions) (*bpf.SluiceSockObjects, error) {
	spec, err := bpf.LoadSluiceSock()
	if err != nil {
		return nil, err
	}
	if _, err := bpf.UseCoarseClock(spec); err != nil {
		return nil, err
	}
	if err := configureSock(spec, so); err != nil {
		return nil, err
	}
	byName := mapsByName(maps)
	repl := map[string]*ebpf.Map{}
	for name, ms := range spec.Maps {
		if ms.Pinning != ebpf.PinByName {
			continue // .rodata: this collection's own
		}
		m, ok := byName[name]
		if !ok {
			return nil, fmt.Errorf("socket programs use map %s, which the datapath does not have", name)
		}
		// Sized as the agent sized (or adopted) it.
		ms.MaxEntries = m.MaxEntries()
		ms.Pinning = ebpf.PinNone
		repl[name] = m
	}
	var objs bpf.SluiceSockObjects
	err = spec.LoadAndAssign(&objs, &ebpf.CollectionOptions{MapReplacements: repl})
	var ve *ebpf.VerifierError
	if errors.As(err, &ve) {
		return nil, fmt.Errorf("load socket programs: verifier: %+v", ve)
	}
	if err != nil {
		return nil, fmt.Errorf("load socket programs: %w", err)
	}
	return &objs, nil
}

// configureSock sets what the socket programs learn from the kernel and
// from the namespace they are loaded in (lib/sock4.h).
func configureSock(spec *ebpf.CollectionSpec, so SockOptions) error {
	if !so.HostOnly {
		if err := spec.Variables["sock_pods"].Set(uint8(1)); err != nil {
			return fmt.Errorf("set sock_pods: %w", err)
		}
	}
	err := features.HaveProgramHelper(ebpf.CGroupSockAddr, asm.FnSetRetval)
	switch {
	case err == nil:
		if err := spec.Variables["sock_set_retval"].Set(uint8(1)); err != nil {
			return fmt.Errorf("set sock_set_retval: %w", err)
		}
	case !errors.Is(err, ebpf.ErrNotSupported):
		return fmt.Errorf("probe bpf_set_retval: %w", err)
	}
	cookie, err := NetnsCookie()
	if err != nil {
		return nil // before 5.14: every namespace's sockets are translated
	}
	if err := spec.Variables["sock_host_netns"].Set(cookie); err != nil {
		return fmt.Errorf("set sock_host_netns: %w", err)
	}
	return nil
}

// NetnsCookie is the cookie of the calling thread's network namespace, as
// bpf_get_netns_cookie returns it (SO_NETNS_COOKIE, 5.14+).
func NetnsCookie() (uint64, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	return unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
}
