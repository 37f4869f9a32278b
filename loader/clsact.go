package loader

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Default clsact filter priorities and handle. On a clsact hook filters run
// in ascending priority; a filter returning TC_ACT_UNSPEC, as sluice does
// for packets it passes, hands the packet to the next one.
//
//   - Ingress at priority 2: before the filters of other tools, so service
//     traffic is translated before a CNI's policy sees it, as kube-proxy's
//     DNAT runs before filtering. Not 1: Cilium installs its filters at
//     priority 1, handle 1; filters sharing a priority share one classifier
//     instance, and `tc filter del ... pref 1` or another agent's replace
//     at prio 1 handle 1 would take sluice's filter with it.
//   - Egress at priority 65000: after the filters of other tools (tc hands
//     out automatic priorities from 49152 downwards), so replies are
//     translated back after filtering, as netfilter un-DNATs at POSTROUTING.
//   - Handle 0x511ce ("sluice"): a handle of its own, recognisable in
//     `tc filter show`; the program, not the handle, says whose a filter is.
const (
	DefaultTCIngressPriority uint16 = 2
	DefaultTCEgressPriority  uint16 = 65000
	DefaultTCHandle          uint32 = 0x511ce
)

// TCFilters are the priorities and handle of sluice's clsact filters.
type TCFilters struct {
	IngressPriority, EgressPriority uint16
	Handle                          uint32
}

func (f TCFilters) withDefaults() TCFilters {
	if f.IngressPriority == 0 {
		f.IngressPriority = DefaultTCIngressPriority
	}
	if f.EgressPriority == 0 {
		f.EgressPriority = DefaultTCEgressPriority
	}
	if f.Handle == 0 {
		f.Handle = DefaultTCHandle
	}
	return f
}

func (f TCFilters) priority(h hook) uint16 {
	if h.tcx == hooks[0].tcx {
		return f.IngressPriority
	}
	return f.EgressPriority
}

// ErrForeignFilter is returned by Attach when another program's filter
// holds sluice's priority and handle on a device: sluice does not replace
// what is not its own.
var ErrForeignFilter = errors.New("tc filter at sluice's priority and handle is not sluice's")

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
	prio, handle := d.tc.priority(h), d.tc.Handle
	// Listed before the replace: a filter another tool adds in between
	// is replaced all the same, a window no tc user can close.
	filters, err := netlink.FilterList(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Index: ifindex}}, h.tcPar)
	if err != nil {
		return fmt.Errorf("list tc filters: %w", err)
	}
	for _, f := range filters {
		a := f.Attrs()
		if a.Priority != prio || a.Handle != handle {
			continue
		}
		if bf, ok := f.(*netlink.BpfFilter); !ok || !d.owner.owns(progID(bf)) {
			return fmt.Errorf("%w: %s prio %d handle %#x holds %s; choose other --tc-%s-priority/--tc-handle",
				ErrForeignFilter, h.name, prio, d.tc.Handle, describeFilter(f), h.name)
		}
	}
	if err := netlink.FilterReplace(d.tcFilter(h, ifindex, h.program(d).FD())); err != nil {
		return err
	}
	// A filter of an earlier agent at another priority or handle (the
	// flags changed) would run the datapath twice: removed once the new
	// one serves, so no packet goes untranslated in between.
	for _, f := range filters {
		a := f.Attrs()
		bf, ok := f.(*netlink.BpfFilter)
		if !ok || (a.Priority == prio && a.Handle == handle) || !d.owner.owns(progID(bf)) {
			continue
		}
		if err := netlink.FilterDel(bf); err != nil {
			return fmt.Errorf("remove previous tc filter prio %d: %w", a.Priority, err)
		}
	}
	return nil
}

func (d *Datapath) tcFilter(h hook, ifindex, fd int) *netlink.BpfFilter {
	return &netlink.BpfFilter{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: ifindex,
			Parent:    h.tcPar,
			Handle:    d.tc.Handle,
			Protocol:  unix.ETH_P_ALL,
			Priority:  d.tc.priority(h),
		},
		Fd:           fd,
		Name:         "sluice_" + h.name,
		DirectAction: true,
	}
}

// detachTC removes sluice's filters from one hook of the device: those
// whose program is ours, at whatever priority and handle. Another
// program's filter stays, even at sluice's priority and handle.
func (d *Datapath) detachTC(h hook, ifindex int) error {
	_, err := removeOwnFilters(d.owner, ifindex, h)
	return err
}

// removeOwnFilters removes o's filters from one hook of the device and
// says how many there were.
func removeOwnFilters(o *owner, ifindex int, h hook) (int, error) {
	filters, err := netlink.FilterList(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Index: ifindex}}, h.tcPar)
	if err != nil {
		return 0, nil // no clsact qdisc
	}
	n := 0
	for _, f := range filters {
		bf, ok := f.(*netlink.BpfFilter)
		if !ok || !o.owns(progID(bf)) {
			continue
		}
		if err := netlink.FilterDel(bf); err != nil {
			return n, fmt.Errorf("remove tc %s filter prio %d: %w", h.name, bf.Priority, err)
		}
		n++
	}
	return n, nil
}

func progID(bf *netlink.BpfFilter) ebpf.ProgramID { return ebpf.ProgramID(bf.Id) }

func describeFilter(f netlink.Filter) string {
	if bf, ok := f.(*netlink.BpfFilter); ok {
		return fmt.Sprintf("bpf program %q (id %d)", bf.Name, bf.Id)
	}
	return fmt.Sprintf("a %s filter", f.Type())
}
