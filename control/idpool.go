package control

// idPool hands out the array indexes of lb4_backends and lb4_revnat. Id 0
// is never used, so a zeroed array entry always means "no such entry".
// Released ids are reused first-in first-out: the longest-freed id is
// recycled first, which keeps a just-removed backend's id from being given
// to a new backend while conntrack entries may still name it.
type idPool struct {
	next uint32 // lowest id never handed out
	max  uint32 // ids are < max (the map's max_entries)
	free []uint32
}

func newIDPool(max uint32) *idPool { return &idPool{next: 1, max: max} }

// adopt marks id as in use; ids must be adopted in increasing order.
func (p *idPool) adopt(id uint32) {
	for ; p.next < id; p.next++ {
		p.free = append(p.free, p.next)
	}
	if id >= p.next {
		p.next = id + 1
	}
}

func (p *idPool) alloc() (uint32, bool) {
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

func (p *idPool) release(id uint32) { p.free = append(p.free, id) }
