package control

import "time"

// The reconciler's side of conntrack: ids held back while flows may name
// them, and the UDP backends whose flows must go (rule 30). The collector
// (control/conntrack) drives both; the reconciler knows nothing of it.

// FlowTarget names the conntrack entries of one frontend (by reverse-NAT
// id) to one of its backends (by id), or to all of them when Backend is 0.
type FlowTarget struct {
	RevNat  uint32
	Backend uint32
}

// QuarantineFreedIDs makes freed backend and reverse-NAT ids wait for
// ReleaseQuarantined before they are handed out again. Ids free so far
// wait too: a previous agent's flows may name them. Call it once, before
// the first sync, when a conntrack collector runs.
func (r *Reconciler) QuarantineFreedIDs() {
	now := time.Now()
	r.backendIDs.startQuarantine(now)
	r.revNatIDs.startQuarantine(now)
}

// ReleaseQuarantined is told that a complete conntrack sweep began at start
// and found entries naming exactly the ids for which backendRef and
// revNatRef are true; the quarantined ids it vouches for become free. Safe
// to call from another goroutine than the one applying.
func (r *Reconciler) ReleaseQuarantined(start time.Time, backendRef, revNatRef func(uint32) bool) (freed, held int) {
	fb, hb := r.backendIDs.releaseUnreferenced(start, backendRef)
	fr, hr := r.revNatIDs.releaseUnreferenced(start, revNatRef)
	return fb + fr, hb + hr
}

// QuarantinedIDs returns how many backend and reverse-NAT ids wait for a
// sweep. Safe from any goroutine.
func (r *Reconciler) QuarantinedIDs() (backends, revNats int) {
	return r.backendIDs.held(), r.revNatIDs.held()
}

// TakeLeftUDP returns the flows that lost their backend in the applies
// since the last call: per UDP frontend, each backend that left its set,
// and a removed UDP frontend as a whole. Their conntrack entries must go so
// the next datagram picks a live backend (rule 30); TCP flows end by RST or
// timeout, as kube-proxy's.
func (r *Reconciler) TakeLeftUDP() []FlowTarget {
	out := r.leftUDP
	r.leftUDP = nil
	return out
}

// noteLeftUDP records what a plan takes from UDP frontends. Recorded before
// the plan is written: an apply failing part-way errs towards removing the
// flow state of a backend that stays, which costs a UDP flow its backend
// choice, never a datagram.
func (r *Reconciler) noteLeftUDP(p *plan) {
	for _, pf := range p.writes {
		if pf.fe.Proto != UDP || pf.old == nil || pf.old.revNat() == 0 {
			continue
		}
		// A backend left when neither scope has it any more.
		stays := make(map[uint32]bool, len(pf.new.slots))
		pf.new.sets(func(_ uint8, n *programmed) {
			for _, id := range n.slots {
				stays[id] = true
			}
		})
		pf.old.sets(func(_ uint8, o *programmed) {
			for _, id := range o.slots {
				if id != 0 && !stays[id] {
					stays[id] = true // once per backend
					r.leftUDP = append(r.leftUDP, FlowTarget{RevNat: pf.old.revNat(), Backend: id})
				}
			}
		})
	}
	for _, fe := range p.removed {
		if old := r.frontends[fe]; fe.Proto == UDP && old.revNat() != 0 {
			r.leftUDP = append(r.leftUDP, FlowTarget{RevNat: old.revNat()})
		}
	}
}
