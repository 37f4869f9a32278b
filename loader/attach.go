package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
)

// hook is one of the two places on a device the datapath runs: ingress
// translates service traffic, egress translates replies back.
type hook struct {
	name  string // "ingress", "egress": pin names and filter names
	tcx   ebpf.AttachType
	tcPar uint32 // clsact parent
	// anchor places a new TCX link among the device's other programs.
	anchor  func() link.Anchor
	program func(*Datapath) *ebpf.Program
}

// The ingress program goes first, the egress program last: service DNAT
// runs before a CNI's policy, as kube-proxy's DNAT runs before filtering,
// and replies are translated back after filtering, as netfilter un-DNATs
// at POSTROUTING. The anchor places a link when it is created; a restarted
// agent updates the pinned link's program in place, which keeps the link
// where it is, so programs attached since stay where they were put.
var hooks = []hook{
	{"ingress", ebpf.AttachTCXIngress, netlink.HANDLE_MIN_INGRESS, link.Head, func(d *Datapath) *ebpf.Program { return d.Objs.SluiceIngress }},
	{"egress", ebpf.AttachTCXEgress, netlink.HANDLE_MIN_EGRESS, link.Tail, func(d *Datapath) *ebpf.Program { return d.Objs.SluiceEgress }},
}

// Mode returns the attach mode in force: tcx or tc once a device has been
// attached in auto mode.
func (d *Datapath) Mode() AttachMode { return d.mode }

// Attach attaches the ingress and egress programs to the device, replacing
// the programs a previous agent attached there without a gap in service.
// Egress first: a flow translated at ingress must find its replies
// translated back.
func (d *Datapath) Attach(ifindex int, ifname string) error {
	if err := d.adoptLinkPins(); err != nil {
		return err
	}
	for i := len(hooks) - 1; i >= 0; i-- {
		if err := d.attachHook(hooks[i], ifindex, ifname); err != nil {
			return err
		}
	}
	return nil
}

// Detach removes sluice's programs from the device, TCX links and clsact
// filters alike, and leaves every other program there.
func (d *Datapath) Detach(ifindex int) error {
	var errs []error
	for _, h := range hooks {
		errs = append(errs, d.unpinTCX(h, ifindex), d.detachTC(h, ifindex))
	}
	return errors.Join(errs...)
}

func (d *Datapath) attachHook(h hook, ifindex int, ifname string) error {
	if d.mode == AttachAuto || d.mode == AttachTCX {
		err := d.attachTCX(h, ifindex)
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
	return d.unpinTCX(h, ifindex)
}

// tcxPin names a link pin by the device's index, not its name: a renamed
// device keeps its index, so the restarted agent (or this one, on the
// rename) finds and updates the link instead of attaching a second one.
func (d *Datapath) tcxPin(h hook, ifindex int) string {
	return filepath.Join(d.linkDir(), "tcx_"+h.name+"_if"+strconv.Itoa(ifindex))
}

func (d *Datapath) attachTCX(h hook, ifindex int) error {
	path := d.tcxPin(h, ifindex)
	if l, err := link.LoadPinnedLink(path, nil); err == nil {
		if tcxTarget(l) == (tcxKey{ifindex, h.tcx}) {
			err := l.Update(h.program(d)) // in place: the link keeps its position
			l.Close()
			return err
		}
		// The device of that index is gone and the index was reused.
		_ = l.Unpin()
		l.Close()
	}
	l, err := link.AttachTCX(link.TCXOptions{
		Interface: ifindex,
		Program:   h.program(d),
		Attach:    h.tcx,
		Anchor:    h.anchor(),
	})
	if err != nil {
		return err
	}
	defer l.Close()
	return d.pinLink(l, path)
}

// pinLink pins a new link at path under the link directory, in place of
// what was pinned there.
func (d *Datapath) pinLink(l link.Link, path string) error {
	if err := os.MkdirAll(d.linkDir(), 0o700); err != nil {
		return err
	}
	_ = os.Remove(path)
	return l.Pin(path)
}

func (d *Datapath) unpinTCX(h hook, ifindex int) error {
	l, err := link.LoadPinnedLink(d.tcxPin(h, ifindex), nil)
	if err != nil {
		return nil
	}
	defer l.Close()
	return l.Unpin()
}

// tcxKey is where a TCX link is attached; the zero key is a link whose
// device is gone (or not a TCX link).
type tcxKey struct {
	ifindex int
	attach  ebpf.AttachType
}

func tcxTarget(l link.Link) tcxKey {
	info, err := l.Info()
	if err != nil || info.TCX() == nil || info.TCX().Ifindex == 0 {
		return tcxKey{}
	}
	return tcxKey{int(info.TCX().Ifindex), ebpf.AttachType(info.TCX().AttachType)}
}

// adoptLinkPins renames the link pins of agents that named them by device
// (tcx_ingress_eth0) to the names by index, and removes pins of links
// whose device is gone, once per agent, before the first attach.
func (d *Datapath) adoptLinkPins() error {
	if d.pinsAdopted {
		return nil
	}
	files, _ := filepath.Glob(filepath.Join(d.linkDir(), "tcx_*"))
	for _, f := range files {
		l, err := link.LoadPinnedLink(f, nil)
		if err != nil {
			continue
		}
		key := tcxTarget(l)
		want := ""
		for _, h := range hooks {
			if key.attach == h.tcx && key.ifindex != 0 {
				want = d.tcxPin(h, key.ifindex)
			}
		}
		switch {
		case want == f:
		case want == "":
			d.log.Info("removing the pin of a link whose device is gone", "pin", filepath.Base(f))
			err = l.Unpin()
		default:
			if _, serr := os.Stat(want); serr == nil {
				// Two links on one hook: this one runs the program twice.
				d.log.Warn("removing a second sluice link on one device hook", "pin", filepath.Base(f))
				err = l.Unpin()
			} else {
				err = os.Rename(f, want)
			}
		}
		l.Close()
		if err != nil {
			return fmt.Errorf("adopt link pin %s: %w", f, err)
		}
	}
	d.pinsAdopted = true
	return nil
}
