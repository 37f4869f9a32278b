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
// clsact hook, so a restarted agent replaces its own filter in one atomic
// step instead of adding a second one.
const (
	tcFilterPriority = 1
	tcFilterHandle   = 1
)

// hook is one of the two places on a device the datapath runs: ingress
// translates service traffic, egress translates replies back.
type hook struct {
	name    string // "ingress", "egress": pin names and filter names
	tcx     ebpf.AttachType
	tcPar   uint32 // clsact parent
	program func(*Datapath) *ebpf.Program
}

var hooks = []hook{
	{"ingress", ebpf.AttachTCXIngress, netlink.HANDLE_MIN_INGRESS, func(d *Datapath) *ebpf.Program { return d.Objs.SluiceIngress }},
	{"egress", ebpf.AttachTCXEgress, netlink.HANDLE_MIN_EGRESS, func(d *Datapath) *ebpf.Program { return d.Objs.SluiceEgress }},
}

// Mode returns the attach mode in force: tcx or tc once a device has been
// attached in auto mode.
func (d *Datapath) Mode() AttachMode { return d.mode }

// Attach attaches the ingress and egress programs to the device, replacing
// the programs a previous agent attached there without a gap in service.
// Egress first: a flow translated at ingress must find its replies
// translated back.
func (d *Datapath) Attach(ifindex int, ifname string) error {
	for i := len(hooks) - 1; i >= 0; i-- {
		if err := d.attachHook(hooks[i], ifindex, ifname); err != nil {
			return err
		}
	}
	return nil
}

func (d *Datapath) attachHook(h hook, ifindex int, ifname string) error {
	if d.mode == AttachAuto || d.mode == AttachTCX {
		err := d.attachTCX(h, ifindex, ifname)
		if err == nil {
			d.mode = AttachTCX
			// A filter left by an agent that ran in tc mode would run
			// the program a second time after TCX.
			return d.detachTC(h, ifindex)
		}
		if d.mode == AttachTCX || !errors.Is(err, ebpf.ErrNotSupported) {
			return fmt.Errorf("attach tcx to %s: %w", ifname, err)
		}
		d.log.Info("kernel has no TCX: attaching through clsact qdiscs", "device", ifname)
		d.mode = AttachTC
	}
	if err := d.attachTC(h, ifindex); err != nil {
		return fmt.Errorf("attach tc %s filter to %s: %w", h.name, ifname, err)
	}
	return d.unpinTCX(h, ifname)
}

func (d *Datapath) tcxPin(h hook, ifname string) string {
	return filepath.Join(d.linkDir(), "tcx_"+h.name+"_"+ifname)
}

func (d *Datapath) attachTCX(h hook, ifindex int, ifname string) error {
	path := d.tcxPin(h, ifname)
	if l, err := link.LoadPinnedLink(path, nil); err == nil {
		info, ierr := l.Info()
		if ierr == nil && info.TCX() != nil && int(info.TCX().Ifindex) == ifindex {
			err := l.Update(h.program(d))
			l.Close()
			return err
		}
		// The name now belongs to another device, or the old one is gone.
		_ = l.Unpin()
		l.Close()
	}
	l, err := link.AttachTCX(link.TCXOptions{
		Interface: ifindex,
		Program:   h.program(d),
		Attach:    h.tcx,
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

func (d *Datapath) unpinTCX(h hook, ifname string) error {
	l, err := link.LoadPinnedLink(d.tcxPin(h, ifname), nil)
	if err != nil {
		return nil
	}
	defer l.Close()
	return l.Unpin()
}

func (d *Datapath) attachTC(h hook, ifindex int) error {
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
	return netlink.FilterReplace(tcFilter(h, ifindex, h.program(d).FD()))
}

func tcFilter(h hook, ifindex, fd int) *netlink.BpfFilter {
	return &netlink.BpfFilter{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: ifindex,
			Parent:    h.tcPar,
			Handle:    netlink.MakeHandle(0, tcFilterHandle),
			Protocol:  unix.ETH_P_ALL,
			Priority:  tcFilterPriority,
		},
		Fd:           fd,
		Name:         "sluice_" + h.name,
		DirectAction: true,
	}
}

// detachTC removes sluice's filter from one hook of the device, if any.
func (d *Datapath) detachTC(h hook, ifindex int) error {
	filters, err := netlink.FilterList(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Index: ifindex}}, h.tcPar)
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
