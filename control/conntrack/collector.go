// Package conntrack is the agent's side of the datapath's conntrack table
// (ct4_v3): its size (SizeTable), its lifetimes (Timeouts) and its
// collector, which removes the flows the datapath leaves behind. The
// datapath never deletes a live flow and never deletes an expired one
// unless a packet reuses its tuple: the collector walks the table and
// removes the flows whose two entries have both expired, the reply entries
// left without their flow, and the entries of UDP flows whose backend left
// (rule 30); it gives a live flow back the reply entry it lost; and it
// reports which backend and reverse-NAT ids the remaining entries name, so
// the reconciler hands out no id a flow still holds.
package conntrack

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/sluice-lb/sluice/bpf"
	"github.com/sluice-lb/sluice/maps"
)

// Interval bounds of the collector. A sweep that deleted a large share of
// what it saw, in a table at least an eighth full, halves the wait before
// the next; one that deleted little
// lengthens it by half, up to MaxInterval; a table filling up is swept at
// the shortest interval.
const (
	DefaultInterval = 30 * time.Second
	MinInterval     = 2 * time.Second
	MaxInterval     = 5 * time.Minute
	// FirstSweep is how soon after start the first sweep runs: an agent
	// restarted after a while finds the table full of expired flows, and
	// its ids are quarantined until a sweep vouches for them.
	FirstSweep = time.Second
	// AuditPeriod: the first sweep, and then one sweep in this period,
	// also checks the partner of every live entry. A live forward entry
	// without its reply entry, or a live reply entry without its flow, is
	// rare (the datapath writes and deletes pairs together; an agent
	// stopped mid-delete, a failed write leave them), and checking costs a
	// lookup per entry, where an ordinary sweep looks up expired entries'
	// partners only: at a million flows, ~7 CPU seconds against ~1.
	AuditPeriod = 5 * time.Minute
)

// Collector sweeps ct4_v3 periodically (Run) or on demand (Sweep, Purge).
type Collector struct {
	dp   *maps.Datapath
	log  *slog.Logger
	done func(Stats, *Refs)

	// mu serialises sweeps: Run's and direct calls of Sweep.
	mu       sync.Mutex
	interval time.Duration
	base     time.Duration
	// lastAudit is when the last audit began; one is due auditPeriod
	// later.
	lastAudit   time.Time
	auditPeriod time.Duration

	pendingMu sync.Mutex
	pending   map[Target]bool
	wake      chan struct{}
}

// NewCollector returns a collector of dp's conntrack table. done, when not
// nil, is called after every complete sweep, with its statistics and the
// ids the entries left in the table name (the reconciler's
// ReleaseQuarantined); the Refs are valid during the call only. base is
// the interval a sweep that found little to do keeps (0: DefaultInterval).
func NewCollector(dp *maps.Datapath, base time.Duration, log *slog.Logger, done func(Stats, *Refs)) *Collector {
	if base <= 0 {
		base = DefaultInterval
	}
	return &Collector{
		dp: dp, log: log, done: done,
		interval: base, base: base, auditPeriod: AuditPeriod,
		pending: map[Target]bool{},
		wake:    make(chan struct{}, 1),
	}
}

// Purge asks for the entries of these flows to be removed (a UDP frontend's
// backend that left): a sweep starts at once, or right after the one
// running, so the entries are gone within two sweep durations. Their ids
// must be quarantined (they are, until the sweep is done), so that no new
// flow names them meanwhile.
func (c *Collector) Purge(targets []Target) {
	if len(targets) == 0 {
		return
	}
	c.pendingMu.Lock()
	for _, t := range targets {
		c.pending[t] = true
	}
	c.pendingMu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// Interval is the wait before the next periodic sweep.
func (c *Collector) Interval() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.interval
}

// Run sweeps until ctx ends: FirstSweep after the start, then at the
// adaptive interval, and at once when Purge asks.
func (c *Collector) Run(ctx context.Context) {
	t := time.NewTimer(FirstSweep)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-c.wake:
			t.Stop()
		}
		if _, err := c.Sweep(); err != nil {
			c.log.Error("conntrack sweep failed; retrying", "err", err)
		}
		t.Reset(c.Interval())
	}
}

// Sweep walks the table once, now, with the purge targets queued so far.
func (c *Collector) Sweep() (Stats, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pendingMu.Lock()
	purge := c.pending
	c.pending = map[Target]bool{}
	c.pendingMu.Unlock()

	start := time.Now()
	now, err := maps.MonotonicSeconds()
	if err != nil {
		return Stats{}, err
	}
	s := &sweep{
		ct:       c.dp.CT4,
		backends: c.dp.LB4.Backends,
		revNat:   c.dp.LB4.RevNat,
		now:      now,
		audit:    c.lastAudit.IsZero() || start.Sub(c.lastAudit) >= c.auditPeriod,
		purge:    purge,
		refs: &Refs{
			backends: newBitset(c.dp.LB4.Backends.Raw().MaxEntries()),
			revNats:  newBitset(c.dp.LB4.RevNat.Raw().MaxEntries()),
		},
		frontend: map[uint32]bpf.SluiceLb4ReverseNat{},
		queued:   map[bpf.SluiceCt4Key]bool{},
	}
	s.stats.Start = start
	s.stats.Audit = s.audit
	err = s.run()
	s.stats.Duration = time.Since(start)
	if err != nil {
		c.requeue(purge)
		return s.stats, err
	}
	if s.audit {
		c.lastAudit = start
	}
	c.adapt(s.stats)
	s.stats.Next = c.interval
	c.log.Debug("conntrack sweep", "took", s.stats.Duration, "forward", s.stats.Forward, "reply", s.stats.Reply,
		"expired", s.stats.Expired, "orphans", s.stats.Orphans, "purged", s.stats.Purged,
		"repaired", s.stats.Repaired, "audit", s.audit, "next", c.interval)
	if c.done != nil {
		c.done(s.stats, s.refs)
	}
	return s.stats, nil
}

func (c *Collector) requeue(purge map[Target]bool) {
	c.pendingMu.Lock()
	defer c.pendingMu.Unlock()
	for t := range purge {
		c.pending[t] = true
	}
}

// adapt sets the next interval from what a sweep found: a quarter or more
// of the entries deleted from a table at least an eighth full, or a table
// three quarters full, halves it; under a twentieth deleted lengthens it by
// half, towards MaxInterval; otherwise it goes back towards the base.
// Expired entries in a table mostly empty take room nobody needs: a burst
// of short connections there is no reason to sweep the whole table every
// few seconds (each sweep walks every bucket, a CPU cost a small table
// does not repay).
func (c *Collector) adapt(st Stats) {
	seen := st.Seen()
	capacity := int(c.dp.CT4.Raw().MaxEntries())
	left := st.Forward + st.Reply
	switch {
	case 4*st.Deleted() >= seen && 8*seen >= capacity && seen > 0, 4*left >= 3*capacity:
		c.interval = max(c.interval/2, MinInterval)
	case 20*st.Deleted() < seen || seen == 0:
		c.interval = min(c.interval*3/2, max(MaxInterval, c.base))
	case c.interval < c.base:
		c.interval = min(c.interval*2, c.base)
	case c.interval > c.base:
		c.interval = max(c.interval/2, c.base)
	}
}
