// Package trace tells what the datapath would do with one packet: it runs
// the packet through the trace build of the programs (loader.Tracer), which
// reads a datapath's live maps and writes none, and explains the run with
// what those maps hold: the frontend, the backend, the conntrack entry.
//
// A trace takes the path the packet would take, with two exceptions the
// dry run cannot see: a new flow picks its backend at random (Result.Choices
// says among how many), and a conntrack table too full to take a new flow
// (drop-ct-full) is traced as if the insert had succeeded.
package trace

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/sluice-lb/sluice/bpf"
	"github.com/sluice-lb/sluice/internal/packet"
	"github.com/sluice-lb/sluice/loader"
	"github.com/sluice-lb/sluice/maps"
)

// Hook is the program a packet is traced through.
type Hook string

const (
	Ingress Hook = "ingress" // packets arriving on a served device: forward translation
	Egress  Hook = "egress"  // packets leaving it: replies translated back
)

// Verdicts as tc has them.
const (
	tcActUnspec   = ^uint32(0) // sluice's pass: on to the next program
	tcActShot     = 2
	tcActRedirect = 7 // a REJECT's ICMP error going back out, or a forwarded SNATed packet
)

// Tuple is a packet's addresses.
type Tuple struct {
	Proto string `json:"proto"`
	Src   string `json:"src"`
	Dst   string `json:"dst"`
	Flags string `json:"flags,omitempty"` // TCP
}

func (t Tuple) String() string {
	s := fmt.Sprintf("%s %s -> %s", t.Proto, t.Src, t.Dst)
	if t.Flags != "" {
		s += " [" + t.Flags + "]"
	}
	return s
}

// Backend is a backend by address and id (its index in lb4_backends).
type Backend struct {
	Address string `json:"address"`
	ID      uint32 `json:"id"`
}

func (b Backend) String() string { return fmt.Sprintf("%s (id %d)", b.Address, b.ID) }

// Conntrack is the entry conntrack holds for the packet's tuple.
type Conntrack struct {
	Kind     string `json:"kind"` // forward (client -> frontend) or reply (backend -> client)
	Backend  string `json:"backend,omitempty"`
	RevNatID uint32 `json:"rev_nat_id"`
	// ExpiresIn is in seconds from now; negative: this direction expired.
	ExpiresIn int64 `json:"expires_in_seconds"`
	// SNAT, for a SNATed flow: the forward entry's node address and port
	// the flow leaves with, or the reply entry's client it goes back to.
	SNAT string `json:"snat,omitempty"`
}

// Result is what the datapath would do with a packet.
type Result struct {
	Hook    Hook     `json:"hook"`
	Packet  Tuple    `json:"packet"`
	Verdict string   `json:"verdict"` // pass, drop, reject or forward (routed by the datapath: SNAT)
	Reasons []string `json:"reasons"` // as maps.ReasonNames, in the order met
	// Frontend is the VIP:port/proto of the flow: the master entry the
	// packet hit at ingress, the frontend a reply is restored to at egress.
	Frontend  string     `json:"frontend,omitempty"`
	Conntrack *Conntrack `json:"conntrack"` // nil: no entry for the tuple
	Backend   *Backend   `json:"backend,omitempty"`
	// Choices: a new flow picks its backend at random among this many, so
	// another trace (or the real packet) may pick another.
	Choices int `json:"choices,omitempty"`
	// Output is the packet that leaves: translated, or the ICMP error of
	// a reject. Absent when the packet passes unchanged or is dropped.
	Output *Tuple `json:"output,omitempty"`
}

// Run traces p through hook's program of t, reading dp (the maps t was
// loaded against) to explain it.
func Run(t *loader.Tracer, dp *maps.Datapath, hook Hook, p Packet) (*Result, error) {
	names, err := maps.ReasonNames()
	if err != nil {
		return nil, err
	}
	key := bpf.SluiceCt4Key{
		Saddr: maps.Addr4(p.Src.Addr()), Daddr: maps.Addr4(p.Dst.Addr()),
		Sport: maps.Port(p.Src.Port()), Dport: maps.Port(p.Dst.Port()), Proto: p.Proto,
	}
	// Read before the run, which changes nothing, so the entry is the one
	// the program saw.
	ct, ctErr := dp.CT4.Lookup(key)
	now, err := monotonicSeconds()
	if err != nil {
		return nil, err
	}

	var run *loader.TraceRun
	switch hook {
	case Ingress:
		run, err = t.Ingress(p.Frame())
	case Egress:
		run, err = t.Egress(p.Frame())
	default:
		return nil, fmt.Errorf("hook %q: want ingress or egress", hook)
	}
	if err != nil {
		return nil, err
	}

	r := &Result{Hook: hook, Packet: p.tuple(), Reasons: []string{}}
	for _, c := range run.Reasons {
		r.Reasons = append(r.Reasons, names[c])
	}
	r.Verdict = verdictName(run.Ret, r.Reasons)
	if ctErr == nil {
		r.Conntrack = conntrackView(ct, now)
	}
	r.Output = outputOf(run, p)

	switch hook {
	case Ingress:
		explainIngress(r, dp.LB4, p, ct, ctErr == nil)
	case Egress:
		explainEgress(r, dp.LB4, p, ct, ctErr == nil)
	}
	return r, nil
}

func explainIngress(r *Result, lb maps.LB4, p Packet, ct bpf.SluiceCt4Entry, hasCT bool) {
	fe := bpf.SluiceLb4Key{Address: maps.Addr4(p.Dst.Addr()), Dport: maps.Port(p.Dst.Port()), Proto: p.Proto}
	master, err := lb.Services.Lookup(fe)
	if err == nil && master.Flags&bpf.SluiceLbServiceFlagsSVC_F_MARKER == 0 {
		r.Frontend = frontendName(p.Dst, p.Proto)
	} else if hasCT && ct.Kind == bpf.SluiceCtKindCT_FORWARD {
		r.Frontend = revNatName(lb, ct.RevNatId, p.Proto)
	}
	if r.Output == nil || r.Verdict != "pass" {
		return
	}
	// Translated: the destination is the backend.
	dst, err := netip.ParseAddrPort(r.Output.Dst)
	if err != nil {
		return
	}
	be := &Backend{Address: dst.String()}
	if hasCT && ct.Kind == bpf.SluiceCtKindCT_FORWARD && slices.Contains(r.Reasons, "established") {
		be.ID = ct.BackendId
	} else {
		for id, addr := range slotBackends(lb, fe, master.Count) {
			if addr == dst {
				be.ID = id
			}
		}
	}
	r.Backend = be
	if slices.Contains(r.Reasons, "new-flow") && !slices.Contains(r.Reasons, "affinity-hit") {
		r.Choices = int(master.Count)
	}
}

func explainEgress(r *Result, lb maps.LB4, p Packet, ct bpf.SluiceCt4Entry, hasCT bool) {
	if !hasCT || ct.Kind != bpf.SluiceCtKindCT_REPLY {
		return
	}
	r.Frontend = revNatName(lb, ct.RevNatId, p.Proto)
	if r.Output != nil {
		r.Backend = &Backend{Address: p.Src.String(), ID: ct.BackendId}
	}
}

// slotBackends returns the backend of every slot of a frontend by id.
func slotBackends(lb maps.LB4, fe bpf.SluiceLb4Key, n uint16) map[uint32]netip.AddrPort {
	out := map[uint32]netip.AddrPort{}
	for slot := uint16(1); slot <= n; slot++ {
		fe.BackendSlot = slot
		s, err := lb.Services.Lookup(fe)
		if err != nil {
			continue
		}
		if be, err := lb.Backends.Lookup(s.BackendId); err == nil {
			out[s.BackendId] = netip.AddrPortFrom(maps.AddrFrom4(be.Address), maps.PortFrom(be.Port))
		}
	}
	return out
}

func revNatName(lb maps.LB4, id uint32, proto uint8) string {
	rn, err := lb.RevNat.Lookup(id)
	if err != nil || rn.Address == 0 {
		return ""
	}
	return frontendName(netip.AddrPortFrom(maps.AddrFrom4(rn.Address), maps.PortFrom(rn.Port)), proto)
}

func frontendName(ap netip.AddrPort, proto uint8) string {
	return ap.String() + "/" + protoName(proto)
}

func conntrackView(e bpf.SluiceCt4Entry, now uint32) *Conntrack {
	c := &Conntrack{Kind: "forward", RevNatID: e.RevNatId, ExpiresIn: int64(e.Expires) - int64(now)}
	switch e.Kind {
	case bpf.SluiceCtKindCT_FORWARD:
		c.Backend = netip.AddrPortFrom(maps.AddrFrom4(e.BackendAddr), maps.PortFrom(e.BackendPort)).String()
	case bpf.SluiceCtKindCT_REPLY:
		c.Kind = "reply"
	default:
		c.Kind = fmt.Sprintf("kind-%d", e.Kind)
	}
	if maps.CT4SNAT(e) {
		c.SNAT = netip.AddrPortFrom(maps.AddrFrom4(e.NatAddr), maps.PortFrom(e.NatPort)).String()
	}
	return c
}

// verdictName names a run's verdict. A redirect is an ICMP error sent
// back (REJECT, whose reason says so) or a packet the datapath forwards
// itself (SNAT).
func verdictName(ret uint32, reasons []string) string {
	switch ret {
	case tcActUnspec:
		return "pass"
	case tcActShot:
		return "drop"
	case tcActRedirect:
		for _, r := range reasons {
			if strings.HasPrefix(r, "reject-") {
				return "reject"
			}
		}
		return "forward"
	}
	return fmt.Sprintf("tc-action-%d", int32(ret))
}

// outputOf is the packet that leaves when it is not the one that came in.
func outputOf(run *loader.TraceRun, in Packet) *Tuple {
	if run.Ret == tcActShot {
		return nil
	}
	f, err := packet.Parse(run.Out)
	if err != nil {
		return nil
	}
	t := &Tuple{Proto: protoName(f.Proto), Src: f.Src.String(), Dst: f.Dst.String()}
	if f.Proto == packet.ProtoTCP || f.Proto == packet.ProtoUDP {
		t.Src = netip.AddrPortFrom(f.Src, f.SrcPort).String()
		t.Dst = netip.AddrPortFrom(f.Dst, f.DstPort).String()
	}
	if f.Proto == packet.ProtoTCP && len(f.L4) > 13 {
		t.Flags = FormatTCPFlags(f.L4[13])
	}
	if *t == in.tuple() {
		return nil
	}
	return t
}

// monotonicSeconds is the clock conntrack's lifetimes are in
// (bpf_ktime_get_ns() / 1e9).
func monotonicSeconds() (uint32, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0, err
	}
	return uint32(ts.Sec), nil
}
