package loader

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"

	"github.com/sluice-lb/sluice/internal/testenv"
)

const framesPerRound = 50

// Other tools' programs on the hooks sluice runs on, one before it and one
// after it on each: every frame sent through reaches both, so sluice hands
// on what it passes and receives what the one before it passed. A
// restarted agent keeps its place; uninstalling leaves the others
// attached and counting.
func TestForeignProgramsRunAroundSluice(t *testing.T) {
	for _, mode := range []AttachMode{AttachTCX, AttachTC} {
		t.Run(string(mode), func(t *testing.T) {
			if mode == AttachTCX {
				testenv.SkipOnOldKernel(t, "6.6", "TCX")
			}
			ns := vethNS(t)
			dir := pinDir(t)
			var logs bytes.Buffer
			opts := Options{PinDir: dir, Attach: mode, Log: quietLog(&logs)}
			tc := opts.TC.withDefaults()
			ingress, egress := hooks[0], hooks[1]

			// early: attached before the agent starts; late: after.
			type pair struct{ before, after *counter }
			at := map[string]*pair{}
			for _, h := range hooks {
				at[h.name] = &pair{newCounter(t, "fgn_"+h.name+"_b"), newCounter(t, "fgn_"+h.name+"_a")}
			}
			switch mode {
			case AttachTCX:
				// Before the agent, in the kernel's default place
				// (last): sluice goes ahead of it at ingress,
				// after it at egress.
				at["ingress"].after.attachTCX(t, ns, "x0", ingress, nil)
				at["egress"].before.attachTCX(t, ns, "x0", egress, nil)
			case AttachTC:
				at["ingress"].before.attachTC(t, ns, "x0", ingress, tc.IngressPriority-1, 1)
				at["egress"].after.attachTC(t, ns, "x0", egress, tc.EgressPriority+1, 1)
			}
			dp, err := loadAttach(t, ns, opts, "x0")
			if err != nil {
				t.Fatal(err)
			}
			switch mode {
			case AttachTCX:
				at["ingress"].before.attachTCX(t, ns, "x0", ingress, link.Head())
				at["egress"].after.attachTCX(t, ns, "x0", egress, nil)
			case AttachTC:
				at["ingress"].after.attachTC(t, ns, "x0", ingress, tc.IngressPriority+1, 1)
				at["egress"].before.attachTC(t, ns, "x0", egress, tc.EgressPriority-1, 1)
			}
			check := func(when string, sluice map[string]ebpf.ProgramID) {
				t.Helper()
				for _, h := range hooks {
					p := at[h.name]
					want := []ebpf.ProgramID{p.before.id(t), p.after.id(t)}
					if id, ok := sluice[h.name]; ok {
						want = []ebpf.ProgramID{want[0], id, want[1]}
					}
					wantChain(t, when+": "+h.name, chain(t, ns, "x0", h, mode), want)
				}
			}
			ours := func(dp *Datapath) map[string]ebpf.ProgramID {
				return map[string]ebpf.ProgramID{
					"ingress": programID(t, dp.Objs.SluiceIngress),
					"egress":  programID(t, dp.Objs.SluiceEgress),
				}
			}
			check("attached", ours(dp))

			// A restarted agent replaces its programs where they are.
			dp.Close()
			dp, err = loadAttach(t, ns, opts, "x0")
			if err != nil {
				t.Fatal(err)
			}
			check("restarted", ours(dp))

			passed := func() uint64 {
				p, err := dp.Maps.Packets()
				if err != nil {
					t.Fatal(err)
				}
				return p["pass"]
			}
			sluiceBefore := passed()
			sendFrames(t, ns, "x1", framesPerRound) // into x0's ingress
			sendFrames(t, ns, "x0", framesPerRound) // out of x0's egress
			for _, h := range hooks {
				for _, c := range []*counter{at[h.name].before, at[h.name].after} {
					if n := c.count(t); n != framesPerRound {
						t.Errorf("%s counted %d frames at %s, want %d", c.name, n, h.name, framesPerRound)
					}
				}
			}
			if n := passed() - sluiceBefore; n < 2*framesPerRound {
				t.Errorf("sluice passed %d packets, want at least the %d sent", n, 2*framesPerRound)
			}

			if err := ns.Do(func() error { return Uninstall(dir, quietLog(&logs)) }); err != nil {
				t.Fatal(err)
			}
			check("uninstalled", nil)
			sendFrames(t, ns, "x1", framesPerRound)
			sendFrames(t, ns, "x0", framesPerRound)
			for _, h := range hooks {
				for _, c := range []*counter{at[h.name].before, at[h.name].after} {
					if n := c.count(t); n != 2*framesPerRound {
						t.Errorf("after uninstall %s counted %d frames, want %d", c.name, n, 2*framesPerRound)
					}
				}
			}
		})
	}
}

// An agent moving from clsact to TCX removes its own filters and leaves
// the others' on the device.
func TestTCXTakeOverKeepsForeignFilters(t *testing.T) {
	testenv.SkipOnOldKernel(t, "6.6", "TCX")
	ns := vethNS(t)
	dir := pinDir(t)
	var logs bytes.Buffer
	tc := TCFilters{}.withDefaults()
	foreign := map[string][]ebpf.ProgramID{}
	for _, h := range hooks {
		prio := tc.priority(h)
		lo, hi := newCounter(t, "fgn_lo_"+h.name), newCounter(t, "fgn_hi_"+h.name)
		lo.attachTC(t, ns, "x0", h, prio-1, 1)
		hi.attachTC(t, ns, "x0", h, prio+1, 1)
		foreign[h.name] = []ebpf.ProgramID{lo.id(t), hi.id(t)}
	}
	dp, err := loadAttach(t, ns, Options{PinDir: dir, Attach: AttachTC, Log: quietLog(&logs)}, "x0")
	if err != nil {
		t.Fatal(err)
	}
	dp.Close()
	if _, err := loadAttach(t, ns, Options{PinDir: dir, Attach: AttachTCX, Log: quietLog(&logs)}, "x0"); err != nil {
		t.Fatal(err)
	}
	for _, h := range hooks {
		wantChain(t, "clsact "+h.name+" after the move to tcx", chain(t, ns, "x0", h, AttachTC), foreign[h.name])
		if n := len(chain(t, ns, "x0", h, AttachTCX)); n != 1 {
			t.Errorf("%d tcx programs at %s, want sluice's", n, h.name)
		}
	}
	if err := ns.Do(func() error { return Uninstall(dir, quietLog(&logs)) }); err != nil {
		t.Fatal(err)
	}
}

// Another program's filter at sluice's own priority and handle is never
// sluice's to replace or remove: Attach refuses to replace it, naming it;
// Uninstall leaves it, also when it replaced sluice's own filter.
func TestForeignFilterAtSluicePriority(t *testing.T) {
	ns := vethNS(t)
	dir := pinDir(t)
	var logs bytes.Buffer
	opts := Options{PinDir: dir, Attach: AttachTC, Log: quietLog(&logs)}
	tc := opts.TC.withDefaults()
	ingress, egress := hooks[0], hooks[1]

	squatter := newCounter(t, "squatter")
	squatter.attachTC(t, ns, "x0", ingress, tc.IngressPriority, tc.Handle)
	_, err := loadAttach(t, ns, opts, "x0")
	if !errors.Is(err, ErrForeignFilter) {
		t.Fatalf("attach over a foreign filter at sluice's priority and handle: %v, want ErrForeignFilter", err)
	}
	t.Logf("refused: %v", err)
	wantChain(t, "ingress after the refused attach", chain(t, ns, "x0", ingress, AttachTC), []ebpf.ProgramID{squatter.id(t)})
	if err := ns.Do(func() error { return Uninstall(dir, quietLog(&logs)) }); err != nil {
		t.Fatal(err)
	}
	wantChain(t, "ingress after uninstall", chain(t, ns, "x0", ingress, AttachTC), []ebpf.ProgramID{squatter.id(t)})

	// sluice attached on x1; then another tool replaces sluice's egress
	// filter by its priority and handle.
	if _, err := loadAttach(t, ns, opts, "x1"); err != nil {
		t.Fatal(err)
	}
	usurper := newCounter(t, "usurper")
	usurper.attachTC(t, ns, "x1", egress, tc.EgressPriority, tc.Handle)
	if err := ns.Do(func() error { return Uninstall(dir, quietLog(&logs)) }); err != nil {
		t.Fatal(err)
	}
	wantChain(t, "x1 egress after uninstall", chain(t, ns, "x1", egress, AttachTC), []ebpf.ProgramID{usurper.id(t)})
	wantChain(t, "x1 ingress after uninstall", chain(t, ns, "x1", ingress, AttachTC), nil)
}

// An agent restarted with other --tc-* flags moves its filters: the new
// ones serve before the old ones are removed, and only one of each is left.
func TestTCFiltersMoveWithTheirFlags(t *testing.T) {
	ns := vethNS(t)
	dir := pinDir(t)
	var logs bytes.Buffer
	dp, err := loadAttach(t, ns, Options{PinDir: dir, Attach: AttachTC, Log: quietLog(&logs)}, "x0")
	if err != nil {
		t.Fatal(err)
	}
	dp.Close()
	moved := TCFilters{IngressPriority: 7, EgressPriority: 60000, Handle: 9}
	if dp, err = loadAttach(t, ns, Options{PinDir: dir, Attach: AttachTC, TC: moved, Log: quietLog(&logs)}, "x0"); err != nil {
		t.Fatal(err)
	}
	for _, h := range hooks {
		filters, err := ns.Netlink().FilterList(mustLink(t, ns, "x0"), h.tcPar)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, f := range filters {
			if bf, ok := f.(*netlink.BpfFilter); ok && bf.Id != 0 {
				got = append(got, fmt.Sprintf("prio %d handle %#x id %d", bf.Priority, bf.Handle, bf.Id))
			}
		}
		want := fmt.Sprintf("prio %d handle %#x id %d", moved.priority(h), moved.Handle, programID(t, h.program(dp)))
		if len(got) != 1 || got[0] != want {
			t.Errorf("%s filters %v, want [%s]", h.name, got, want)
		}
	}
	if err := ns.Do(func() error { return Uninstall(dir, quietLog(&logs)) }); err != nil {
		t.Fatal(err)
	}
}
