package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// tcFilterPriority and tcFilterHandle identify sluice's cls_bpf filter on a
// clsact ingress hook, so a restarted agent replaces its own filter in one
// atomic step instead of adding a second one.
const (
	tcFilterPriority = 1
	tcFilterHandle   = 1
	tcFilterName     = "sluice_ingress"
)

// Mode returns the attach mode in force: tcx or tc once a device has been
// attached in auto mode.
func (d *Datapath) Mode() AttachMode { return d.mode }

// Attach attaches the ingress program to the device, replacing the program
// a previous agent attached there without a gap in service.
func (d *Datapath) Attach(ifindex int, ifname string) error {
	if d.mode == AttachAuto || d.mode == AttachTCX {
		err := d.attachTCX(ifindex, ifname)
		if err == nil {
			d.mode = AttachTCX
			// A filter left by an agent that ran in tc mode would run
			// the program a second time after TCX.
			return d.detachTC(ifindex)
		}
		if d.mode == AttachTCX || !errors.Is(err, ebpf.ErrNotSupported) {
			return fmt.Errorf("attach tcx to %s: %w", ifname, err)
		}
		d.log.Info("kernel has no TCX: attaching through clsact qdiscs", "device", ifname)
		d.mode = AttachTC
	}
	if err := d.attachTC(ifindex); err != nil {
		return fmt.Errorf("attach tc filter to %s: %w", ifname, err)
	}
	return d.unpinTCX(ifname)
}

func (d *Datapath) tcxPin(ifname string) string {
	return filepath.Join(d.linkDir(), "tcx_ingress_"+ifname)
}

func (d *Datapath) attachTCX(ifindex int, ifname string) error {
	path := d.tcxPin(ifname)
	if l, err := link.LoadPinnedLink(path, nil); err == nil {
		info, ierr := l.Info()
		if ierr == nil && info.TCX() != nil && int(info.TCX().Ifindex) == ifindex {
			err := l.Update(d.Objs.SluiceIngress)
			l.Close()
			return err
		}
		// The name now belongs to another device, or the old one is gone.
		_ = l.Unpin()
		l.Close()
	}
	l, err := link.AttachTCX(link.TCXOptions{
		Interface: ifindex,
		Program:   d.Objs.SluiceIngress,
		Attach:    ebpf.AttachTCXIngress,
	})
	if err != nil {
		return err
	}
	defer l.Close()
	if err := os.MkdirAll(d.linkDir(), 0o700); err != nil {
		return err
	}
	_ = os.Remove(path)
	return l.Pin(path)
}

func (d *Datapath) unpinTCX(ifname string) error {
	l, err := link.LoadPinnedLink(d.tcxPin(ifname), nil)
	if err != nil {
		return nil
	}
	defer l.Close()
	return l.Unpin()
}

func (d *Datapath) attachTC(ifindex int) error {
	qdisc := &netlink.GenericQdisc{
		QdiscAttrs: netlink.QdiscAttrs{
			LinkIndex: ifindex,
			Handle:    netlink.MakeHandle(0xffff, 0),
			Parent:    netlink.HANDLE_CLSACT,
		},
		QdiscType: "clsact",
	}
	if err := netlink.QdiscAdd(qdisc); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("add clsact qdisc: %w", err)
	}
	return netlink.FilterReplace(tcFilter(ifindex, d.Objs.SluiceIngress.FD()))
}

func tcFilter(ifindex, fd int) *netlink.BpfFilter {
	return &netlink.BpfFilter{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: ifindex,
			Parent:    netlink.HANDLE_MIN_INGRESS,
			Handle:    netlink.MakeHandle(0, tcFilterHandle),
			Protocol:  unix.ETH_P_ALL,
			Priority:  tcFilterPriority,
		},
		Fd:           fd,
		Name:         tcFilterName,
		DirectAction: true,
	}
}

// detachTC removes sluice's filter from the device's ingress hook, if any.
func (d *Datapath) detachTC(ifindex int) error {
	filters, err := netlink.FilterList(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Index: ifindex}}, netlink.HANDLE_MIN_INGRESS)
	if err != nil {
		return nil // no clsact qdisc
	}
	for _, f := range filters {
		bf, ok := f.(*netlink.BpfFilter)
		if ok && bf.Priority == tcFilterPriority && bf.Handle == netlink.MakeHandle(0, tcFilterHandle) {
			if err := netlink.FilterDel(bf); err != nil {
				return fmt.Errorf("remove tc filter: %w", err)
			}
		}
	}
	return nil
}
