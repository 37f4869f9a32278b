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
	for _, pf := range p.writes {
		if pf.old != nil {
			r.prefilter.frontend(pf.fe, pf.old.backends, -1)
		}
		r.prefilter.frontend(pf.fe, pf.new.backends, 1)
	}
	for _, fe := range p.removed {
		r.prefilter.frontend(fe, r.frontends[fe].backends, -1)
	}
	steps := []func(*plan) error{
		r.widenPrefilter,
		r.addBackends,
		r.addRevNats,
		r.addMatches,
		// A new service IP's marker before its first master: no master
		// is ever exposed on an address that is not marked as a
		// service IP (whose other ports must be rejected).
		r.addMarkers,
		r.writeSlots,
		r.writeMasters,
		// The new state is live; from here on only what it no longer
		// uses goes.
		r.trimSlots,
		r.removeFrontends,
		r.removeMarkers,
		r.removeMatches,
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
	if !r.prefilter.grow {
		return nil
	}
	if err := r.write("widen prefilter", r.lb.Prefilter.PutRef(0, r.prefilter.widened())); err != nil {
		return err
	}
	r.prefilter.widenedWritten()
	return nil
}

func (r *Reconciler) addBackends(p *plan) error {
	var ids []uint32
	var vals []bpf.SluiceLb4Backend
	for _, pf := range p.writes {
		for i, id := range pf.new.slots {
			if _, have := r.backendKey[id]; have {
				continue
			}
			k := keyOf(pf.new.backends[i], pf.fe.Proto)
			r.backendKey[id] = k
			r.backends[k] = id
			ids = append(ids, id)
			vals = append(vals, bpf.SluiceLb4Backend{
				Address: k.addr, Port: k.port, Proto: uint8(k.proto),
				Flags: bpf.SluiceLbBackendFlagsBE_F_ACTIVE,
			})
		}
	}
	if len(ids) == 0 {
		return nil
	}
	p.stats.BackendsAdded = len(ids)
	return r.write("add backends", r.lb.Backends.PutAll(ids, vals))
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
	for _, pf := range p.writes {
		if !pf.new.affinity() {
			continue
		}
		for _, id := range pf.new.slots {
			if k := matchKey(id, pf.new.revNat()); !r.matches[k] {
				keys = append(keys, k)
			}
		}
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

// writeSlots writes every slot whose backend differs; slots beyond the old
// count are not visible until the master says so.
func (r *Reconciler) writeSlots(p *plan) error {
	var keys []bpf.SluiceLb4Key
	var vals []bpf.SluiceLb4Service
	for _, pf := range p.writes {
		for i, id := range pf.new.slots {
			if pf.old != nil && i < len(pf.old.slots) {
				if pf.old.slots[i] == id {
					continue
				}
				if pf.old.slots[i] == 0 {
					r.serviceEntries++
				}
			} else {
				r.serviceEntries++
			}
			keys = append(keys, lbKey(pf.fe, uint16(i+1)))
			vals = append(vals, bpf.SluiceLb4Service{BackendId: id})
		}
	}
	if len(keys) == 0 {
		return nil
	}
	return r.write("write backend slots", r.lb.Services.PutAll(keys, vals))
}

func (r *Reconciler) writeMasters(p *plan) error {
	var keys []bpf.SluiceLb4Key
	var vals []bpf.SluiceLb4Service
	for _, pf := range p.writes {
		if pf.old != nil && pf.old.hasMaster && pf.old.master == pf.new.master {
			continue
		}
		if pf.old == nil || !pf.old.hasMaster {
			r.serviceEntries++
		}
		keys = append(keys, lbKey(pf.fe, 0))
		vals = append(vals, pf.new.master)
	}
	if len(keys) == 0 {
		return nil
	}
	return r.write("write frontends", r.lb.Services.PutAll(keys, vals))
}

// addMarkers writes the marker of every service IP that gained its first
// frontend. Only an IP that gained or lost a frontend can change.
func (r *Reconciler) addMarkers(p *plan) error {
	for _, pf := range p.writes {
		if pf.old == nil {
			r.ipRefs[pf.fe.Addr]++
			r.markersToFix = append(r.markersToFix, pf.fe.Addr)
		}
	}
	for _, fe := range p.removed {
		r.ipRefs[fe.Addr]--
		r.markersToFix = append(r.markersToFix, fe.Addr)
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

// trimSlots deletes the slots beyond a frontend's new count.
func (r *Reconciler) trimSlots(p *plan) error {
	var keys []bpf.SluiceLb4Key
	for _, pf := range p.writes {
		if pf.old == nil {
			continue
		}
		for i := len(pf.new.slots); i < len(pf.old.slots); i++ {
			if pf.old.slots[i] != 0 {
				keys = append(keys, lbKey(pf.fe, uint16(i+1)))
			}
		}
	}
	if len(keys) == 0 {
		return nil
	}
	r.serviceEntries -= len(keys)
	return r.write("delete backend slots", r.lb.Services.DeleteAll(keys))
}

// removeFrontends deletes removed frontends, master entry before slots.
func (r *Reconciler) removeFrontends(p *plan) error {
	var masters, slots []bpf.SluiceLb4Key
	for _, fe := range p.removed {
		old := r.frontends[fe]
		if old.hasMaster {
			masters = append(masters, lbKey(fe, 0))
		}
		for i, id := range old.slots {
			if id != 0 {
				slots = append(slots, lbKey(fe, uint16(i+1)))
			}
		}
	}
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
	keys := r.orphanMatches
	drop := func(old *programmed, keep func(id uint32) bool) {
		if old == nil || !old.affinity() {
			return
		}
		for _, id := range old.slots {
			k := matchKey(id, old.revNat())
			if id != 0 && r.matches[k] && !keep(id) {
				keys = append(keys, k)
			}
		}
	}
	for _, pf := range p.writes {
		wanted := map[uint32]bool{}
		if pf.new.affinity() && pf.new.revNat() == pf.old.revNatOrZero() {
			for _, id := range pf.new.slots {
				wanted[id] = true
			}
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
		for _, id := range pf.new.slots {
			r.backendRef[id]++
		}
	}
	drop := func(old *programmed) {
		for _, id := range old.slots {
			if id != 0 {
				r.backendRef[id]--
				candidates = append(candidates, id)
			}
		}
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
