package control

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
)

// plan is what one apply writes and removes, decided before any write.
type plan struct {
	writes   []plannedFrontend
	removed  []Frontend
	problems []Problem
	stats    ApplyStats
}

func (p *plan) empty() bool { return len(p.writes) == 0 && len(p.removed) == 0 }

// plannedFrontend is a frontend the apply writes.
type plannedFrontend struct {
	fe  Frontend
	sp  *ServicePort
	old *programmed // nil when new
	new *programmed
	// newRevNat: new.revNat() was allocated by this plan and must be
	// written.
	newRevNat bool
}

// planAll compares every frontend of s and every programmed one.
func (r *Reconciler) planAll(s *State) *plan {
	p := &plan{}
	for fe := range r.frontends {
		if s.Ports[fe] == nil {
			p.removed = append(p.removed, fe)
		}
	}
	var fes []Frontend
	for fe, sp := range s.Ports {
		if !r.upToDate(r.frontends[fe], sp) {
			fes = append(fes, fe)
		}
	}
	r.allocate(p, s, fes)
	return p
}

// planFrontends compares only the frontends in changed.
func (r *Reconciler) planFrontends(s *State, changed []Frontend) *plan {
	p := &plan{}
	var fes []Frontend
	for _, fe := range changed {
		sp, old := s.Ports[fe], r.frontends[fe]
		switch {
		case sp == nil && old != nil:
			p.removed = append(p.removed, fe)
		case sp != nil && !r.upToDate(old, sp):
			fes = append(fes, fe)
		}
	}
	r.allocate(p, s, fes)
	return p
}

// upToDate reports whether a programmed frontend holds exactly what sp
// asks for: every field of its master entries, its sets of backends with
// their locality, the affinity match entries of those backends, and its
// source ranges.
func (r *Reconciler) upToDate(old *programmed, sp *ServicePort) bool {
	if old == nil || !old.complete() || old.master != masterOf(sp, old.revNat()) || !r.setUpToDate(old, sp.Backends, sp) {
		return false
	}
	if (old.internal == nil) != (sp.Internal == nil) {
		return false
	}
	if sp.Internal != nil && (old.internal.master != internalMasterOf(sp, old.revNat()) || !r.setUpToDate(old.internal, sp.Internal.Backends, sp)) {
		return false
	}
	return slices.Equal(old.ranges, rangesOf(sp))
}

// setUpToDate reports whether one programmed set holds want.
func (r *Reconciler) setUpToDate(old *programmed, want []Backend, sp *ServicePort) bool {
	if len(old.backends) != len(want) {
		return false
	}
	for i, b := range old.backends {
		j, found := slices.BinarySearchFunc(want, b, Backend.Compare)
		if !found || r.backendLocal[old.slots[i]] != want[j].Local {
			return false
		}
	}
	if sp.AffinityTimeout > 0 {
		for _, id := range old.slots {
			if !r.matches[matchKey(id, old.revNat())] {
				return false
			}
		}
	}
	return true
}

// rangesOf is sp's source ranges as lb4_source_ranges holds them: IPv4,
// masked, sorted, unique.
func rangesOf(sp *ServicePort) []netip.Prefix {
	if len(sp.SourceRanges) == 0 {
		return nil
	}
	out := make([]netip.Prefix, 0, len(sp.SourceRanges))
	for _, p := range sp.SourceRanges {
		if p.IsValid() && p.Addr().Is4() {
			out = append(out, p.Masked())
		}
	}
	slices.SortFunc(out, netip.Prefix.Compare)
	return slices.Compact(out)
}

// allocate plans the frontends fes of s, in a stable order: slots, backend
// ids and reverse-NAT ids. A frontend that does not fit the maps keeps its
// current programming or, if new, is left out; either way it is reported.
func (r *Reconciler) allocate(p *plan, s *State, fes []Frontend) {
	slices.SortFunc(fes, compareFrontends)
	var (
		pending = map[backendKey]uint32{} // ids allocated by this plan
		entries = r.serviceEntries
		ranges  = r.rangeEntries
		markers = map[netip.Addr]bool{}
	)
	refuse := func(sp *ServicePort, format string, args ...any) {
		p.problems = append(p.problems, Problem{
			Object: "Service " + sp.Name.Namespace + "/" + sp.Name.Name,
			Kind:   SkipMapFull,
			Reason: fmt.Sprintf("port %s (%s): ", sp.Name.Port, sp.Frontend) + fmt.Sprintf(format, args...),
		})
	}
	for _, fe := range fes {
		sp := s.Ports[fe]
		old := r.frontends[fe]
		if len(sp.Backends) > 65535 || (sp.Internal != nil && len(sp.Internal.Backends) > 65535) {
			refuse(sp, "more than 65535 endpoints, the datapath holds at most 65535 per service port")
			continue
		}
		// Entries this frontend adds to lb4_services and
		// lb4_source_ranges, counted before any id is taken so a
		// refusal leaves nothing behind.
		grow := 1 + len(sp.Backends)
		if sp.Internal != nil {
			grow += 1 + len(sp.Internal.Backends)
		}
		if old != nil {
			old.sets(func(_ uint8, o *programmed) { grow -= 1 + len(o.slots) })
		}
		if sp.Kind == KindClusterIP && r.ipRefs[fe.Addr] == 0 && !markers[fe.Addr] {
			grow++
		}
		if entries+grow > r.serviceCapacity {
			refuse(sp, "lb4_services is full (%d entries)", r.serviceCapacity)
			continue
		}
		wantRanges := rangesOf(sp)
		rangeGrow := len(wantRanges)
		if old != nil {
			rangeGrow -= len(old.ranges)
		}
		if rangeGrow > 0 && ranges+rangeGrow > r.rangeCapacity {
			refuse(sp, "lb4_source_ranges is full (%d entries)", r.rangeCapacity)
			continue
		}
		var fresh []backendKey
		full := false
		// take gives each backend of one set its id: the one it has,
		// else a new one.
		take := func(backends []Backend) []uint32 {
			ids := make([]uint32, len(backends))
			for i, b := range backends {
				if full {
					break
				}
				k := keyOf(b, fe.Proto)
				id, have := r.backends[k]
				if !have {
					id, have = pending[k]
				}
				if !have {
					if id, have = r.backendIDs.alloc(); !have {
						full = true
						break
					}
					pending[k] = id
					fresh = append(fresh, k)
				}
				ids[i] = id
			}
			return ids
		}
		backends := assignSlots(old.set(scopeExternal).backendsOrNil(), sp.Backends)
		ids := take(backends)
		var inBackends []Backend
		var inIDs []uint32
		if sp.Internal != nil {
			inBackends = assignSlots(old.set(scopeInternal).backendsOrNil(), sp.Internal.Backends)
			inIDs = take(inBackends)
		}
		// A frontend adopted without its master entry (an agent stopped
		// mid-apply) has no reverse-NAT id yet.
		revNat, newRevNat := uint32(0), false
		if old != nil && old.revNat() != 0 {
			revNat = old.revNat()
		} else if !full {
			var ok bool
			revNat, ok = r.revNatIDs.alloc()
			full, newRevNat = !ok, ok
		}
		if full {
			for _, k := range fresh {
				r.backendIDs.unalloc(pending[k])
				delete(pending, k)
			}
			refuse(sp, "lb4_backends or lb4_revnat is full")
			continue
		}
		entries += grow
		ranges += rangeGrow
		if sp.Kind == KindClusterIP {
			markers[fe.Addr] = true
		}
		np := &programmed{master: masterOf(sp, revNat), hasMaster: true, slots: ids, backends: backends, ranges: wantRanges}
		if sp.Internal != nil {
			np.internal = &programmed{master: internalMasterOf(sp, revNat), hasMaster: true, slots: inIDs, backends: inBackends}
		}
		p.writes = append(p.writes, plannedFrontend{fe: fe, sp: sp, old: old, newRevNat: newRevNat, new: np})
	}
}

// backendsOrNil is p's backends; nil-safe.
func (p *programmed) backendsOrNil() []Backend {
	if p == nil {
		return nil
	}
	return p.backends
}

// assignSlots orders want (a set) into slots: a backend that stays keeps
// its slot, new ones fill the slots of those that left, then extend; when
// fewer remain, backends move from the end into the holes. So one
// endpoint change rewrites one slot, not every slot after it. A backend
// stays by its identity (address and port), and takes want's Local.
func assignSlots(old, want []Backend) []Backend {
	if len(old) == 0 {
		return slices.Clone(want)
	}
	index := make(map[Backend]int, len(want))
	for i, b := range want {
		index[identity(b)] = i
	}
	placed := make([]bool, len(want))
	out := make([]Backend, 0, max(len(old), len(want)))
	var holes []int
	for _, b := range old {
		if i, ok := index[identity(b)]; ok && !placed[i] {
			placed[i] = true
			out = append(out, want[i])
			continue
		}
		holes = append(holes, len(out))
		out = append(out, Backend{})
	}
	for i, b := range want {
		if placed[i] {
			continue
		}
		if len(holes) > 0 {
			out[holes[0]] = b
			holes = holes[1:]
		} else {
			out = append(out, b)
		}
	}
	for len(holes) > 0 {
		last := len(out) - 1
		if holes[len(holes)-1] == last {
			holes = holes[:len(holes)-1]
		} else {
			out[holes[0]] = out[last]
			holes = holes[1:]
		}
		out = out[:last]
	}
	return out
}

// identity is b without its Local flag: what lb4_backends keys it by
// (with the frontend's protocol).
func identity(b Backend) Backend { return Backend{Addr: b.Addr, Port: b.Port} }

func compareFrontends(a, b Frontend) int {
	return cmp.Or(a.Addr.Compare(b.Addr), cmp.Compare(a.Port, b.Port), cmp.Compare(a.Proto, b.Proto))
}
