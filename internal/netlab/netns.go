// Package netlab builds small networks of namespaces and veths entirely
// through netlink, so the lab and the end-to-end tests need no ip(8) and
// the same code runs in a minimal VM.
package netlab

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// NS is a named network namespace (bind-mounted under /run/netns, so
// `ip netns exec NAME` works on it too).
type NS struct {
	Name   string
	handle netns.NsHandle
	nl     *netlink.Handle
}

// NewNS creates the namespace name, replacing a stale one of that name.
func NewNS(name string) (*NS, error) {
	_ = netns.DeleteNamed(name)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return nil, err
	}
	defer orig.Close()
	h, err := netns.NewNamed(name) // also switches this thread into it
	if serr := netns.Set(orig); serr != nil {
		// This thread is stuck in the wrong namespace: never reuse it.
		panic(fmt.Sprintf("restore network namespace: %v", serr))
	}
	if err != nil {
		return nil, fmt.Errorf("create netns %s: %w", name, err)
	}
	return open(name, h)
}

// OpenNS opens an existing named namespace.
func OpenNS(name string) (*NS, error) {
	h, err := netns.GetFromName(name)
	if err != nil {
		return nil, fmt.Errorf("open netns %s: %w", name, err)
	}
	return open(name, h)
}

func open(name string, h netns.NsHandle) (*NS, error) {
	nl, err := netlink.NewHandleAt(h, unix.NETLINK_ROUTE) // route only: xfrm and netfilter may be absent modules
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("netlink in %s: %w", name, err)
	}
	return &NS{Name: name, handle: h, nl: nl}, nil
}

// Exists reports whether a namespace of that name is mounted.
func Exists(name string) bool {
	_, err := os.Stat(filepath.Join("/run/netns", name))
	return err == nil
}

// Netlink returns a netlink handle bound to the namespace.
func (n *NS) Netlink() *netlink.Handle { return n.nl }

// Close releases the handles; the namespace stays while it is mounted.
func (n *NS) Close() {
	n.nl.Close()
	n.handle.Close()
}

// Delete closes and unmounts the namespace. Its devices go with it once no
// process is left inside.
func (n *NS) Delete() error {
	n.Close()
	return netns.DeleteNamed(n.Name)
}

// DeleteNS unmounts a namespace by name; a missing one is not an error.
func DeleteNS(name string) error {
	if err := netns.DeleteNamed(name); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// Do runs fn on an OS thread switched into the namespace. Sockets fn
// creates stay in the namespace and may be used from any goroutine.
func (n *NS) Do(fn func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return err
	}
	defer orig.Close()
	if err := netns.Set(n.handle); err != nil {
		return fmt.Errorf("enter netns %s: %w", n.Name, err)
	}
	ferr := fn()
	if err := netns.Set(orig); err != nil {
		panic(fmt.Sprintf("restore network namespace: %v", err))
	}
	return ferr
}

// Start starts cmd inside the namespace. The child is forked from a thread
// switched into the namespace, so only its network namespace differs from
// ours: it shares our mounts, /sys/fs/bpf included, as a hostNetwork pod
// shares the node's.
func (n *NS) Start(cmd *exec.Cmd) error {
	return n.Do(cmd.Start)
}

// Sysctl writes a /proc/sys/net value inside the namespace, e.g.
// Sysctl("ipv4/ip_forward", "1").
func (n *NS) Sysctl(key, value string) error {
	return n.Do(func() error {
		return os.WriteFile(filepath.Join("/proc/sys/net", key), []byte(value), 0o644)
	})
}
