package loader

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// DeviceMatcher says which devices the datapath serves: names or globs
// ("eth0", "veth*"); none means every device but loopback.
type DeviceMatcher []string

// Match reports whether a device of that name is served.
func (m DeviceMatcher) Match(name string, flags uint32) bool {
	if len(m) == 0 {
		return flags&unix.IFF_LOOPBACK == 0
	}
	for _, p := range m {
		if ok, _ := filepath.Match(p, name); ok {
			return true
		}
	}
	return false
}

// ServeDevices attaches to every matching device that exists and, until
// ctx ends, to every matching device that appears later (a new pod's veth).
// ready is called once the existing devices are attached. Per-device
// failures go to onError and do not stop the others.
func (d *Datapath) ServeDevices(ctx context.Context, m DeviceMatcher, ready func([]string), onError func(error)) error {
	updates := make(chan netlink.LinkUpdate, 64)
	done := make(chan struct{})
	defer close(done)
	// Subscribe before listing, so a device created in between is seen.
	if err := netlink.LinkSubscribeWithOptions(updates, done, netlink.LinkSubscribeOptions{
		ErrorCallback: func(err error) { onError(fmt.Errorf("link updates: %w", err)) },
	}); err != nil {
		return fmt.Errorf("subscribe to link updates: %w", err)
	}
	links, err := netlink.LinkList()
	if err != nil {
		return fmt.Errorf("list links: %w", err)
	}
	attached := map[int]string{}
	attach := func(l netlink.Link) {
		a := l.Attrs()
		if name, ok := attached[a.Index]; ok && name == a.Name {
			return
		}
		if !m.Match(a.Name, uint32(a.RawFlags)) {
			return
		}
		if err := d.Attach(a.Index, a.Name); err != nil {
			onError(err)
			return
		}
		attached[a.Index] = a.Name
		d.log.Info("attached", "device", a.Name, "ifindex", a.Index, "mode", d.mode)
	}
	var names []string
	for _, l := range links {
		attach(l)
		if n, ok := attached[l.Attrs().Index]; ok {
			names = append(names, n)
		}
	}
	ready(names)
	for {
		select {
		case <-ctx.Done():
			return nil
		case u, ok := <-updates:
			if !ok {
				return fmt.Errorf("link updates closed")
			}
			switch u.Header.Type {
			case unix.RTM_NEWLINK:
				attach(u.Link)
			case unix.RTM_DELLINK:
				if name, ok := attached[u.Attrs().Index]; ok {
					delete(attached, u.Attrs().Index)
					for _, h := range hooks {
						_ = d.unpinTCX(h, name) // the kernel detached it with the device
					}
					d.log.Info("device gone", "device", name)
				}
			}
		}
	}
}
