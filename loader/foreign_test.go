package loader

import (
	"encoding/binary"
	"slices"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/sluice-lb/sluice/internal/netlab"
)

// testEtherType marks the frames the tests send (IEEE 802 local
// experimental): counting programs count only those, so a stray frame of
// the kernel's own cannot change a count.
const testEtherType = 0x88b5

// counter is another tool's tc program: it counts the test's frames in an
// array map and passes every packet on (TC_ACT_UNSPEC, which is TCX_NEXT).
type counter struct {
	name string
	prog *ebpf.Program
	m    *ebpf.Map
}

func newCounter(t *testing.T, name string) *counter {
	t.Helper()
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	proto := uint16(testEtherType)
	netProto := int32(binary.LittleEndian.Uint16(binary.BigEndian.AppendUint16(nil, proto))) // skb->protocol is big endian
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: name,
		Type: ebpf.SchedCLS,
		Instructions: asm.Instructions{
			asm.LoadMem(asm.R2, asm.R1, 16, asm.Word), // skb->protocol
			asm.JNE.Imm(asm.R2, netProto, "out"),
			asm.StoreImm(asm.RFP, -4, 0, asm.Word),
			asm.Mov.Reg(asm.R2, asm.RFP),
			asm.Add.Imm(asm.R2, -4),
			asm.LoadMapPtr(asm.R1, m.FD()),
			asm.FnMapLookupElem.Call(),
			asm.JEq.Imm(asm.R0, 0, "out"),
			asm.Mov.Imm(asm.R1, 1),
			asm.StoreXAdd(asm.R0, asm.R1, asm.DWord),
			asm.Mov.Imm(asm.R0, -1).WithSymbol("out"), // TC_ACT_UNSPEC
			asm.Return(),
		},
		License: "Dual BSD/GPL",
	})
	if err != nil {
		t.Fatalf("load counting program: %v", err)
	}
	t.Cleanup(func() { prog.Close() })
	return &counter{name: name, prog: prog, m: m}
}

func (c *counter) count(t *testing.T) uint64 {
	t.Helper()
	var n uint64
	if err := c.m.Lookup(uint32(0), &n); err != nil {
		t.Fatal(err)
	}
	return n
}

func (c *counter) id(t *testing.T) ebpf.ProgramID {
	t.Helper()
	info, err := c.prog.Info()
	if err != nil {
		t.Fatal(err)
	}
	id, _ := info.ID()
	return id
}

// attachTCX attaches c to a hook of dev, placed by anchor (nil: the
// kernel's default, last).
func (c *counter) attachTCX(t *testing.T, ns *netlab.NS, dev string, h hook, anchor link.Anchor) {
	t.Helper()
	if err := ns.Do(func() error {
		l, err := link.AttachTCX(link.TCXOptions{Interface: ifindex(t, ns, dev), Program: c.prog, Attach: h.tcx, Anchor: anchor})
		if err != nil {
			return err
		}
		t.Cleanup(func() { l.Close() })
		return nil
	}); err != nil {
		t.Fatalf("attach %s with tcx: %v", c.name, err)
	}
}

// attachTC adds c as a cls_bpf filter on a hook of dev, adding the clsact
// qdisc if the device has none.
func (c *counter) attachTC(t *testing.T, ns *netlab.NS, dev string, h hook, prio uint16, handle uint32) {
	t.Helper()
	nl := ns.Netlink()
	idx := ifindex(t, ns, dev)
	qdisc := &netlink.GenericQdisc{
		QdiscAttrs: netlink.QdiscAttrs{LinkIndex: idx, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT},
		QdiscType:  "clsact",
	}
	if err := nl.QdiscAdd(qdisc); err != nil && err != unix.EEXIST {
		t.Fatal(err)
	}
	f := &netlink.BpfFilter{
		FilterAttrs:  netlink.FilterAttrs{LinkIndex: idx, Parent: h.tcPar, Handle: handle, Protocol: unix.ETH_P_ALL, Priority: prio},
		Fd:           c.prog.FD(),
		Name:         c.name,
		DirectAction: true,
	}
	if err := nl.FilterReplace(f); err != nil {
		t.Fatalf("add %s filter prio %d handle %#x: %v", c.name, prio, handle, err)
	}
}

func ifindex(t *testing.T, ns *netlab.NS, dev string) int {
	t.Helper()
	l, err := ns.Netlink().LinkByName(dev)
	if err != nil {
		t.Fatal(err)
	}
	return l.Attrs().Index
}

// chain returns the programs on a hook of dev in the order they run: TCX
// links in their order, or cls_bpf filters by priority.
func chain(t *testing.T, ns *netlab.NS, dev string, h hook, mode AttachMode) []ebpf.ProgramID {
	t.Helper()
	var ids []ebpf.ProgramID
	switch mode {
	case AttachTCX:
		if err := ns.Do(func() error {
			res, err := link.QueryPrograms(link.QueryOptions{Target: ifindex(t, ns, dev), Attach: h.tcx})
			if err != nil {
				return err
			}
			for _, p := range res.Programs {
				ids = append(ids, p.ID)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	case AttachTC:
		l, err := ns.Netlink().LinkByName(dev)
		if err != nil {
			t.Fatal(err)
		}
		filters, err := ns.Netlink().FilterList(l, h.tcPar)
		if err != nil {
			return nil // no clsact qdisc
		}
		slices.SortStableFunc(filters, func(a, b netlink.Filter) int { return int(a.Attrs().Priority) - int(b.Attrs().Priority) })
		for _, f := range filters {
			if bf, ok := f.(*netlink.BpfFilter); ok && bf.Id != 0 {
				ids = append(ids, ebpf.ProgramID(bf.Id))
			}
		}
	}
	return ids
}

// sendFrames sends n frames of testEtherType out of dev through a packet
// socket, as any sender's frames go: through dev's egress hooks, then,
// across the veth, through its peer's ingress hooks.
func sendFrames(t *testing.T, ns *netlab.NS, dev string, n int) {
	t.Helper()
	idx := ifindex(t, ns, dev)
	proto := binary.BigEndian.Uint16(binary.LittleEndian.AppendUint16(nil, testEtherType))
	frame := make([]byte, 64)
	copy(frame, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 1})
	binary.BigEndian.PutUint16(frame[12:], testEtherType)
	if err := ns.Do(func() error {
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		to := &unix.SockaddrLinklayer{Ifindex: idx, Protocol: proto, Halen: 6, Addr: [8]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}}
		for range n {
			if err := unix.Sendto(fd, frame, 0, to); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatalf("send frames on %s: %v", dev, err)
	}
}

func loadAttach(t *testing.T, ns *netlab.NS, opts Options, dev string) (*Datapath, error) {
	t.Helper()
	var dp *Datapath
	err := ns.Do(func() error {
		var err error
		if dp, err = Load(opts); err != nil {
			return err
		}
		return dp.Attach(ifindex(t, ns, dev), dev)
	})
	if dp != nil {
		t.Cleanup(func() { dp.Close() })
	}
	return dp, err
}

func programID(t *testing.T, p *ebpf.Program) ebpf.ProgramID {
	t.Helper()
	info, err := p.Info()
	if err != nil {
		t.Fatal(err)
	}
	id, _ := info.ID()
	return id
}

func wantChain(t *testing.T, what string, got, want []ebpf.ProgramID) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Errorf("%s: programs %v, want %v", what, got, want)
	}
}
