package control

import (
	"net/netip"
	"slices"

	"github.com/sluice-lb/sluice/bpf"
	"github.com/sluice-lb/sluice/maps"
)

// execute writes a plan in make-before-break order. Each phase is one
// batched map operation; the order of the phases is the guarantee.
func (r *Reconciler) execute(p *plan) error {
	r.noteLeftUDP(p)
	// The bookkeeping of the new state first (reference counts of bits,
	// backends and service IPs), so each phase knows what it may add or
	// remove.
	// References of the new state before the old one's go, so a bit
	// both need never drops to zero (which would mark the bitmap for a
	// narrowing write that clears nothing).
	for _, pf := range p.writes {
		r.prefilter.frontend(pf.fe, pf.new, 1)
	}
	for _, pf := range p.writes {
		if pf.old != nil {
			r.prefilter.frontend(pf.fe, pf.old, -1)
		}
	}
	for _, fe := range p.removed {
		r.prefilter.frontend(fe, r.frontends[fe], -1)
	}
	steps := []func(*plan) error{
		r.widenPrefilter,
		// The node's address and pod CIDR before any frontend that
		// SNATs to it or tells its own clients by them.
		r.writeNode,
		r.addBackends,
		r.addRevNats,
		r.addMatches,
		// Before the master flag that makes the datapath check them.
		r.addRanges,
		// A new service IP's marker before its first master: no master
		// is ever exposed on an address that is not marked as a
		// service IP (whose other ports must be rejected).
		r.addMarkers,
		r.writeSlots,
		// Scope 1 before the scope 0 master that sends this node's
		// own clients there.
		r.writeInternalMasters,
		r.writeMasters,
		// The new state is live; from here on only what it no longer
		// uses goes.
		r.trimSlots,
		r.removeFrontends,
		r.removeMarkers,
		r.removeMatches,
		r.removeRanges,
		r.freeRevNats,
		r.freeBackends,
		r.narrowPrefilter,
	}
	for _, step := range steps {
		if err := step(p); err != nil {
			return err
		}
	}
	for _, pf := range p.writes {
		r.frontends[pf.fe] = pf.new
	}
	for _, fe := range p.removed {
		delete(r.frontends, fe)
	}
	p.stats.FrontendsWritten = len(p.writes)
	p.stats.FrontendsRemoved = len(p.removed)
	return nil
}

// widenPrefilter lets through what the old and the new state need until
// the new state is complete.
func (r *Reconciler) widenPrefilter(*plan) error {
	r.prefilter.settle()
	if !r.prefilter.grow {
		return nil
	}
	if err := r.write("widen prefilter", r.lb.Prefilter.PutRef(0, r.prefilter.widened())); err != nil {
		return err
	}
	r.prefilter.widenedWritten()
	return nil
}

// addBackends writes the backends the slots will name, and rewrites in
// place those whose locality changed (a flag; the id and the flows naming
// it stay).
func (r *Reconciler) addBackends(p *plan) error {
	var ids []uint32
	var vals []bpf.SluiceLb4Backend
	written := map[uint32]bool{}
	for _, pf := range p.writes {
		pf.new.sets(func(_ uint8, n *programmed) {
			for i, id := range n.slots {
				b := n.backends[i]
				k, have := r.backendKey[id]
				if written[id] || (have && r.backendLocal[id] == b.Local) {
					continue
				}
				written[id] = true
				if !have {
					k = keyOf(b, pf.fe.Proto)
					r.backendKey[id] = k
					r.backends[k] = id
					p.stats.BackendsAdded++
				}
				r.backendLocal[id] = b.Local
				ids = append(ids, id)
				vals = append(vals, backendEntry(k, b.Local))
			}
		})
	}
	if len(ids) == 0 {
		return nil
	}
	return r.write("add backends", r.lb.Backends.PutAll(ids, vals))
}

func backendEntry(k backendKey, local bool) bpf.SluiceLb4Backend {
	v := bpf.SluiceLb4Backend{Address: k.addr, Port: k.port, Proto: uint8(k.proto), Flags: bpf.SluiceLbBackendFlagsBE_F_ACTIVE}
	if local {
		v.Flags |= bpf.SluiceLbBackendFlagsBE_F_LOCAL
	}
	return v
}

func (r *Reconciler) addRevNats(p *plan) error {
	var keys []uint32
	var vals []bpf.SluiceLb4ReverseNat
	for _, pf := range p.writes {
		if pf.newRevNat {
			keys = append(keys, pf.new.revNat())
			vals = append(vals, bpf.SluiceLb4ReverseNat{Address: maps.Addr4(pf.fe.Addr), Port: maps.Port(pf.fe.Port)})
		}
	}
	if len(keys) == 0 {
		return nil
	}
	return r.write("add reverse NAT", r.lb.RevNat.PutAll(keys, vals))
}

// addMatches writes the affinity match entries of every backend of an
// affinity frontend, so a sticky client finds its backend in the set as
// soon as the slots name it.
func (r *Reconciler) addMatches(p *plan) error {
	var keys []bpf.SluiceLb4AffinityMatchKey
	seen := map[bpf.SluiceLb4AffinityMatchKey]bool{}
	for _, pf := range p.writes {
		if !pf.new.affinity() {
			continue
		}
		pf.new.sets(func(_ uint8, n *programmed) {
			for _, id := range n.slots {
				if k := matchKey(id, pf.new.revNat()); !r.matches[k] && !seen[k] {
					seen[k] = true
					keys = append(keys, k)
				}
			}
		})
	}
	if len(keys) == 0 {
		return nil
	}
	if err := r.write("add affinity matches", r.lb.AffinityMatch.PutAll(keys, make([]uint8, len(keys)))); err != nil {
		return err
	}
	for _, k := range keys {
		r.matches[k] = true
	}
	return nil
}

// writeSlots writes every slot, of either scope, whose backend differs;
// slots beyond the old count are not visible until the master says so.
func (r *Reconciler) writeSlots(p *plan) error {
	var keys []bpf.SluiceLb4Key
	var vals []bpf.SluiceLb4Service
	for _, pf := range p.writes {
		pf.new.sets(func(scope uint8, n *programmed) {
			o := pf.old.set(scope)
			for i, id := range n.slots {
				if o != nil && i < len(o.slots) {
					if o.slots[i] == id {
						continue
					}
					if o.slots[i] == 0 {
						r.serviceEntries++
					}
				} else {
					r.serviceEntries++
				}
				keys = append(keys, scopedKey(pf.fe, scope, uint16(i+1)))
				vals = append(vals, bpf.SluiceLb4Service{BackendId: id})
			}
		})
	}
	if len(keys) == 0 {
		return nil
	}
	return r.write("write backend slots", r.lb.Services.PutAll(keys, vals))
}

// writeInternalMasters writes the scope 1 masters that changed.
func (r *Reconciler) writeInternalMasters(p *plan) error {
	return r.writeMastersOf(p, scopeInternal, "write internal frontends")
}

func (r *Reconciler) writeMasters(p *plan) error {
	return r.writeMastersOf(p, scopeExternal, "write frontends")
}

func (r *Reconciler) writeMastersOf(p *plan, scope uint8, phase string) error {
	var keys []bpf.SluiceLb4Key
	var vals []bpf.SluiceLb4Service
	for _, pf := range p.writes {
		n, o := pf.new.set(scope), pf.old.set(scope)
		if n == nil || (o != nil && o.hasMaster && o.master == n.master) {
			continue
		}
		if o == nil || !o.hasMaster {
			r.serviceEntries++
		}
		keys = append(keys, scopedKey(pf.fe, scope, 0))
		vals = append(vals, n.master)
	}
	if len(keys) == 0 {
		return nil
	}
	return r.write(phase, r.lb.Services.PutAll(keys, vals))
}

// addMarkers writes the marker of every service IP that gained its first
// frontend. Only an IP that gained or lost a frontend can change.
// Only ClusterIP frontends count (programmed.marks).
func (r *Reconciler) addMarkers(p *plan) error {
	for _, pf := range p.writes {
		if was, is := pf.old.marks(), pf.new.marks(); was != is {
			if is {
				r.ipRefs[pf.fe.Addr]++
			} else {
				r.ipRefs[pf.fe.Addr]--
			}
			r.markersToFix = append(r.markersToFix, pf.fe.Addr)
		}
	}
	for _, fe := range p.removed {
		if r.frontends[fe].marks() {
			r.ipRefs[fe.Addr]--
			r.markersToFix = append(r.markersToFix, fe.Addr)
		}
	}
	var keys []bpf.SluiceLb4Key
	var vals []bpf.SluiceLb4Service
	added := map[netip.Addr]bool{}
	for _, a := range r.markersToFix {
		if r.ipRefs[a] > 0 && !r.markers[a] && !added[a] {
			added[a] = true
			keys = append(keys, markerKey(a))
			vals = append(vals, bpf.SluiceLb4Service{Flags: bpf.SluiceLbServiceFlagsSVC_F_MARKER})
		}
	}
	if len(keys) == 0 {
		return nil
	}
	if err := r.write("write service IP markers", r.lb.Services.PutAll(keys, vals)); err != nil {
		return err
	}
	for a := range added {
		r.markers[a] = true
		r.serviceEntries++
	}
	return nil
}

// trimSlots deletes the slots beyond a set's new count.
func (r *Reconciler) trimSlots(p *plan) error {
	var keys []bpf.SluiceLb4Key
	for _, pf := range p.writes {
		pf.new.sets(func(scope uint8, n *programmed) {
			o := pf.old.set(scope)
			if o == nil {
				return
			}
			for i := len(n.slots); i < len(o.slots); i++ {
				if o.slots[i] != 0 {
					keys = append(keys, scopedKey(pf.fe, scope, uint16(i+1)))
				}
			}
		})
	}
	if len(keys) == 0 {
		return nil
	}
	r.serviceEntries -= len(keys)
	return r.write("delete backend slots", r.lb.Services.DeleteAll(keys))
}

// removeFrontends deletes removed frontends, and the scope 1 entries of
// frontends that lost theirs (their scope 0 master no longer sends anyone
// there): masters before slots, scope 0 masters before scope 1's.
func (r *Reconciler) removeFrontends(p *plan) error {
	var masters, internal, slots []bpf.SluiceLb4Key
	drop := func(fe Frontend, scope uint8, o *programmed) {
		if o.hasMaster {
			if scope == scopeExternal {
				masters = append(masters, scopedKey(fe, scope, 0))
			} else {
				internal = append(internal, scopedKey(fe, scope, 0))
			}
		}
		for i, id := range o.slots {
			if id != 0 {
				slots = append(slots, scopedKey(fe, scope, uint16(i+1)))
			}
		}
	}
	for _, fe := range p.removed {
		r.frontends[fe].sets(func(scope uint8, o *programmed) { drop(fe, scope, o) })
	}
	for _, pf := range p.writes {
		if pf.new.internal == nil && pf.old != nil && pf.old.internal != nil {
			drop(pf.fe, scopeInternal, pf.old.internal)
		}
	}
	masters = append(masters, internal...)
	if len(masters) > 0 {
		r.serviceEntries -= len(masters)
		if err := r.write("delete frontends", r.lb.Services.DeleteAll(masters)); err != nil {
			return err
		}
	}
	if len(slots) > 0 {
		r.serviceEntries -= len(slots)
		if err := r.write("delete removed frontends' slots", r.lb.Services.DeleteAll(slots)); err != nil {
			return err
		}
	}
	return nil
}

// removeMarkers deletes the markers of addresses left without frontends.
func (r *Reconciler) removeMarkers(*plan) error {
	var keys []bpf.SluiceLb4Key
	gone := map[netip.Addr]bool{}
	for _, a := range r.markersToFix {
		if r.ipRefs[a] <= 0 {
			delete(r.ipRefs, a)
			if r.markers[a] && !gone[a] {
				gone[a] = true
				keys = append(keys, markerKey(a))
			}
		}
	}
	r.markersToFix = nil
	if len(keys) == 0 {
		return nil
	}
	if err := r.write("delete service IP markers", r.lb.Services.DeleteAll(keys)); err != nil {
		return err
	}
	for a := range gone {
		delete(r.markers, a)
		r.serviceEntries--
	}
	return nil
}

// removeMatches deletes the match entries of backends that left an
// affinity frontend's set (or the frontend, or its affinity), and orphans.
func (r *Reconciler) removeMatches(p *plan) error {
	seen := map[bpf.SluiceLb4AffinityMatchKey]bool{}
	// An orphan found when adopting (its slot was missing) may be wanted
	// again by the frontend this plan completed.
	for _, pf := range p.writes {
		if pf.new.affinity() {
			pf.new.sets(func(_ uint8, n *programmed) {
				for _, id := range n.slots {
					seen[matchKey(id, pf.new.revNat())] = true
				}
			})
		}
	}
	var keys []bpf.SluiceLb4AffinityMatchKey
	for _, k := range r.orphanMatches {
		if !seen[k] {
			seen[k] = true
			keys = append(keys, k)
		}
	}
	drop := func(old *programmed, keep func(id uint32) bool) {
		if old == nil || !old.affinity() {
			return
		}
		old.sets(func(_ uint8, o *programmed) {
			for _, id := range o.slots {
				k := matchKey(id, old.revNat())
				if id != 0 && r.matches[k] && !keep(id) && !seen[k] {
					seen[k] = true
					keys = append(keys, k)
				}
			}
		})
	}
	for _, pf := range p.writes {
		wanted := map[uint32]bool{}
		if pf.new.affinity() && pf.new.revNat() == pf.old.revNatOrZero() {
			pf.new.sets(func(_ uint8, n *programmed) {
				for _, id := range n.slots {
					wanted[id] = true
				}
			})
		}
		drop(pf.old, func(id uint32) bool { return wanted[id] })
	}
	for _, fe := range p.removed {
		drop(r.frontends[fe], func(uint32) bool { return false })
	}
	r.orphanMatches = nil
	if len(keys) == 0 {
		return nil
	}
	if err := r.write("delete affinity matches", r.lb.AffinityMatch.DeleteAll(keys)); err != nil {
		return err
	}
	for _, k := range keys {
		delete(r.matches, k)
	}
	return nil
}

func (p *programmed) revNatOrZero() uint32 {
	if p == nil {
		return 0
	}
	return p.revNat()
}

// freeRevNats clears the reverse-NAT entries of removed frontends: each
// frontend owns its id.
func (r *Reconciler) freeRevNats(p *plan) error {
	ids := r.orphanRevNats
	for _, fe := range p.removed {
		if id := r.frontends[fe].revNat(); id != 0 {
			ids = append(ids, id)
		}
	}
	r.orphanRevNats = nil
	if len(ids) == 0 {
		return nil
	}
	if err := r.write("clear reverse NAT entries", r.lb.RevNat.PutAll(ids, make([]bpf.SluiceLb4ReverseNat, len(ids)))); err != nil {
		return err
	}
	slices.Sort(ids)
	for _, id := range ids {
		r.revNatIDs.release(id)
	}
	return nil
}

// freeBackends clears the backends no slot names any more. Only a backend
// that lost a reference here (or had none, after an interrupted apply) can
// have lost its last.
func (r *Reconciler) freeBackends(p *plan) error {
	var candidates []uint32
	for _, pf := range p.writes {
		pf.new.sets(func(_ uint8, n *programmed) {
			for _, id := range n.slots {
				r.backendRef[id]++
			}
		})
	}
	drop := func(old *programmed) {
		old.sets(func(_ uint8, o *programmed) {
			for _, id := range o.slots {
				if id != 0 {
					r.backendRef[id]--
					candidates = append(candidates, id)
				}
			}
		})
	}
	for _, pf := range p.writes {
		if pf.old != nil {
			drop(pf.old)
		}
	}
	for _, fe := range p.removed {
		drop(r.frontends[fe])
	}
	candidates = append(candidates, r.orphanBackends...)
	r.orphanBackends = nil
	var ids []uint32
	for _, id := range candidates {
		if k, ok := r.backendKey[id]; ok && r.backendRef[id] <= 0 {
			ids = append(ids, id)
			delete(r.backendKey, id) // also dedupes candidates
			delete(r.backends, k)
			delete(r.backendLocal, id)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	if err := r.write("clear backends", r.lb.Backends.PutAll(ids, make([]bpf.SluiceLb4Backend, len(ids)))); err != nil {
		return err
	}
	slices.Sort(ids)
	for _, id := range ids {
		delete(r.backendRef, id)
		r.backendIDs.release(id)
	}
	p.stats.BackendsRemoved = len(ids)
	return nil
}

// narrowPrefilter clears the bits the new state no longer needs.
func (r *Reconciler) narrowPrefilter(*plan) error {
	if !r.prefilter.shrink {
		return nil
	}
	if err := r.write("narrow prefilter", r.lb.Prefilter.PutRef(0, r.prefilter.want)); err != nil {
		return err
	}
	r.prefilter.narrowed()
	return nil
}
