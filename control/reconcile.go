package control

import (
	"cmp"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"

	"github.com/sluice-lb/sluice/bpf"
	"github.com/sluice-lb/sluice/maps"
)

// Reconciler programs a State into the lb4 maps. It keeps a copy of what it
// programmed, read back from the maps when it starts so that a restarted
// agent keeps the backend and reverse-NAT ids existing conntrack entries
// refer to.
//
// Every Apply is make-before-break: backends and reverse-NAT entries are
// written before the slots that name them, slots before the master entry
// whose count exposes them, and removals happen in the opposite order, so
// a packet never sees a half-written service.
//
// Apply's cost follows the size of the change, not of the state: frontends
// whose backends did not change are compared and skipped, and backends are
// reference-counted rather than recounted.
type Reconciler struct {
	lb  maps.LB4
	log *slog.Logger

	frontends  map[Frontend]*programmed
	backends   map[backendKey]uint32 // programmed backend -> id
	backendKey map[uint32]backendKey // the inverse
	backendRef map[uint32]int        // slots naming each backend id
	// Left by an agent stopped part-way, found when adopting, fixed by the
	// next Apply: backends no slot names, reverse-NAT entries no frontend
	// owns, and service IPs whose marker entry is missing or superfluous.
	orphanBackends []uint32
	orphanRevNats  []uint32
	markersToFix   []netip.Addr
	markers        map[netip.Addr]bool  // marker entries present
	ipRefs         map[netip.Addr]int   // frontends per service IP
	filter         *bpf.SluiceLb4Filter // as programmed in lb4_prefilter
	backendIDs     *idPool
	revNatIDs      *idPool
	// serviceEntries counts entries in lb4_services; capacity its max.
	serviceEntries, serviceCapacity int
	// stale is set when an Apply failed part-way: the next Apply reads
	// the maps again instead of trusting the in-memory copy.
	stale bool
}

// backendKey identifies a backend in lb4_backends: IPv4 address and port
// as the map holds them (network order), and protocol. Compact, since the
// reconciler keeps one per backend.
type backendKey struct {
	addr  uint32
	port  uint16
	proto Protocol
}

func keyOf(b Backend, p Protocol) backendKey {
	return backendKey{maps.Addr4(b.Addr), maps.Port(b.Port), p}
}

func (k backendKey) backend() Backend {
	return Backend{Addr: maps.AddrFrom4(k.addr), Port: maps.PortFrom(k.port)}
}

type programmed struct {
	revNat   uint32
	count    int       // the master entry's slot count (0 when missing)
	slots    []uint32  // backend id of slot i+1; 0 where no slot entry exists
	backends []Backend // what slots[:count] hold, in order
}

// complete reports whether the frontend is fully programmed: a master
// entry, every counted slot, nothing beyond.
func (p *programmed) complete() bool {
	if p.revNat == 0 || p.count != len(p.slots) {
		return false
	}
	return !slices.Contains(p.slots, 0)
}

// ApplyStats says what one Apply changed.
type ApplyStats struct {
	FrontendsWritten, FrontendsRemoved int
	BackendsAdded, BackendsRemoved     int
}

// NewReconciler adopts whatever the maps already hold.
func NewReconciler(lb maps.LB4, log *slog.Logger) (*Reconciler, error) {
	r := &Reconciler{lb: lb, log: log}
	if err := r.adopt(); err != nil {
		return nil, err
	}
	return r, nil
}

// Frontends returns how many frontends are programmed.
func (r *Reconciler) Frontends() int { return len(r.frontends) }

func (r *Reconciler) adopt() error {
	snap, err := readLB4(r.lb)
	if err != nil {
		return err
	}
	r.frontends = snap.frontends
	r.backends = map[backendKey]uint32{}
	r.backendKey = snap.backends
	r.backendRef = map[uint32]int{}
	r.markers = snap.markers
	r.ipRefs = map[netip.Addr]int{}
	r.filter = snap.filter
	r.backendIDs = newIDPool(r.lb.Backends.Raw().MaxEntries())
	r.revNatIDs = newIDPool(r.lb.RevNat.Raw().MaxEntries())
	r.serviceCapacity = int(r.lb.Services.Raw().MaxEntries())

	ids := make([]uint32, 0, len(snap.backends))
	for id, k := range snap.backends {
		r.backends[k] = id
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		r.backendIDs.adopt(id)
	}
	ids = ids[:0]
	for id := range snap.revNats {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		r.revNatIDs.adopt(id)
	}
	owned := map[uint32]bool{}
	for fe, p := range r.frontends {
		owned[p.revNat] = true
		r.ipRefs[fe.Addr]++
		for i, id := range p.slots {
			if id == 0 {
				continue
			}
			r.backendRef[id]++
			if i < p.count {
				if k, ok := r.backendKey[id]; ok {
					p.backends = append(p.backends, k.backend())
				}
			}
		}
	}
	r.orphanBackends, r.orphanRevNats, r.markersToFix = nil, nil, nil
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
	r.serviceEntries = r.countServiceEntries()
	r.stale = false
	return nil
}

// plannedFrontend is a frontend that Apply writes.
type plannedFrontend struct {
	fe  Frontend
	old *programmed // nil when new
	new *programmed
	// newRevNat: new.revNat was allocated by this plan and must be written.
	newRevNat bool
}

// Apply programs s. Services that cannot be programmed (a full map) are
// returned as problems and keep what they had; an error means a map write
// failed and the next Apply starts from what the maps hold.
func (r *Reconciler) Apply(s *State) (ApplyStats, []Problem, error) {
	var stats ApplyStats
	if r.stale {
		if err := r.adopt(); err != nil {
			return stats, nil, err
		}
	}
	r.stale = true // cleared once every phase succeeded

	plan, removed, problems := r.plan(s)
	if len(plan) == 0 && len(removed) == 0 && !r.hasOrphans() {
		r.stale = false
		return stats, problems, nil
	}

	// The state after this Apply, for the prefilter and the markers.
	next := make(map[Frontend]*programmed, len(r.frontends))
	for fe, p := range r.frontends {
		next[fe] = p
	}
	for _, fe := range removed {
		delete(next, fe)
	}
	for _, pf := range plan {
		next[pf.fe] = pf.new
	}

	// Phase 0: the prefilter lets through what the old and the new state
	// need until the new state is complete.
	want := filterOf(next)
	union, grew := filterUnion(r.filter, want)
	if grew {
		if err := r.lb.Prefilter.Put(0, *union); err != nil {
			return stats, problems, fmt.Errorf("write prefilter: %w", err)
		}
	}

	// Phase 1: new backends.
	var beIDs []uint32
	var beVals []bpf.SluiceLb4Backend
	for _, pf := range plan {
		for i, id := range pf.new.slots {
			if _, have := r.backendKey[id]; have {
				continue
			}
			k := keyOf(pf.new.backends[i], pf.fe.Proto)
			r.backendKey[id] = k
			r.backends[k] = id
			beIDs = append(beIDs, id)
			beVals = append(beVals, bpf.SluiceLb4Backend{
				Address: k.addr, Port: k.port, Proto: uint8(k.proto),
				Flags: bpf.SluiceLbBackendFlagsBE_F_ACTIVE,
			})
		}
	}
	if err := r.lb.Backends.PutAll(beIDs, beVals); err != nil {
		return stats, problems, fmt.Errorf("add backends: %w", err)
	}
	stats.BackendsAdded = len(beIDs)

	// Phase 2: reverse NAT of new frontends.
	var rnKeys []uint32
	var rnVals []bpf.SluiceLb4ReverseNat
	for _, pf := range plan {
		if pf.newRevNat {
			rnKeys = append(rnKeys, pf.new.revNat)
			rnVals = append(rnVals, bpf.SluiceLb4ReverseNat{Address: maps.Addr4(pf.fe.Addr), Port: maps.Port(pf.fe.Port)})
		}
	}
	if err := r.lb.RevNat.PutAll(rnKeys, rnVals); err != nil {
		return stats, problems, fmt.Errorf("add reverse NAT entries: %w", err)
	}

	// Phase 3: backend slots that differ, then phase 4: master entries.
	var slotKeys, masterKeys []bpf.SluiceLb4Key
	var slotVals, masterVals []bpf.SluiceLb4Service
	for _, pf := range plan {
		for i, id := range pf.new.slots {
			if pf.old != nil && i < len(pf.old.slots) && pf.old.slots[i] == id {
				continue
			}
			slotKeys = append(slotKeys, lbKey(pf.fe, uint16(i+1)))
			slotVals = append(slotVals, bpf.SluiceLb4Service{BackendId: id})
		}
		if pf.old == nil || pf.old.count != pf.new.count || pf.old.revNat != pf.new.revNat {
			masterKeys = append(masterKeys, lbKey(pf.fe, 0))
			masterVals = append(masterVals, bpf.SluiceLb4Service{Count: uint16(pf.new.count), RevNatId: pf.new.revNat})
		}
	}
	if err := r.lb.Services.PutAll(slotKeys, slotVals); err != nil {
		return stats, problems, fmt.Errorf("write backend slots: %w", err)
	}
	if err := r.lb.Services.PutAll(masterKeys, masterVals); err != nil {
		return stats, problems, fmt.Errorf("write frontends: %w", err)
	}
	stats.FrontendsWritten = len(masterKeys)

	// Phase 5: markers of service IPs that gained their first frontend.
	// Only an IP that gained or lost a frontend can change.
	touched := map[netip.Addr]bool{}
	for _, a := range r.markersToFix {
		touched[a] = true
	}
	for _, pf := range plan {
		if pf.old == nil {
			r.ipRefs[pf.fe.Addr]++
			touched[pf.fe.Addr] = true
		}
	}
	for _, fe := range removed {
		r.ipRefs[fe.Addr]--
		touched[fe.Addr] = true
	}
	var mkKeys, rmMarkers []bpf.SluiceLb4Key
	var mkVals []bpf.SluiceLb4Service
	for a := range touched {
		switch {
		case r.ipRefs[a] > 0 && !r.markers[a]:
			mkKeys = append(mkKeys, markerKey(a))
			mkVals = append(mkVals, bpf.SluiceLb4Service{Flags: bpf.SluiceLbServiceFlagsSVC_F_MARKER})
		case r.ipRefs[a] <= 0:
			delete(r.ipRefs, a)
			if r.markers[a] {
				rmMarkers = append(rmMarkers, markerKey(a))
			}
		}
	}
	if err := r.lb.Services.PutAll(mkKeys, mkVals); err != nil {
		return stats, problems, fmt.Errorf("write service IP markers: %w", err)
	}
	for _, k := range mkKeys {
		r.markers[maps.AddrFrom4(k.Address)] = true
	}

	// The new state is live; from here on only what it no longer uses goes.
	// Phase 6: slots beyond a frontend's new count.
	var delKeys []bpf.SluiceLb4Key
	for _, pf := range plan {
		if pf.old == nil {
			continue
		}
		for i := len(pf.new.slots); i < len(pf.old.slots); i++ {
			if pf.old.slots[i] != 0 {
				delKeys = append(delKeys, lbKey(pf.fe, uint16(i+1)))
			}
		}
	}
	if err := r.lb.Services.DeleteAll(delKeys); err != nil {
		return stats, problems, fmt.Errorf("delete backend slots: %w", err)
	}
	// Phase 7: removed frontends, master entry before its slots.
	var rmMasters, rmSlots []bpf.SluiceLb4Key
	for _, fe := range removed {
		rmMasters = append(rmMasters, lbKey(fe, 0))
		for i, id := range r.frontends[fe].slots {
			if id != 0 {
				rmSlots = append(rmSlots, lbKey(fe, uint16(i+1)))
			}
		}
	}
	if err := r.lb.Services.DeleteAll(rmMasters); err != nil {
		return stats, problems, fmt.Errorf("delete frontends: %w", err)
	}
	if err := r.lb.Services.DeleteAll(rmSlots); err != nil {
		return stats, problems, fmt.Errorf("delete backend slots: %w", err)
	}
	stats.FrontendsRemoved = len(rmMasters)
	// Phase 8: markers of addresses without frontends.
	if err := r.lb.Services.DeleteAll(rmMarkers); err != nil {
		return stats, problems, fmt.Errorf("delete service IP markers: %w", err)
	}
	for _, k := range rmMarkers {
		delete(r.markers, maps.AddrFrom4(k.Address))
	}
	r.markersToFix = nil

	// Reference counts of the new state; a backend can only have lost its
	// last reference if one was dropped here (or it had none, after an
	// interrupted apply).
	for _, pf := range plan {
		for _, id := range pf.new.slots {
			r.backendRef[id]++
		}
	}
	var candidates []uint32
	dropRefs := func(p *programmed) {
		for _, id := range p.slots {
			if id != 0 {
				r.backendRef[id]--
				candidates = append(candidates, id)
			}
		}
	}
	for _, pf := range plan {
		if pf.old != nil {
			dropRefs(pf.old)
		}
	}
	// Each frontend owns its reverse-NAT id: the removed ones free theirs.
	rmRevNat := r.orphanRevNats
	for _, fe := range removed {
		dropRefs(r.frontends[fe])
		if id := r.frontends[fe].revNat; id != 0 {
			rmRevNat = append(rmRevNat, id)
		}
	}
	r.frontends = next
	r.serviceEntries = r.countServiceEntries()

	// Phase 9: reverse NAT entries no frontend uses.
	if err := r.lb.RevNat.PutAll(rmRevNat, make([]bpf.SluiceLb4ReverseNat, len(rmRevNat))); err != nil {
		return stats, problems, fmt.Errorf("clear reverse NAT entries: %w", err)
	}
	slices.Sort(rmRevNat)
	for _, id := range rmRevNat {
		r.revNatIDs.release(id)
	}
	r.orphanRevNats = nil
	// Phase 10: backends no slot names.
	for _, id := range r.orphanBackends {
		candidates = append(candidates, id)
	}
	r.orphanBackends = nil
	var rmBackends []uint32
	for _, id := range candidates {
		if k, ok := r.backendKey[id]; ok && r.backendRef[id] <= 0 {
			rmBackends = append(rmBackends, id)
			delete(r.backendKey, id) // also dedupes candidates
			delete(r.backends, k)
		}
	}
	if err := r.lb.Backends.PutAll(rmBackends, make([]bpf.SluiceLb4Backend, len(rmBackends))); err != nil {
		return stats, problems, fmt.Errorf("clear backends: %w", err)
	}
	slices.Sort(rmBackends)
	for _, id := range rmBackends {
		delete(r.backendRef, id)
		r.backendIDs.release(id)
	}
	stats.BackendsRemoved = len(rmBackends)
	// Phase 11: the prefilter narrows to the new state.
	if *want != *union {
		if err := r.lb.Prefilter.Put(0, *want); err != nil {
			return stats, problems, fmt.Errorf("write prefilter: %w", err)
		}
	}
	r.filter = want
	r.stale = false
	return stats, problems, nil
}

// hasOrphans reports whether the maps hold entries no frontend uses (left
// by an agent stopped part-way), which an Apply must clear even when the
// state is unchanged.
func (r *Reconciler) hasOrphans() bool {
	return len(r.orphanBackends) > 0 || len(r.orphanRevNats) > 0 || len(r.markersToFix) > 0
}

// plan decides, frontend by frontend in a stable order, which desired
// frontends must be written, with what backend ids and reverse-NAT id, and
// which programmed frontends go. A frontend that does not fit the maps
// keeps its current programming or, if new, is left out; either way it is
// reported.
func (r *Reconciler) plan(s *State) (plan []plannedFrontend, removed []Frontend, problems []Problem) {
	for fe := range r.frontends {
		if s.Ports[fe] == nil {
			removed = append(removed, fe)
		}
	}
	fes := make([]Frontend, 0, len(s.Ports))
	for fe, sp := range s.Ports {
		if old := r.frontends[fe]; old != nil && old.complete() && slices.Equal(old.backends, sp.Backends) {
			continue // unchanged
		}
		fes = append(fes, fe)
	}
	slices.SortFunc(fes, compareFrontends)

	var (
		pending = map[backendKey]uint32{} // ids allocated by this plan
		entries = r.serviceEntries
		markers = map[netip.Addr]bool{}
	)
	refuse := func(sp *ServicePort, format string, args ...any) {
		problems = append(problems, Problem{
			Object: "Service " + sp.Name.Namespace + "/" + sp.Name.Name,
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
		var fresh []backendKey
		ids := make([]uint32, len(sp.Backends))
		full := false
		for i, b := range sp.Backends {
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
		if old != nil && old.revNat != 0 {
			revNat = old.revNat
		} else if !full {
			var ok bool
			revNat, ok = r.revNatIDs.alloc()
			full, newRevNat = !ok, ok
		}
		if full {
			for _, k := range fresh {
				r.backendIDs.release(pending[k])
				delete(pending, k)
			}
			refuse(sp, "lb4_backends or lb4_revnat is full")
			continue
		}
		entries += grow
		markers[fe.Addr] = true
		plan = append(plan, plannedFrontend{
			fe: fe, old: old, newRevNat: newRevNat,
			new: &programmed{revNat: revNat, count: len(ids), slots: ids, backends: slices.Clone(sp.Backends)},
		})
	}
	return plan, removed, problems
}

func compareFrontends(a, b Frontend) int {
	return cmp.Or(a.Addr.Compare(b.Addr), cmp.Compare(a.Port, b.Port), cmp.Compare(a.Proto, b.Proto))
}

// countServiceEntries is the number of lb4_services entries the programmed
// state occupies: markers, masters and present slots.
func (r *Reconciler) countServiceEntries() int {
	n := len(r.markers)
	for _, p := range r.frontends {
		n++
		for _, id := range p.slots {
			if id != 0 {
				n++
			}
		}
	}
	return n
}

// filterOf is the prefilter of a programmed state: the bit of every service
// IP and of every backend its frontends use.
func filterOf(state map[Frontend]*programmed) *bpf.SluiceLb4Filter {
	f := &bpf.SluiceLb4Filter{}
	for fe, p := range state {
		filterSet(f, filterDst(maps.Addr4(fe.Addr)))
		for _, b := range p.backends {
			filterSet(f, filterSrc(maps.Addr4(b.Addr), maps.Port(b.Port), uint8(fe.Proto)))
		}
	}
	return f
}

func lbKey(fe Frontend, slot uint16) bpf.SluiceLb4Key {
	return bpf.SluiceLb4Key{
		Address:     maps.Addr4(fe.Addr),
		Dport:       maps.Port(fe.Port),
		Proto:       uint8(fe.Proto),
		BackendSlot: slot,
	}
}

func markerKey(a netip.Addr) bpf.SluiceLb4Key {
	return bpf.SluiceLb4Key{Address: maps.Addr4(a)}
}
