package control

import (
	"sync"
	"time"
)

// idPool hands out the array indexes of lb4_backends and lb4_revnat. Id 0
// is never used, so a zeroed array entry always means "no such entry".
// Released ids are reused first, first-in first-out.
//
// Conntrack entries name a flow's backend and reverse-NAT ids, and outlive
// the backend or frontend: a reply entry's rev_nat_id is what its source is
// rewritten to. An id given to a new backend or frontend while entries still
// name it would hand those flows to the newcomer. So, once quarantine is on
// (an agent with a collector), a released id is held back until a complete
// conntrack sweep that began after its release found no entry naming it
// (releaseUnreferenced). Without quarantine (tests, tools without a
// collector) released ids are free at once.
//
// alloc, release and adopt run on the reconciler's goroutine;
// releaseUnreferenced on the collector's: a mutex orders them.
type idPool struct {
	mu   sync.Mutex
	next uint32 // lowest id never handed out
	max  uint32 // ids are < max (the map's max_entries)
	free []uint32
	// quarantined: released ids, with when they were released, oldest
	// first; held only while quarantine is on.
	quarantined []heldID
	quarantine  bool
}

type heldID struct {
	id    uint32
	since time.Time
}

// QuarantineGrace is how long after a release a sweep must begin to vouch
// for the id: a datapath program that read the backend before the
// reconciler cleared it may still be writing its flow's entries (a program
// run lasts microseconds; the grace is generous).
const QuarantineGrace = time.Second

func newIDPool(max uint32) *idPool { return &idPool{next: 1, max: max} }

// adoptInUse takes the ids the maps hold (sorted, increasing) as in use, at
// the reconciler's start and whenever it reads the maps again. What the
// pool knew survives: a quarantined id stays so unless the maps hold it
// again; an id neither in use, free nor quarantined (a gap left by a
// previous agent, or an entry removed behind sluice's back) may be named by
// conntrack entries, and is quarantined when quarantine is on.
func (p *idPool) adoptInUse(inUse []uint32, now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	used := make(map[uint32]bool, len(inUse))
	next := p.next
	for _, id := range inUse {
		used[id] = true
		next = max(next, id+1)
	}
	known := make(map[uint32]bool, len(p.free)+len(p.quarantined))
	var free []uint32
	for _, id := range p.free {
		if !used[id] {
			free = append(free, id)
			known[id] = true
		}
	}
	var held []heldID
	for _, h := range p.quarantined {
		if !used[h.id] {
			held = append(held, h)
			known[h.id] = true
		}
	}
	for id := uint32(1); id < next; id++ {
		if used[id] || known[id] {
			continue
		}
		if p.quarantine {
			held = append(held, heldID{id, now})
		} else {
			free = append(free, id)
		}
	}
	p.next, p.free, p.quarantined = next, free, held
}

// startQuarantine turns quarantine on: every id free so far is held until a
// sweep vouches for it, since a previous agent's flows may name it.
func (p *idPool) startQuarantine(now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.quarantine = true
	for _, id := range p.free {
		p.quarantined = append(p.quarantined, heldID{id, now})
	}
	p.free = nil
}

func (p *idPool) alloc() (uint32, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.free) > 0 {
		id := p.free[0]
		p.free = p.free[1:]
		return id, true
	}
	if p.next >= p.max {
		return 0, false
	}
	p.next++
	return p.next - 1, true
}

// release gives back an id its backend or frontend no longer uses.
func (p *idPool) release(id uint32) { p.releaseAt(id, time.Now()) }

func (p *idPool) releaseAt(id uint32, now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.quarantine {
		p.quarantined = append(p.quarantined, heldID{id, now})
		return
	}
	p.free = append(p.free, id)
}

// unalloc returns an id alloc just handed out and nothing used: it is free
// again at once, no entry can name it.
func (p *idPool) unalloc(id uint32) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.free = append(p.free, id)
}

// releaseUnreferenced frees the quarantined ids released at least
// QuarantineGrace before a complete sweep began at sweepStart and that the
// sweep found no entry naming (referenced false). It returns how many it
// freed and how many stay held.
func (p *idPool) releaseUnreferenced(sweepStart time.Time, referenced func(uint32) bool) (freed, held int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	keep := p.quarantined[:0]
	for _, h := range p.quarantined {
		if sweepStart.Sub(h.since) >= QuarantineGrace && !referenced(h.id) {
			p.free = append(p.free, h.id)
			freed++
			continue
		}
		keep = append(keep, h)
	}
	clear(p.quarantined[len(keep):])
	p.quarantined = keep
	return freed, len(keep)
}

// held returns how many ids are quarantined.
func (p *idPool) held() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.quarantined)
}
