package control

import (
	"net/netip"

	"github.com/sluice-lb/sluice/bpf"
	"github.com/sluice-lb/sluice/maps"
)

// Source ranges (rule 21): lb4_source_ranges holds one entry per allowed
// CIDR of a frontend, keyed by its reverse-NAT id. A range is added before
// the master's SVC_F_SOURCE_RANGES that makes the datapath look for it,
// and removed after the master no longer needs it (the flag cleared, or
// the frontend gone): during a change both the old and the new ranges
// are allowed, never neither.

// addRanges writes the ranges frontends gained (or lack, after adopting).
func (r *Reconciler) addRanges(p *plan) error {
	var keys []bpf.SluiceLb4SrcRangeKey
	for _, pf := range p.writes {
		have := rangeSet(pf.old, pf.new.revNat())
		for _, pr := range pf.new.ranges {
			if !have[pr] {
				keys = append(keys, maps.SourceRangeKey(pf.new.revNat(), pr))
			}
		}
	}
	if len(keys) == 0 {
		return nil
	}
	r.rangeEntries += len(keys)
	return r.write("add source ranges", r.lb.SourceRanges.PutAll(keys, ones(len(keys))))
}

// removeRanges deletes the ranges frontends lost, those of removed
// frontends (whose reverse-NAT ids are freed next), and orphans.
func (r *Reconciler) removeRanges(p *plan) error {
	keys := r.orphanRanges
	for _, pf := range p.writes {
		if pf.old == nil {
			continue
		}
		keep := rangeSet(pf.new, pf.old.revNat())
		for _, pr := range pf.old.ranges {
			if !keep[pr] {
				keys = append(keys, maps.SourceRangeKey(pf.old.revNat(), pr))
			}
		}
	}
	for _, fe := range p.removed {
		old := r.frontends[fe]
		for _, pr := range old.ranges {
			keys = append(keys, maps.SourceRangeKey(old.revNat(), pr))
		}
	}
	r.orphanRanges = nil
	if len(keys) == 0 {
		return nil
	}
	r.rangeEntries -= len(keys)
	return r.write("delete source ranges", r.lb.SourceRanges.DeleteAll(keys))
}

// rangeSet is the set of p's ranges if they are held under revNat.
func rangeSet(p *programmed, revNat uint32) map[netip.Prefix]bool {
	if p == nil || p.revNat() != revNat || len(p.ranges) == 0 {
		return nil
	}
	s := make(map[netip.Prefix]bool, len(p.ranges))
	for _, pr := range p.ranges {
		s[pr] = true
	}
	return s
}

func ones(n int) []uint8 {
	v := make([]uint8, n)
	for i := range v {
		v[i] = 1
	}
	return v
}
