package maps

import (
	"fmt"
	"net/netip"
	"strings"
	"sync"

	"github.com/cilium/ebpf/btf"

	"github.com/sluice-lb/sluice/bpf"
)

// LB4 is the IPv4 load-balancing map set the control plane programs.
type LB4 struct {
	Services *Map[bpf.SluiceLb4Key, bpf.SluiceLb4Service]
	Backends *Map[uint32, bpf.SluiceLb4Backend]
	RevNat   *Map[uint32, bpf.SluiceLb4ReverseNat]
	// Prefilter has one entry, key 0.
	Prefilter *Map[uint32, bpf.SluiceLb4Filter]
	// Affinity is written by the datapath only: per affinity scope and
	// client, the sticky backend and the time of the last new connection.
	Affinity *Map[bpf.SluiceLb4AffinityKey, bpf.SluiceLb4Affinity]
	// AffinityMatch holds value 1 for every backend currently in the set
	// of an affinity scope.
	AffinityMatch *Map[bpf.SluiceLb4AffinityMatchKey, uint8]
	// Fragments is written by the datapath only: the ports of fragmented
	// datagrams in flight, recorded by their first fragment.
	Fragments *Map[bpf.SluiceFrag4Key, bpf.SluiceFrag4Ports]
	// SourceRanges (an LPM trie) holds value 1 for every allowed source
	// CIDR of a load-balancer frontend, by its rev_nat_id (rule 21).
	SourceRanges *Map[bpf.SluiceLb4SrcRangeKey, uint8]
	// SockRevNat and SockBackend are written by the socket programs only
	// (bpf/lib/sock4.h): the frontend a translated socket meant, by its
	// cookie and backend, and an unconnected UDP socket's backend, by its
	// cookie and frontend.
	SockRevNat  *Map[bpf.SluiceLb4SockRevnatKey, bpf.SluiceLb4SockRevnatEntry]
	SockBackend *Map[bpf.SluiceLb4SockBackendKey, bpf.SluiceLb4SockBackend]
}

// Datapath is every map of the datapath, typed.
type Datapath struct {
	LB4 LB4
	CT4 *Map[bpf.SluiceCt4Key, bpf.SluiceCt4Entry]
	// CTTimeouts holds the conntrack lifetimes in seconds (0: default).
	CTTimeouts *Map[bpf.SluiceCtTimeout, uint32]
	Counters   *PerCPU[bpf.SluiceReason, bpf.SluiceCounter]
	Config     *Map[uint32, bpf.SluiceDatapathConfig]
	// L2Announce holds the load-balancer addresses this node answers ARP
	// requests for, by device, with the device's MAC.
	L2Announce *Map[bpf.SluiceL2Announce4Key, bpf.SluiceL2Announce4]
}

// FromObjects wraps the maps of a loaded collection.
func FromObjects(m *bpf.SluiceMaps) *Datapath {
	return &Datapath{
		LB4: LB4{
			Services:      New[bpf.SluiceLb4Key, bpf.SluiceLb4Service](m.Lb4Services),
			Backends:      New[uint32, bpf.SluiceLb4Backend](m.Lb4Backends),
			RevNat:        New[uint32, bpf.SluiceLb4ReverseNat](m.Lb4Revnat),
			Prefilter:     New[uint32, bpf.SluiceLb4Filter](m.Lb4Prefilter),
			Affinity:      New[bpf.SluiceLb4AffinityKey, bpf.SluiceLb4Affinity](m.Lb4Affinity),
			AffinityMatch: New[bpf.SluiceLb4AffinityMatchKey, uint8](m.Lb4AffinityMatch),
			Fragments:     New[bpf.SluiceFrag4Key, bpf.SluiceFrag4Ports](m.Lb4Fragments),
			SourceRanges:  New[bpf.SluiceLb4SrcRangeKey, uint8](m.Lb4SourceRanges),
			SockRevNat:    New[bpf.SluiceLb4SockRevnatKey, bpf.SluiceLb4SockRevnatEntry](m.Lb4SockRevnat),
			SockBackend:   New[bpf.SluiceLb4SockBackendKey, bpf.SluiceLb4SockBackend](m.Lb4SockBackend),
		},
		CT4:        New[bpf.SluiceCt4Key, bpf.SluiceCt4Entry](m.Ct4V3),
		CTTimeouts: New[bpf.SluiceCtTimeout, uint32](m.SluiceCtTimeouts),
		Counters:   NewPerCPU[bpf.SluiceReason, bpf.SluiceCounter](m.SluiceCounters),
		Config:     New[uint32, bpf.SluiceDatapathConfig](m.SluiceConfig),
		L2Announce: New[bpf.SluiceL2Announce4Key, bpf.SluiceL2Announce4](m.L2Announce4),
	}
}

// ReasonNames names every reason code as the C enum does, without the
// REASON_ prefix, lower case with dashes ("reject-no-endpoints"). Read from
// the object's BTF, once, so the names are never kept in a second list.
var ReasonNames = sync.OnceValues(reasonNames)

func reasonNames() (map[bpf.SluiceReason]string, error) {
	spec, err := bpf.LoadSluice()
	if err != nil {
		return nil, err
	}
	var enum *btf.Enum
	if err := spec.Types.TypeByName("reason", &enum); err != nil {
		return nil, fmt.Errorf("reason enum in datapath BTF: %w", err)
	}
	names := map[bpf.SluiceReason]string{}
	for _, v := range enum.Values {
		if v.Name == "REASON_MAX" {
			continue
		}
		n := strings.ToLower(strings.TrimPrefix(v.Name, "REASON_"))
		names[bpf.SluiceReason(v.Value)] = strings.ReplaceAll(n, "_", "-")
	}
	return names, nil
}

// ReasonCount is one datapath counter, summed over CPUs.
type ReasonCount struct {
	Reason  string `json:"reason"`
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
}

// ReadCounters returns every reason's counter, in reason-code order.
func (d *Datapath) ReadCounters() ([]ReasonCount, error) {
	names, err := ReasonNames()
	if err != nil {
		return nil, err
	}
	out := make([]ReasonCount, 0, bpf.SluiceReasonREASON_MAX)
	for r := bpf.SluiceReason(0); r < bpf.SluiceReasonREASON_MAX; r++ {
		per, err := d.Counters.Lookup(r)
		if err != nil {
			return nil, fmt.Errorf("read counter %s: %w", names[r], err)
		}
		c := ReasonCount{Reason: names[r]}
		for _, v := range per {
			c.Packets += v.Packets
			c.Bytes += v.Bytes
		}
		out = append(out, c)
	}
	return out, nil
}

// Packets returns the packets counted for each reason, by name.
func (d *Datapath) Packets() (map[string]uint64, error) {
	counts, err := d.ReadCounters()
	if err != nil {
		return nil, err
	}
	m := make(map[string]uint64, len(counts))
	for _, c := range counts {
		m[c.Reason] = c.Packets
	}
	return m, nil
}

// BackendAddrs returns the addresses a new flow to one frontend can be
// sent to, in slot order, looked up entry by entry: cheap for one
// frontend, where reading lb4_services whole is not.
func (lb LB4) BackendAddrs(vip netip.Addr, port uint16, proto uint8) []netip.Addr {
	key := bpf.SluiceLb4Key{Address: Addr4(vip), Dport: Port(port), Proto: proto}
	master, err := lb.Services.Lookup(key)
	if err != nil {
		return nil
	}
	var out []netip.Addr
	for slot := uint16(1); slot <= master.Count; slot++ {
		key.BackendSlot = slot
		s, err := lb.Services.Lookup(key)
		if err != nil {
			continue
		}
		if be, err := lb.Backends.Lookup(s.BackendId); err == nil {
			out = append(out, AddrFrom4(be.Address))
		}
	}
	return out
}
