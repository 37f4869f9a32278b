package control

import (
	"net/netip"
	"slices"
	"time"

	"github.com/sluice-lb/sluice/bpf"
	"github.com/sluice-lb/sluice/maps"
)

// adopt reads the maps and takes what they hold as programmed: the ids
// conntrack entries name stay in use, and whatever is incomplete or
// orphaned is fixed by the next apply.
func (r *Reconciler) adopt() error {
	snap, err := readLB4(r.lb)
	if err != nil {
		return err
	}
	r.frontends = snap.frontends
	r.backends = map[backendKey]uint32{}
	r.backendKey = snap.backends
	r.backendRef = map[uint32]int{}
	r.backendLocal = snap.local
	r.matches = snap.matches
	r.markers = snap.markers
	r.ipRefs = map[netip.Addr]int{}
	r.prefilter = newPrefilter(snap.filter)
	r.nodeFilter = 0
	r.filterNode()
	if err := r.readNode(); err != nil {
		return err
	}
	// The pools outlive a re-read of the maps: what they hold in
	// quarantine is known nowhere else.
	if r.backendIDs == nil {
		r.backendIDs = newIDPool(r.lb.Backends.Raw().MaxEntries())
		r.revNatIDs = newIDPool(r.lb.RevNat.Raw().MaxEntries())
	}
	r.serviceCapacity = int(r.lb.Services.Raw().MaxEntries())
	r.rangeCapacity = int(r.lb.SourceRanges.Raw().MaxEntries())
	r.rangeEntries = snap.rangeEntries

	ids := make([]uint32, 0, len(snap.backends))
	for id, k := range snap.backends {
		r.backends[k] = id
		ids = append(ids, id)
	}
	now := time.Now()
	slices.Sort(ids)
	r.backendIDs.adoptInUse(ids, now)
	ids = make([]uint32, 0, len(snap.revNats))
	for id := range snap.revNats {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	r.revNatIDs.adoptInUse(ids, now)
	owned := map[uint32]bool{}
	wantedMatches := map[bpf.SluiceLb4AffinityMatchKey]bool{}
	r.serviceEntries = len(r.markers)
	rangesOwned := map[uint32]bool{}
	for fe, p := range r.frontends {
		if p.hasMaster {
			owned[p.revNat()] = true
			if rs := snap.ranges[p.revNat()]; len(rs) > 0 && !rangesOwned[p.revNat()] {
				rangesOwned[p.revNat()] = true
				p.ranges = rs
			}
		}
		if p.marks() {
			r.ipRefs[fe.Addr]++
		}
		p.sets(func(_ uint8, s *programmed) {
			if s.hasMaster {
				r.serviceEntries++
			}
			s.backends = make([]Backend, 0, min(s.count(), len(s.slots)))
			for i, id := range s.slots {
				if id == 0 {
					continue
				}
				r.serviceEntries++
				r.backendRef[id]++
				if i < s.count() {
					if k, ok := r.backendKey[id]; ok {
						b := k.backend()
						b.Local = r.backendLocal[id]
						s.backends = append(s.backends, b)
					} else {
						s.backends = append(s.backends, Backend{})
					}
					if p.affinity() {
						wantedMatches[matchKey(id, p.revNat())] = true
					}
				}
			}
		})
		r.prefilter.frontend(fe, p, 1)
	}
	// The prefilter the map holds may lack bits the adopted state needs
	// (or carry extra ones): the next apply writes it either way.
	r.prefilter.grow, r.prefilter.shrink = true, true
	r.prefilter.settle()

	r.orphanBackends, r.orphanRevNats, r.orphanMatches, r.markersToFix = nil, nil, nil, nil
	r.orphanRanges = snap.badRanges
	for id, rs := range snap.ranges {
		if !rangesOwned[id] {
			for _, pr := range rs {
				r.orphanRanges = append(r.orphanRanges, maps.SourceRangeKey(id, pr))
			}
		}
	}
	for id := range r.backendKey {
		if r.backendRef[id] == 0 {
			r.orphanBackends = append(r.orphanBackends, id)
		}
	}
	for _, id := range ids {
		if !owned[id] {
			r.orphanRevNats = append(r.orphanRevNats, id)
		}
	}
	for k := range r.matches {
		if !wantedMatches[k] {
			r.orphanMatches = append(r.orphanMatches, k)
		}
	}
	for a := range r.ipRefs {
		if !r.markers[a] {
			r.markersToFix = append(r.markersToFix, a)
		}
	}
	for a := range r.markers {
		if r.ipRefs[a] == 0 {
			r.markersToFix = append(r.markersToFix, a)
		}
	}
	r.stale = false
	r.justAdopted = true
	return nil
}
