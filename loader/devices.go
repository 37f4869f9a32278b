package loader

import (
	"context"
	"fmt"
	"path/filepath"
	"sync/atomic"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// DeviceMatcher says which devices the datapath serves: names or globs
// ("eth0", "veth*").
//
// Whatever the list, a device without an Ethernet header (hardware type
// other than ether or loopback: a tun device, wireguard, ipip, gre, sit)
// is refused with a log line: the datapath parses Ethernet frames only.
//
// With no list, every other device is served except those where the
// datapath would run a second time on packets it already saw:
//   - loopback;
//   - ports of a bond or team: the bond is served. A port's frames reach the
//     bond's hooks too, and ports come and go with failover while the bond
//     stays;
//   - a bridge: its ports are served. Routed traffic from a port was
//     translated at the port's ingress, and replies between ports are
//     bridged and leave only through the ports' egress;
//   - a VLAN device whose parent is in the same namespace: the parent is
//     served. The kernel hands the parent's tc hooks every VLAN's frames
//     untagged (the tag is in the packet's metadata: stripped before tc at
//     ingress, inserted after tc at egress), so the parent sees all of it,
//     its own untagged traffic included. A VLAN device whose parent is in
//     another namespace is served: nothing here sees its frames;
//   - a macvlan, macvtap, ipvlan or ipvtap device whose parent is in the
//     same namespace, for the same reason: the parent's tc ingress runs
//     before the driver takes the frame, and the device transmits through
//     the parent. Served as well, it would see at its own ingress packets
//     the parent's had already translated, and a translated packet is the
//     very tuple that, arriving untranslated, ends a flow on it (a SYN or
//     a datagram straight to a backend, lib/lb4.h).
//
// A list replaces these rules: exactly the devices it names are served
// (still only Ethernet ones), a bridge or a bond port too.
type DeviceMatcher []string

// deviceChoice is whether a device is served and, if not, why.
type deviceChoice struct {
	serve   bool
	refused bool // no Ethernet header: refused whatever the list says
	reason  string
}

// choose decides for link l; master looks up another device of the
// namespace by index (nil if there is none).
func (m DeviceMatcher) choose(l netlink.Link, master func(int) netlink.Link) deviceChoice {
	a := l.Attrs()
	if a.EncapType != "ether" && a.EncapType != "loopback" {
		return deviceChoice{refused: true, reason: fmt.Sprintf(
			"no Ethernet header (link type %s): the datapath parses Ethernet frames only", a.EncapType)}
	}
	if len(m) > 0 {
		for _, p := range m {
			if ok, _ := filepath.Match(p, a.Name); ok {
				return deviceChoice{serve: true}
			}
		}
		return deviceChoice{reason: "not in the device list"}
	}
	if a.RawFlags&unix.IFF_LOOPBACK != 0 {
		return deviceChoice{reason: "loopback"}
	}
	if l.Type() == "bridge" {
		return deviceChoice{reason: "bridge: its ports are served"}
	}
	if a.MasterIndex != 0 {
		if up := master(a.MasterIndex); up != nil && (up.Type() == "bond" || up.Type() == "team") {
			return deviceChoice{reason: fmt.Sprintf("port of %s %s: served there", up.Type(), up.Attrs().Name)}
		}
	}
	if a.ParentIndex != 0 && a.NetNsID < 0 {
		if parent := master(a.ParentIndex); parent != nil {
			p := parent.Attrs().Name
			switch l.Type() {
			case "vlan":
				return deviceChoice{reason: fmt.Sprintf("VLAN on %s: its frames pass %s's hooks untagged", p, p)}
			case "macvlan", "macvtap", "ipvlan", "ipvtap":
				return deviceChoice{reason: fmt.Sprintf("%s on %s: its frames pass %s's hooks", l.Type(), p, p)}
			}
		}
	}
	return deviceChoice{serve: true}
}

// deviceState is what ServeDevices last did with a device.
type deviceState struct {
	name   string
	choice deviceChoice
	link   netlink.Link
}

// ServeDevices attaches to every chosen device that exists and, until ctx
// ends, to every one that appears later (a new pod's veth). A device that
// stops being chosen (enslaved to a bond, renamed out of the list) is
// detached; a renamed device keeps its one attachment. ready is called
// once the existing devices are attached. Per-device failures go to
// onError and do not stop the others.
func (d *Datapath) ServeDevices(ctx context.Context, m DeviceMatcher, ready func([]string), onError func(error)) error {
	updates := make(chan netlink.LinkUpdate, 64)
	done := make(chan struct{})
	// Closing the subscription fails its pending receive: not an error.
	var stopping atomic.Bool
	defer func() {
		stopping.Store(true)
		close(done)
	}()
	// Subscribe before listing, so a device created in between is seen.
	if err := netlink.LinkSubscribeWithOptions(updates, done, netlink.LinkSubscribeOptions{
		ErrorCallback: func(err error) {
			if !stopping.Load() {
				onError(fmt.Errorf("link updates: %w", err))
			}
		},
	}); err != nil {
		return fmt.Errorf("subscribe to link updates: %w", err)
	}
	links, err := netlink.LinkList()
	if err != nil {
		return fmt.Errorf("list links: %w", err)
	}
	devs := map[int]*deviceState{}
	lookup := func(index int) netlink.Link {
		if s, ok := devs[index]; ok {
			return s.link
		}
		l, _ := netlink.LinkByIndex(index)
		return l
	}
	for _, l := range links {
		devs[l.Attrs().Index] = &deviceState{link: l}
	}
	var names []string
	for _, l := range links {
		if d.serveDevice(devs, l, m.choose(l, lookup), onError) {
			names = append(names, l.Attrs().Name)
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
			a := u.Attrs()
			switch u.Header.Type {
			case unix.RTM_NEWLINK:
				if _, ok := devs[a.Index]; !ok {
					devs[a.Index] = &deviceState{}
				}
				devs[a.Index].link = u.Link
				d.serveDevice(devs, u.Link, m.choose(u.Link, lookup), onError)
			case unix.RTM_DELLINK:
				if s, ok := devs[a.Index]; ok && s.choice.serve {
					for _, h := range hooks {
						_ = d.unpinTCX(h, a.Index) // the kernel detached it with the device
					}
					d.log.Info("device gone", "device", s.name)
				}
				delete(devs, a.Index)
			}
		}
	}
}

// serveDevice acts on a device's choice when it differs from the last one,
// and says whether the device is served. Each decision is logged once per
// device, not on every link update.
func (d *Datapath) serveDevice(devs map[int]*deviceState, l netlink.Link, c deviceChoice, onError func(error)) bool {
	a := l.Attrs()
	s := devs[a.Index]
	prev, prevName := s.choice, s.name
	s.name = a.Name
	switch {
	case c.serve && prev.serve:
		if prevName != a.Name {
			// Pins and filters follow the index: nothing to redo.
			d.log.Info("device renamed: still attached", "device", a.Name, "was", prevName)
		}
	case c.serve:
		if err := d.Attach(a.Index, a.Name); err != nil {
			onError(err)
			s.choice = deviceChoice{reason: "attach failed"} // retried on the next update
			return false
		}
		d.log.Info("attached", "device", a.Name, "ifindex", a.Index, "mode", d.mode)
	case prev.serve:
		if err := d.Detach(a.Index); err != nil {
			onError(fmt.Errorf("detach %s: %w", a.Name, err))
		}
		d.log.Info("detached", "device", a.Name, "reason", c.reason)
	case c.reason != prev.reason || prevName != a.Name:
		switch {
		case c.refused:
			d.log.Warn("device refused", "device", a.Name, "reason", c.reason)
		case c.reason == "not in the device list" || c.reason == "loopback":
			d.log.Debug("device not served", "device", a.Name, "reason", c.reason)
		default:
			d.log.Info("device not served", "device", a.Name, "reason", c.reason)
		}
	}
	s.choice = c
	return c.serve
}
