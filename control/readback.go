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
	local     map[uint32]bool     // backends with BE_F_LOCAL
	revNats   map[uint32]Frontend // address and port only
	markers   map[netip.Addr]bool
	frontends map[Frontend]*programmed
	matches   map[bpf.SluiceLb4AffinityMatchKey]bool
	filter    *bpf.SluiceLb4Filter
	// ranges are the source ranges by reverse-NAT id, sorted;
	// badRanges keys no frontend can have written; rangeEntries all.
	ranges       map[uint32][]netip.Prefix
	badRanges    []bpf.SluiceLb4SrcRangeKey
	rangeEntries int
}

func readLB4(lb maps.LB4) (*lb4Snapshot, error) {
	s := &lb4Snapshot{
		backends:  map[uint32]backendKey{},
		local:     map[uint32]bool{},
		revNats:   map[uint32]Frontend{},
		markers:   map[netip.Addr]bool{},
		frontends: map[Frontend]*programmed{},
		matches:   map[bpf.SluiceLb4AffinityMatchKey]bool{},
		filter:    &bpf.SluiceLb4Filter{},
		ranges:    map[uint32][]netip.Prefix{},
	}
	if f, err := lb.Prefilter.Lookup(0); err == nil {
		s.filter = &f
	} else {
		return nil, fmt.Errorf("read lb4_prefilter: %w", err)
	}
	err := lb.Backends.Each(func(id uint32, be bpf.SluiceLb4Backend) bool {
		if be.Flags&bpf.SluiceLbBackendFlagsBE_F_ACTIVE != 0 && id != 0 {
			s.backends[id] = backendKey{be.Address, be.Port, Protocol(be.Proto)}
			if be.Flags&bpf.SluiceLbBackendFlagsBE_F_LOCAL != 0 {
				s.local[id] = true
			}
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
		if k.Scope > scopeInternal {
			return true // no sluice writes it; left alone
		}
		fe := Frontend{maps.AddrFrom4(k.Address), maps.PortFrom(k.Dport), Protocol(k.Proto)}
		p := s.frontends[fe]
		if p == nil {
			p = &programmed{}
			s.frontends[fe] = p
		}
		if k.Scope == scopeInternal {
			if p.internal == nil {
				p.internal = &programmed{}
			}
			p = p.internal
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
	err = lb.SourceRanges.Each(func(k bpf.SluiceLb4SrcRangeKey, _ uint8) bool {
		s.rangeEntries++
		id, p, ok := maps.SourceRangeFrom(k)
		if !ok || id == 0 {
			s.badRanges = append(s.badRanges, k)
			return true
		}
		s.ranges[id] = append(s.ranges[id], p)
		return true
	})
	if err != nil {
		return nil, fmt.Errorf("read lb4_source_ranges: %w", err)
	}
	for _, rs := range s.ranges {
		slices.SortFunc(rs, netip.Prefix.Compare)
	}
	return s, nil
}

// FrontendView is one programmed frontend as `sluice lb list` shows it:
// its scope 0 set (the one every client gets, or with Internal the one
// external clients get) and, for a two-scope frontend, Internal.
type FrontendView struct {
	Frontend string `json:"frontend"`
	Protocol string `json:"protocol"`
	Kind     string `json:"kind"` // ClusterIP, NodePort, ExternalIP or LoadBalancer
	RevNatID uint32 `json:"revNatId"`
	ScopeView
	// AffinitySeconds is the ClientIP session affinity timeout, 0 = none.
	AffinitySeconds uint32 `json:"affinitySeconds,omitempty"`
	// SourceRanges: new flows only from these (loadBalancerSourceRanges).
	SourceRanges []string `json:"sourceRanges,omitempty"`
	// Internal is the set this node's pods and the node itself get
	// (scope 1 of an externalTrafficPolicy: Local frontend).
	Internal *ScopeView `json:"internal,omitempty"`
}

// ScopeView is one set of a frontend's entries.
type ScopeView struct {
	// Empty is what a new flow gets without backends: "reject" or "drop".
	Empty string `json:"whenEmpty"`
	// SNATRemote: new flows to a backend on another node are SNATed to
	// the node's address.
	SNATRemote bool          `json:"snatRemote,omitempty"`
	Backends   []BackendView `json:"backends"`
}

// BackendView is one backend slot of a frontend.
type BackendView struct {
	ID      uint32 `json:"id"`
	Address string `json:"address"`
	Local   bool   `json:"local,omitempty"` // the endpoint is on this node
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
			Frontend:  netip.AddrPortFrom(fe.Addr, fe.Port).String(),
			Protocol:  fe.Proto.String(),
			Kind:      FrontendKind(p.master.Kind).String(),
			RevNatID:  p.revNat(),
			ScopeView: s.scopeView(p),
		}
		if p.affinity() {
			v.AffinitySeconds = p.master.AffinityTimeout
		}
		if p.master.Flags&bpf.SluiceLbServiceFlagsSVC_F_SOURCE_RANGES != 0 {
			v.SourceRanges = []string{}
			for _, pr := range s.ranges[p.revNat()] {
				v.SourceRanges = append(v.SourceRanges, pr.String())
			}
		}
		if p.internal != nil {
			in := s.scopeView(p.internal)
			v.Internal = &in
		}
		out = append(out, v)
	}
	return out, nil
}

func (s *lb4Snapshot) scopeView(p *programmed) ScopeView {
	v := ScopeView{Empty: "reject", Backends: []BackendView{}}
	if p.master.Flags&bpf.SluiceLbServiceFlagsSVC_F_DROP_EMPTY != 0 {
		v.Empty = "drop"
	}
	v.SNATRemote = p.master.Flags&bpf.SluiceLbServiceFlagsSVC_F_SNAT_REMOTE != 0
	for i := 0; i < p.count() && i < len(p.slots); i++ {
		bv := BackendView{ID: p.slots[i], Address: "?", Local: s.local[p.slots[i]]}
		if k, ok := s.backends[p.slots[i]]; ok {
			bv.Address = k.backend().String()
		}
		v.Backends = append(v.Backends, bv)
	}
	return v
}
