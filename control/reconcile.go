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
type Reconciler struct {
	lb  maps.LB4
	log *slog.Logger

	backends   map[backendKey]uint32
	backendKey map[uint32]backendKey // the inverse of backends
	filter     *bpf.SluiceLb4Filter  // as programmed in lb4_prefilter
	frontends  map[Frontend]*programmed
	revNats    map[uint32]bool
	markers    map[netip.Addr]bool
	backendIDs *idPool
	revNatIDs  *idPool
	// serviceEntries counts entries in lb4_services; capacity its max.
	serviceEntries, serviceCapacity int
	// stale is set when an Apply failed part-way: the next Apply reads
	// the maps again instead of trusting the in-memory copy.
	stale bool
}

type backendKey struct {
	Backend
	Proto Protocol
}

type programmed struct {
	revNat uint32
	count  int      // the master entry's slot count
	slots  []uint32 // backend id of slot i+1; 0 where no slot entry exists
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
	r.backends = map[backendKey]uint32{}
	r.backendKey = map[uint32]backendKey{}
	r.frontends = map[Frontend]*programmed{}
	r.revNats = map[uint32]bool{}
	r.markers = map[netip.Addr]bool{}
	r.backendIDs = newIDPool(r.lb.Backends.Raw().MaxEntries())
	r.revNatIDs = newIDPool(r.lb.RevNat.Raw().MaxEntries())
	r.serviceEntries = 0
	r.serviceCapacity = int(r.lb.Services.Raw().MaxEntries())

	snap, err := readLB4(r.lb)
	if err != nil {
		return err
	}
	ids := make([]uint32, 0, len(snap.backends))
	for id, k := range snap.backends {
		r.backends[k] = id
		r.backendKey[id] = k
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		r.backendIDs.adopt(id)
	}
	ids = ids[:0]
	for id := range snap.revNats {
		r.revNats[id] = true
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		r.revNatIDs.adopt(id)
	}
	r.markers = snap.markers
	r.frontends = snap.frontends
	r.filter = snap.filter
	r.serviceEntries = r.countServiceEntries()
	r.stale = false
	return nil
}

// plannedFrontend is a frontend as it will be programmed.
type plannedFrontend struct {
	fe     Frontend
	old    *programmed // nil when new
	revNat uint32
	// newRevNat: revNat was allocated by this plan and must be written.
	newRevNat bool
	ids       []uint32
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

	plan, kept, problems := r.plan(s)

	// Phase 0: the prefilter lets through what the old and the new state
	// need until the new state is complete.
	want := filterOf(s, plan, kept, r.backendKey)
	union, grew := filterUnion(r.filter, want)
	if grew {
		if err := r.lb.Prefilter.Put(0, *union); err != nil {
			return stats, problems, fmt.Errorf("write prefilter: %w", err)
		}
	}

	// Phase 1: new backends.
	var beKeys []uint32
	var beVals []bpf.SluiceLb4Backend
	newBackends := map[backendKey]uint32{}
	for _, pf := range plan {
		for i, id := range pf.ids {
			b := s.Ports[pf.fe].Backends[i]
			k := backendKey{b, pf.fe.Proto}
			if _, have := r.backends[k]; have {
				continue
			}
			if _, dup := newBackends[k]; dup {
				continue
			}
			newBackends[k] = id
			beKeys = append(beKeys, id)
			beVals = append(beVals, bpf.SluiceLb4Backend{
				Address: maps.Addr4(b.Addr), Port: maps.Port(b.Port), Proto: uint8(pf.fe.Proto),
				Flags: bpf.SluiceLbBackendFlagsBE_F_ACTIVE,
			})
		}
	}
	if err := r.lb.Backends.PutAll(beKeys, beVals); err != nil {
		return stats, problems, fmt.Errorf("add backends: %w", err)
	}
	for k, id := range newBackends {
		r.backends[k] = id
		r.backendKey[id] = k
	}
	stats.BackendsAdded = len(beKeys)

	// Phase 2: reverse NAT of new frontends.
	var rnKeys []uint32
	var rnVals []bpf.SluiceLb4ReverseNat
	for _, pf := range plan {
		if pf.newRevNat {
			rnKeys = append(rnKeys, pf.revNat)
			rnVals = append(rnVals, bpf.SluiceLb4ReverseNat{Address: maps.Addr4(pf.fe.Addr), Port: maps.Port(pf.fe.Port)})
		}
	}
	if err := r.lb.RevNat.PutAll(rnKeys, rnVals); err != nil {
		return stats, problems, fmt.Errorf("add reverse NAT entries: %w", err)
	}
	for _, id := range rnKeys {
		r.revNats[id] = true
	}

	// Phase 3: backend slots that differ, then phase 4: master entries.
	var slotKeys, masterKeys []bpf.SluiceLb4Key
	var slotVals, masterVals []bpf.SluiceLb4Service
	for _, pf := range plan {
		for i, id := range pf.ids {
			if pf.old != nil && i < len(pf.old.slots) && pf.old.slots[i] == id {
				continue
			}
			slotKeys = append(slotKeys, lbKey(pf.fe, uint16(i+1)))
			slotVals = append(slotVals, bpf.SluiceLb4Service{BackendId: id})
		}
		if pf.old == nil || pf.old.count != len(pf.ids) || pf.old.revNat != pf.revNat {
			masterKeys = append(masterKeys, lbKey(pf.fe, 0))
			masterVals = append(masterVals, bpf.SluiceLb4Service{Count: uint16(len(pf.ids)), RevNatId: pf.revNat})
		}
	}
	if err := r.lb.Services.PutAll(slotKeys, slotVals); err != nil {
		return stats, problems, fmt.Errorf("write backend slots: %w", err)
	}
	if err := r.lb.Services.PutAll(masterKeys, masterVals); err != nil {
		return stats, problems, fmt.Errorf("write frontends: %w", err)
	}
	stats.FrontendsWritten = len(masterKeys)

	// Phase 5: address markers of service IPs that gained their first frontend.
	wantMarkers := map[netip.Addr]bool{}
	for _, pf := range plan {
		wantMarkers[pf.fe.Addr] = true
	}
	for fe := range kept {
		wantMarkers[fe.Addr] = true
	}
	var mkKeys []bpf.SluiceLb4Key
	var mkVals []bpf.SluiceLb4Service
	for a := range wantMarkers {
		if !r.markers[a] {
			mkKeys = append(mkKeys, markerKey(a))
			mkVals = append(mkVals, bpf.SluiceLb4Service{Flags: bpf.SluiceLbServiceFlagsSVC_F_MARKER})
		}
	}
	if err := r.lb.Services.PutAll(mkKeys, mkVals); err != nil {
		return stats, problems, fmt.Errorf("write service IP markers: %w", err)
	}

	// The new state is live; from here on only what it no longer uses goes.
	var delKeys []bpf.SluiceLb4Key
	next := make(map[Frontend]*programmed, len(plan)+len(kept))
	for fe, p := range kept {
		next[fe] = p
	}
	for _, pf := range plan {
		p := &programmed{revNat: pf.revNat, count: len(pf.ids), slots: pf.ids}
		if pf.old != nil {
			for i := len(pf.ids); i < len(pf.old.slots); i++ {
				if pf.old.slots[i] != 0 {
					delKeys = append(delKeys, lbKey(pf.fe, uint16(i+1)))
				}
			}
		}
		next[pf.fe] = p
	}
	// Phase 6: excess slots of shrunk frontends.
	if err := r.lb.Services.DeleteAll(delKeys); err != nil {
		return stats, problems, fmt.Errorf("delete backend slots: %w", err)
	}
	// Phase 7: removed frontends, master entry before its slots.
	var rmMasters, rmSlots []bpf.SluiceLb4Key
	for fe, p := range r.frontends {
		if next[fe] != nil {
			continue
		}
		rmMasters = append(rmMasters, lbKey(fe, 0))
		for i, id := range p.slots {
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
	var rmMarkers []bpf.SluiceLb4Key
	for a := range r.markers {
		if !wantMarkers[a] {
			rmMarkers = append(rmMarkers, markerKey(a))
		}
	}
	if err := r.lb.Services.DeleteAll(rmMarkers); err != nil {
		return stats, problems, fmt.Errorf("delete service IP markers: %w", err)
	}
	r.frontends = next
	r.markers = wantMarkers
	r.serviceEntries = r.countServiceEntries()

	// Phase 9: reverse NAT entries no frontend uses.
	used := map[uint32]bool{}
	refs := map[uint32]bool{}
	for _, p := range next {
		used[p.revNat] = true
		for _, id := range p.slots {
			refs[id] = true
		}
	}
	var rmRevNat []uint32
	for id := range r.revNats {
		if !used[id] {
			rmRevNat = append(rmRevNat, id)
		}
	}
	if err := r.lb.RevNat.PutAll(rmRevNat, make([]bpf.SluiceLb4ReverseNat, len(rmRevNat))); err != nil {
		return stats, problems, fmt.Errorf("clear reverse NAT entries: %w", err)
	}
	slices.Sort(rmRevNat)
	for _, id := range rmRevNat {
		delete(r.revNats, id)
		r.revNatIDs.release(id)
	}
	// Phase 10: backends no slot names.
	var rmBackends []uint32
	var rmBackendKeys []backendKey
	for k, id := range r.backends {
		if !refs[id] {
			rmBackends = append(rmBackends, id)
			rmBackendKeys = append(rmBackendKeys, k)
		}
	}
	if err := r.lb.Backends.PutAll(rmBackends, make([]bpf.SluiceLb4Backend, len(rmBackends))); err != nil {
		return stats, problems, fmt.Errorf("clear backends: %w", err)
	}
	for i, k := range rmBackendKeys {
		delete(r.backends, k)
		delete(r.backendKey, rmBackends[i])
		r.backendIDs.release(rmBackends[i])
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

// plan decides, frontend by frontend in a stable order, the backend ids and
// reverse-NAT id each desired frontend gets. A frontend that does not fit
// the maps keeps its current programming (returned in kept) or, if new, is
// left out; either way it is reported.
func (r *Reconciler) plan(s *State) ([]plannedFrontend, map[Frontend]*programmed, []Problem) {
	fes := make([]Frontend, 0, len(s.Ports))
	for fe := range s.Ports {
		fes = append(fes, fe)
	}
	slices.SortFunc(fes, func(a, b Frontend) int {
		return cmp.Or(a.Addr.Compare(b.Addr), cmp.Compare(a.Port, b.Port), cmp.Compare(a.Proto, b.Proto))
	})

	var (
		plan     []plannedFrontend
		problems []Problem
		kept     = map[Frontend]*programmed{}
		pending  = map[backendKey]uint32{} // ids allocated by this plan
		entries  = r.serviceEntries
		markers  = map[netip.Addr]bool{}
	)
	for a := range r.markers {
		markers[a] = true
	}
	refuse := func(sp *ServicePort, format string, args ...any) {
		problems = append(problems, Problem{
			Object: "Service " + sp.Name.Namespace + "/" + sp.Name.Name,
			Reason: fmt.Sprintf("port %s (%s): ", sp.Name.Port, sp.Frontend) + fmt.Sprintf(format, args...),
		})
		if old := r.frontends[sp.Frontend]; old != nil {
			kept[sp.Frontend] = old
		}
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
		if !markers[fe.Addr] {
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
			k := backendKey{b, fe.Proto}
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
		plan = append(plan, plannedFrontend{fe: fe, old: old, revNat: revNat, newRevNat: newRevNat, ids: ids})
	}
	return plan, kept, problems
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

// filterOf is the prefilter of a state: the bit of every service IP and of
// every backend the planned and kept frontends use.
func filterOf(s *State, plan []plannedFrontend, kept map[Frontend]*programmed, keys map[uint32]backendKey) *bpf.SluiceLb4Filter {
	f := &bpf.SluiceLb4Filter{}
	for _, pf := range plan {
		filterSet(f, filterDst(maps.Addr4(pf.fe.Addr)))
		for _, b := range s.Ports[pf.fe].Backends {
			filterSet(f, filterSrc(maps.Addr4(b.Addr), maps.Port(b.Port), uint8(pf.fe.Proto)))
		}
	}
	for fe, p := range kept {
		filterSet(f, filterDst(maps.Addr4(fe.Addr)))
		for _, id := range p.slots {
			if k, ok := keys[id]; ok {
				filterSet(f, filterSrc(maps.Addr4(k.Addr), maps.Port(k.Port), uint8(k.Proto)))
			}
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
