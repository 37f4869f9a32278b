package conntrack

import (
	"errors"
	"fmt"
	"time"

	"github.com/cilium/ebpf"

	"github.com/sluice-lb/sluice/bpf"
	"github.com/sluice-lb/sluice/maps"
)

// Target names the entries of one frontend's flows (by reverse-NAT id) to
// one backend (by id), or to all its backends when Backend is 0. The
// reconciler's control.FlowTarget, without the import.
type Target struct {
	RevNat  uint32
	Backend uint32
}

// Stats is what one sweep saw and did.
type Stats struct {
	Start    time.Time
	Duration time.Duration
	// Entries left after the sweep, by kind (of those it saw).
	Forward, Reply int
	// Entries deleted: flows whose two entries had expired, reply entries
	// without their flow, and entries of UDP flows whose backend left.
	Expired, Orphans, Purged int
	// Repaired counts reply entries recreated for live forward entries.
	Repaired int
	// Next is the wait before the next periodic sweep, as this one set it.
	Next time.Duration
	// Audit: the sweep checked the partner of every live entry too.
	Audit bool
}

// Deleted is every entry the sweep removed.
func (s Stats) Deleted() int { return s.Expired + s.Orphans + s.Purged }

// Seen is every entry the sweep looked at.
func (s Stats) Seen() int { return s.Forward + s.Reply + s.Deleted() }

// Refs are the ids the entries a complete sweep left in the table name.
type Refs struct {
	backends, revNats bitset
}

// Backend reports whether an entry names backend id.
func (r *Refs) Backend(id uint32) bool { return r.backends.has(id) }

// RevNat reports whether an entry names reverse-NAT id.
func (r *Refs) RevNat(id uint32) bool { return r.revNats.has(id) }

type bitset []uint64

func newBitset(n uint32) bitset { return make(bitset, (n+63)/64) }
func (b bitset) set(i uint32) {
	if int(i/64) < len(b) {
		b[i/64] |= 1 << (i % 64)
	}
}

// has is true for an id beyond the set: out of range is "may be named".
func (b bitset) has(i uint32) bool { return int(i/64) >= len(b) || b[i/64]&(1<<(i%64)) != 0 }

// sweep is one walk of the table. It decides on every entry as it comes,
// a chunk at a time, and deletes after each chunk: memory is the chunk,
// the two id bitsets and the reverse-NAT entries looked up.
type sweep struct {
	ct       *maps.CT4
	backends *maps.Map[uint32, bpf.SluiceLb4Backend]
	revNat   *maps.Map[uint32, bpf.SluiceLb4ReverseNat]
	now      uint32
	// audit: also check every live entry's partner (repair a missing
	// reply entry, drop a live orphan). Both are rare, and each check is
	// a lookup: the collector audits one sweep per AuditPeriod.
	audit    bool
	purge    map[Target]bool
	refs     *Refs
	frontend map[uint32]bpf.SluiceLb4ReverseNat // lb4_revnat, as far as read
	del      []bpf.SluiceCt4Key
	queued   map[bpf.SluiceCt4Key]bool // del, as a set
	stats    Stats
	// lkey and lval hold a lookup's key and value where the syscall
	// wrapper needs them on the heap, so a lookup allocates nothing.
	lkey bpf.SluiceCt4Key
	lval bpf.SluiceCt4Entry
}

const protoUDP = 17

// chunk is how many entries a sweep reads at once: 4096 entries of 40
// bytes, 160 KiB of buffers.
const chunk = 4096

func (s *sweep) run() error {
	return maps.WalkCT4(s.ct, chunk, func(keys []bpf.SluiceCt4Key, vals []bpf.SluiceCt4Entry) error {
		for i := range keys {
			if err := s.entry(keys[i], vals[i]); err != nil {
				return err
			}
		}
		if err := s.ct.DeleteAll(s.del); err != nil {
			return err
		}
		s.del = s.del[:0]
		clear(s.queued)
		return nil
	})
}

// drop queues keys for deletion after the chunk and returns how many were
// not queued already (a flow's two entries in one chunk are decided on
// twice).
func (s *sweep) drop(keys ...bpf.SluiceCt4Key) int {
	n := 0
	for _, k := range keys {
		if !s.queued[k] {
			s.queued[k] = true
			s.del = append(s.del, k)
			n++
		}
	}
	return n
}

func (s *sweep) entry(k bpf.SluiceCt4Key, e bpf.SluiceCt4Entry) error {
	if s.queued[k] {
		return nil // its partner took it along
	}
	if s.purged(k, e) {
		s.stats.Purged += s.drop(k)
		if e.Kind == bpf.SluiceCtKindCT_FORWARD {
			// The reply entry goes with it at once: the old backend's
			// datagrams are no longer translated. A reply entry seen
			// first is purged by itself, and its forward entry when
			// the walk comes to it.
			rk := maps.CT4ReplyKey(k, e)
			if found, err := s.lookup(rk); err != nil {
				return err
			} else if found && s.lval.Kind == bpf.SluiceCtKindCT_REPLY && s.lval.RevNatId == e.RevNatId {
				s.stats.Purged += s.drop(rk)
			}
		}
		return nil
	}
	switch e.Kind {
	case bpf.SluiceCtKindCT_FORWARD:
		return s.forward(k, e)
	case bpf.SluiceCtKindCT_REPLY:
		return s.reply(k, e)
	}
	// No kind sluice writes: left alone, and its ids held.
	s.keep(e)
	return nil
}

// purged reports whether e is an entry of a UDP flow whose backend left.
func (s *sweep) purged(k bpf.SluiceCt4Key, e bpf.SluiceCt4Entry) bool {
	if len(s.purge) == 0 || k.Proto != protoUDP {
		return false
	}
	return s.purge[Target{e.RevNatId, e.BackendId}] || s.purge[Target{RevNat: e.RevNatId}]
}

// forward: a flow whose two entries have expired goes (the forward entry
// alone when the reply tuple is another flow's); a live one missing its
// reply entry gets it back, so its replies are translated too.
func (s *sweep) forward(k bpf.SluiceCt4Key, e bpf.SluiceCt4Entry) error {
	if !s.audit && !maps.CT4Expired(e, s.now) {
		s.keep(e)
		return nil
	}
	rk := maps.CT4ReplyKey(k, e)
	found, err := s.lookup(rk)
	if err != nil {
		return err
	}
	re := s.lval
	ours := found && re.Kind == bpf.SluiceCtKindCT_REPLY && re.RevNatId == e.RevNatId
	if maps.CT4Expired(e, s.now) {
		if !ours {
			s.stats.Expired += s.drop(k)
			return nil
		}
		if maps.CT4Expired(re, s.now) {
			s.stats.Expired += s.drop(k, rk)
			return nil
		}
	} else if !found {
		if err := s.repair(rk, e); err != nil {
			return err
		}
	}
	s.keep(e)
	return nil
}

// repair recreates a live forward entry's reply entry, on its lifetime,
// while its backend is the one programmed under its id (else the next
// forward packet picks another backend, and the flow is new).
func (s *sweep) repair(rk bpf.SluiceCt4Key, e bpf.SluiceCt4Entry) error {
	be, err := s.backends.Lookup(e.BackendId)
	if err != nil || be.Flags&bpf.SluiceLbBackendFlagsBE_F_ACTIVE == 0 ||
		be.Address != e.BackendAddr || be.Port != e.BackendPort {
		return nil
	}
	re := e
	re.BackendAddr, re.BackendPort = 0, 0
	re.Kind = bpf.SluiceCtKindCT_REPLY
	re.Flags = 0
	err = s.ct.Raw().Update(&rk, &re, ebpf.UpdateNoExist)
	if errors.Is(err, ebpf.ErrKeyExist) {
		return nil // the datapath wrote it meanwhile
	}
	if err != nil {
		return fmt.Errorf("repair reply entry: %w", err)
	}
	s.stats.Repaired++
	return nil
}

// reply: without its flow's forward entry (its frontend gone, the forward
// entry gone, or the client tuple now another flow's) a reply entry is an
// orphan and goes; a flow whose two entries have expired goes whole.
func (s *sweep) reply(k bpf.SluiceCt4Key, e bpf.SluiceCt4Entry) error {
	if !s.audit && !maps.CT4Expired(e, s.now) {
		s.keep(e)
		return nil
	}
	fe, fk, found, err := s.forwardOf(k, e)
	if err != nil {
		return err
	}
	if !found {
		s.stats.Orphans += s.drop(k)
		return nil
	}
	if maps.CT4Expired(e, s.now) && maps.CT4Expired(fe, s.now) {
		s.stats.Expired += s.drop(k, fk)
		return nil
	}
	s.keep(e)
	return nil
}

// forwardOf returns the forward entry of a reply entry's flow, and its key;
// found is false when the flow has none.
func (s *sweep) forwardOf(rk bpf.SluiceCt4Key, re bpf.SluiceCt4Entry) (fe bpf.SluiceCt4Entry, fk bpf.SluiceCt4Key, found bool, err error) {
	rn, ok := s.frontend[re.RevNatId]
	if !ok {
		rn, err = s.revNat.Lookup(re.RevNatId)
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			rn = bpf.SluiceLb4ReverseNat{} // beyond the array: no frontend
		} else if err != nil {
			return fe, fk, false, err
		}
		s.frontend[re.RevNatId] = rn
	}
	if rn.Address == 0 {
		return fe, fk, false, nil
	}
	fk = maps.CT4ForwardKey(rk, re, rn)
	if found, err = s.lookup(fk); err != nil || !found || !maps.CT4Partners(s.lval, rk) {
		return fe, fk, false, err
	}
	return s.lval, fk, true, nil
}

// lookup reads an entry into s.lval; found is false when there is none.
func (s *sweep) lookup(k bpf.SluiceCt4Key) (found bool, err error) {
	s.lkey = k
	err = s.ct.Raw().Lookup(&s.lkey, &s.lval)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return false, nil
	}
	return err == nil, err
}

// keep counts an entry the sweep leaves and holds the ids it names.
func (s *sweep) keep(e bpf.SluiceCt4Entry) {
	if e.Kind == bpf.SluiceCtKindCT_REPLY {
		s.stats.Reply++
	} else {
		s.stats.Forward++
	}
	s.refs.backends.set(e.BackendId)
	s.refs.revNats.set(e.RevNatId)
}
