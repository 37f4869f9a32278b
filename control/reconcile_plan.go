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
// asks for: every field of its master entry, its set of backends, and the
// affinity match entries of those backends.
func (r *Reconciler) upToDate(old *programmed, sp *ServicePort) bool {
	if old == nil || !old.complete() || old.master != masterOf(sp, old.revNat()) || len(old.backends) != len(sp.Backends) {
		return false
	}
	for _, b := range old.backends {
		if _, found := slices.BinarySearchFunc(sp.Backends, b, Backend.Compare); !found {
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

// allocate plans the frontends fes of s, in a stable order: slots, backend
// ids and reverse-NAT ids. A frontend that does not fit the maps keeps its
// current programming or, if new, is left out; either way it is reported.
func (r *Reconciler) allocate(p *plan, s *State, fes []Frontend) {
	slices.SortFunc(fes, compareFrontends)
	var (
		pending = map[backendKey]uint32{} // ids allocated by this plan
		entries = r.serviceEntries
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
		if len(sp.Backends) > 65535 {
			refuse(sp, "%d endpoints, the datapath holds at most 65535 per service port", len(sp.Backends))
			continue
		}
		// Entries this frontend adds to lb4_services, counted before any
		// id is taken so a refusal leaves nothing behind.
		grow := 1 + len(sp.Backends)
		if old != nil {
			grow -= 1 + len(old.slots)
		}
		if r.ipRefs[fe.Addr] == 0 && !markers[fe.Addr] {
			grow++
		}
		if entries+grow > r.serviceCapacity {
			refuse(sp, "lb4_services is full (%d entries)", r.serviceCapacity)
			continue
		}
		var oldBackends []Backend
		if old != nil {
			oldBackends = old.backends
		}
		backends := assignSlots(oldBackends, sp.Backends)
		var fresh []backendKey
		ids := make([]uint32, len(backends))
		full := false
		for i, b := range backends {
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
		markers[fe.Addr] = true
		p.writes = append(p.writes, plannedFrontend{
			fe: fe, sp: sp, old: old, newRevNat: newRevNat,
			new: &programmed{master: masterOf(sp, revNat), hasMaster: true, slots: ids, backends: backends},
		})
	}
}

// assignSlots orders want (a set) into slots: a backend that stays keeps
// its slot, new ones fill the slots of those that left, then extend; when
// fewer remain, backends move from the end into the holes. So one
// endpoint change rewrites one slot, not every slot after it.
func assignSlots(old, want []Backend) []Backend {
	if len(old) == 0 {
		return slices.Clone(want)
	}
	stays := make(map[Backend]bool, len(want))
	for _, b := range want {
		stays[b] = false
	}
	out := make([]Backend, 0, max(len(old), len(want)))
	var holes []int
	for _, b := range old {
		if placed, ok := stays[b]; ok && !placed {
			stays[b] = true
			out = append(out, b)
			continue
		}
		holes = append(holes, len(out))
		out = append(out, Backend{})
	}
	for _, b := range want {
		if stays[b] {
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

func compareFrontends(a, b Frontend) int {
	return cmp.Or(a.Addr.Compare(b.Addr), cmp.Compare(a.Port, b.Port), cmp.Compare(a.Proto, b.Proto))
}
