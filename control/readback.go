package control

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/sluice-lb/sluice/bpf"
	"github.com/sluice-lb/sluice/maps"
)

// lb4Snapshot is what the lb4 maps hold, decoded.
type lb4Snapshot struct {
	backends  map[uint32]backendKey
	revNats   map[uint32]Frontend // address and port only
	markers   map[netip.Addr]bool
	frontends map[Frontend]*programmed
	matches   map[bpf.SluiceLb4AffinityMatchKey]bool
	filter    *bpf.SluiceLb4Filter
}

func readLB4(lb maps.LB4) (*lb4Snapshot, error) {
	s := &lb4Snapshot{
		backends:  map[uint32]backendKey{},
		revNats:   map[uint32]Frontend{},
		markers:   map[netip.Addr]bool{},
		frontends: map[Frontend]*programmed{},
		matches:   map[bpf.SluiceLb4AffinityMatchKey]bool{},
		filter:    &bpf.SluiceLb4Filter{},
	}
	if f, err := lb.Prefilter.Lookup(0); err == nil {
		s.filter = &f
	} else {
		return nil, fmt.Errorf("read lb4_prefilter: %w", err)
	}
	err := lb.Backends.Each(func(id uint32, be bpf.SluiceLb4Backend) bool {
		if be.Flags&bpf.SluiceLbBackendFlagsBE_F_ACTIVE != 0 && id != 0 {
			s.backends[id] = backendKey{be.Address, be.Port, Protocol(be.Proto)}
		}
		return true
	})
	if err != nil {
		return nil, fmt.Errorf("read lb4_backends: %w", err)
	}
	err = lb.RevNat.Each(func(id uint32, rn bpf.SluiceLb4ReverseNat) bool {
		if rn.Address != 0 && id != 0 {
			s.revNats[id] = Frontend{Addr: maps.AddrFrom4(rn.Address), Port: maps.PortFrom(rn.Port)}
		}
		return true
	})
	if err != nil {
		return nil, fmt.Errorf("read lb4_revnat: %w", err)
	}
	err = lb.Services.Each(func(k bpf.SluiceLb4Key, v bpf.SluiceLb4Service) bool {
		if v.Flags&bpf.SluiceLbServiceFlagsSVC_F_MARKER != 0 {
			s.markers[maps.AddrFrom4(k.Address)] = true
			return true
		}
		fe := Frontend{maps.AddrFrom4(k.Address), maps.PortFrom(k.Dport), Protocol(k.Proto)}
		p := s.frontends[fe]
		if p == nil {
			p = &programmed{}
			s.frontends[fe] = p
		}
		if k.BackendSlot == 0 {
			p.master, p.hasMaster = v, true
			return true
		}
		for len(p.slots) < int(k.BackendSlot) {
			p.slots = append(p.slots, 0)
		}
		p.slots[k.BackendSlot-1] = v.BackendId
		return true
	})
	if err != nil {
		return nil, fmt.Errorf("read lb4_services: %w", err)
	}
	err = lb.AffinityMatch.Each(func(k bpf.SluiceLb4AffinityMatchKey, _ uint8) bool {
		s.matches[k] = true
		return true
	})
	if err != nil {
		return nil, fmt.Errorf("read lb4_affinity_match: %w", err)
	}
	return s, nil
}

// FrontendView is one programmed frontend as `sluice lb list` shows it.
type FrontendView struct {
	Frontend string `json:"frontend"`
	Protocol string `json:"protocol"`
	RevNatID uint32 `json:"revNatId"`
	// Empty is what a new flow gets without backends: "reject" or "drop".
	Empty string `json:"whenEmpty"`
	// AffinitySeconds is the ClientIP session affinity timeout, 0 = none.
	AffinitySeconds uint32        `json:"affinitySeconds,omitempty"`
	Backends        []BackendView `json:"backends"`
}

// BackendView is one backend slot of a frontend.
type BackendView struct {
	ID      uint32 `json:"id"`
	Address string `json:"address"`
}

// Inspect reads the programmed frontends and their backends, in address
// order, the backends in slot order.
func Inspect(lb maps.LB4) ([]FrontendView, error) {
	s, err := readLB4(lb)
	if err != nil {
		return nil, err
	}
	fes := make([]Frontend, 0, len(s.frontends))
	for fe := range s.frontends {
		fes = append(fes, fe)
	}
	slices.SortFunc(fes, compareFrontends)
	out := make([]FrontendView, 0, len(fes))
	for _, fe := range fes {
		p := s.frontends[fe]
		v := FrontendView{
			Frontend: netip.AddrPortFrom(fe.Addr, fe.Port).String(),
			Protocol: fe.Proto.String(),
			RevNatID: p.revNat(),
			Empty:    "reject",
			Backends: []BackendView{},
		}
		if p.master.Flags&bpf.SluiceLbServiceFlagsSVC_F_DROP_EMPTY != 0 {
			v.Empty = "drop"
		}
		if p.affinity() {
			v.AffinitySeconds = p.master.AffinityTimeout
		}
		for i := 0; i < p.count() && i < len(p.slots); i++ {
			bv := BackendView{ID: p.slots[i], Address: "?"}
			if k, ok := s.backends[p.slots[i]]; ok {
				bv.Address = k.backend().String()
			}
			v.Backends = append(v.Backends, bv)
		}
		out = append(out, v)
	}
	return out, nil
}
