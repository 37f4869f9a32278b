package cli

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"

	"github.com/sluice-lb/sluice/bpf"
	"github.com/sluice-lb/sluice/control"
	"github.com/sluice-lb/sluice/maps"
)

// ctFlow is one translated flow: its two conntrack entries joined. Either
// entry may be missing (a flow being created or collected, a repaired
// one); the flow is shown all the same, with what its other entry says.
type ctFlow struct {
	Proto    string `json:"proto"`
	Client   string `json:"client"`   // tuple: client -> frontend
	Frontend string `json:"frontend"` // VIP:port/proto, as the agent names it
	Backend  string `json:"backend"`  // translated tuple: client -> backend
	// SNAT is the node's address and port a SNATed flow leaves with
	// (the backend sees it as the client).
	SNAT      string `json:"snat,omitempty"`
	BackendID uint32 `json:"backendId"`
	RevNatID  uint32 `json:"revNatId"`
	// Service is "namespace/name" (and ":port" when named), when the
	// agent could be asked.
	Service         string  `json:"service,omitempty"`
	State           string  `json:"state"`
	AgeSeconds      int64   `json:"ageSeconds"`
	TimeLeftSeconds int64   `json:"timeLeftSeconds"` // the longer of the two entries'
	Forward         *ctSide `json:"forward,omitempty"`
	Reply           *ctSide `json:"reply,omitempty"`

	frontend       control.Frontend
	fwdKey, revKey *bpf.SluiceCt4Key
}

// ctSide is one entry of a flow.
type ctSide struct {
	Tuple           string   `json:"tuple"` // the packets it matches, as they arrive
	Flags           []string `json:"flags"`
	TimeLeftSeconds int64    `json:"timeLeftSeconds"` // negative: expired
	expires         uint32
	created         uint32
}

// readFlows reads every conntrack entry once (in batches, where the
// kernel has them) and joins each forward entry with the reply entry its
// backend implies. Iterating the map here is the same walk maps/ct.go's
// batch iteration does; this could use it.
func readFlows(dp *maps.Datapath) ([]*ctFlow, error) {
	entries := map[bpf.SluiceCt4Key]bpf.SluiceCt4Entry{}
	if err := dp.CT4.Each(func(k bpf.SluiceCt4Key, v bpf.SluiceCt4Entry) bool {
		entries[k] = v
		return true
	}); err != nil {
		return nil, fmt.Errorf("read conntrack: %w", err)
	}
	now, err := monoSeconds()
	if err != nil {
		return nil, err
	}
	flagNames, err := ctFlagNames()
	if err != nil {
		return nil, err
	}
	side := func(k bpf.SluiceCt4Key, e bpf.SluiceCt4Entry) *ctSide {
		s := &ctSide{
			Tuple:           fmt.Sprintf("%s -> %s", addrPort(k.Saddr, k.Sport), addrPort(k.Daddr, k.Dport)),
			Flags:           []string{},
			TimeLeftSeconds: int64(e.Expires) - int64(now),
			expires:         e.Expires,
			created:         e.Created,
		}
		for bit := bpf.SluiceCtFlags(1); bit != 0; bit <<= 1 {
			if e.Flags&bit != 0 {
				s.Flags = append(s.Flags, flagNames[bit])
			}
		}
		return s
	}

	var flows []*ctFlow
	paired := map[bpf.SluiceCt4Key]bool{}
	for k, e := range entries {
		if e.Kind != bpf.SluiceCtKindCT_FORWARD {
			continue
		}
		f := &ctFlow{
			frontend:  control.Frontend{Addr: maps.AddrFrom4(k.Daddr), Port: maps.PortFrom(k.Dport), Proto: control.Protocol(k.Proto)},
			Client:    addrPort(k.Saddr, k.Sport).String(),
			Backend:   addrPort(e.BackendAddr, e.BackendPort).String(),
			BackendID: e.BackendId,
			RevNatID:  e.RevNatId,
			Forward:   side(k, e),
			fwdKey:    &k,
		}
		if maps.CT4SNAT(e) {
			f.SNAT = addrPort(e.NatAddr, e.NatPort).String()
		}
		rk := maps.CT4ReplyKey(k, e)
		if re, ok := entries[rk]; ok && re.Kind == bpf.SluiceCtKindCT_REPLY && re.RevNatId == e.RevNatId {
			f.Reply, f.revKey = side(rk, re), &rk
			paired[rk] = true
		}
		flows = append(flows, f)
	}
	for k, e := range entries {
		if e.Kind != bpf.SluiceCtKindCT_REPLY || paired[k] {
			continue
		}
		// A reply entry alone: its frontend is the reverse-NAT entry's.
		fe := control.Frontend{Proto: control.Protocol(k.Proto)}
		if rn, err := dp.LB4.RevNat.Lookup(e.RevNatId); err == nil && rn.Address != 0 {
			fe.Addr, fe.Port = maps.AddrFrom4(rn.Address), maps.PortFrom(rn.Port)
		}
		f := &ctFlow{
			frontend: fe,
			Client:   addrPort(k.Daddr, k.Dport).String(),
			Backend:  addrPort(k.Saddr, k.Sport).String(),
			RevNatID: e.RevNatId,
			Reply:    side(k, e),
			revKey:   &k,
		}
		if maps.CT4SNAT(e) { // replies come to the node; the client is kept in the entry
			f.Client, f.SNAT = addrPort(e.NatAddr, e.NatPort).String(), addrPort(k.Daddr, k.Dport).String()
		}
		flows = append(flows, f)
	}
	for _, f := range flows {
		f.finish(now)
	}
	slices.SortFunc(flows, func(a, b *ctFlow) int {
		return cmp.Or(strings.Compare(a.Frontend, b.Frontend), strings.Compare(a.Client, b.Client))
	})
	return flows, nil
}

// finish fills what both entries decide: names, state, age and time left.
func (f *ctFlow) finish(now uint32) {
	f.Proto = f.frontend.Proto.String()
	if f.frontend.Addr.IsValid() {
		f.Frontend = f.frontend.String()
	} else {
		f.Frontend = "(frontend removed)/" + f.Proto
	}
	var expires, created uint32
	has := func(s *ctSide, flag string) bool { return s != nil && slices.Contains(s.Flags, flag) }
	for _, s := range []*ctSide{f.Forward, f.Reply} {
		if s == nil {
			continue
		}
		expires = max(expires, s.expires)
		if created == 0 || s.created < created {
			created = s.created
		}
	}
	f.AgeSeconds = int64(now) - int64(created)
	f.TimeLeftSeconds = int64(expires) - int64(now)
	answered := has(f.Forward, "seen-reply") || (f.Forward == nil && f.Reply != nil)
	switch {
	case f.TimeLeftSeconds <= 0:
		f.State = "expired" // the agent's collector removes it
	case f.frontend.Proto != control.TCP && answered:
		f.State = "udp-replied"
	case f.frontend.Proto != control.TCP:
		f.State = "udp"
	case has(f.Forward, "fin") || has(f.Forward, "rst") || has(f.Reply, "fin") || has(f.Reply, "rst"):
		f.State = "closing"
	case answered:
		f.State = "established"
	default:
		f.State = "syn"
	}
}

func addrPort(addr uint32, port uint16) netip.AddrPort {
	return netip.AddrPortFrom(maps.AddrFrom4(addr), maps.PortFrom(port))
}

// monoSeconds is the clock of the conntrack entries' times
// (bpf_ktime_get_ns() / 1e9): CLOCK_MONOTONIC, the same for every process
// on the machine.
func monoSeconds() (uint32, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0, err
	}
	return uint32(ts.Sec), nil
}

// ctFlagNames names each enum ct_flags bit as the C enum does, without
// CT_F_, lower case with dashes ("seen-reply"), read from the object's BTF
// so that the names are kept in one place.
var ctFlagNames = sync.OnceValues(func() (map[bpf.SluiceCtFlags]string, error) {
	spec, err := bpf.LoadSluice()
	if err != nil {
		return nil, err
	}
	var enum *btf.Enum
	if err := spec.Types.TypeByName("ct_flags", &enum); err != nil {
		return nil, fmt.Errorf("ct_flags enum in datapath BTF: %w", err)
	}
	names := map[bpf.SluiceCtFlags]string{}
	for _, v := range enum.Values {
		n := strings.ToLower(strings.TrimPrefix(v.Name, "CT_F_"))
		names[bpf.SluiceCtFlags(v.Value)] = strings.ReplaceAll(n, "_", "-")
	}
	for bit := bpf.SluiceCtFlags(1); bit != 0; bit <<= 1 {
		if _, ok := names[bit]; !ok {
			names[bit] = fmt.Sprintf("0x%x", uint8(bit))
		}
	}
	return names, nil
})
