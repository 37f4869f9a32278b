package control

import (
	"context"
	"time"
)

// Runner is the only way a sync starts, like kube-proxy's bounded-frequency
// runner: every trigger just says "run soon" (Run); the runner then runs
// the sync at most once per MinInterval, a full one every Period, and after
// a failed sync again with exponential backoff, without waiting for the
// next change.
type Runner struct {
	// Sync is called from Loop only. full: a periodic resync, or the
	// first sync after a failure.
	Sync        func(full bool) error
	MinInterval time.Duration
	Period      time.Duration
	// Backoff bounds the retry delay after failures: from its first
	// value, doubling, up to its second.
	Backoff [2]time.Duration

	kick chan struct{}
}

// NewRunner returns a runner; Loop starts it.
func NewRunner(sync func(full bool) error, minInterval, period time.Duration) *Runner {
	return &Runner{
		Sync: sync, MinInterval: minInterval, Period: period,
		Backoff: [2]time.Duration{100 * time.Millisecond, 30 * time.Second},
		kick:    make(chan struct{}, 1),
	}
}

// Run asks for a sync soon. It never blocks; requests coalesce.
func (r *Runner) Run() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// Loop runs syncs until ctx ends.
func (r *Runner) Loop(ctx context.Context) {
	var (
		last    time.Time // start of the last sync
		pending bool
		full    bool
		backoff time.Duration
	)
	period := time.NewTimer(r.Period)
	defer period.Stop()
	wait := time.NewTimer(time.Hour) // the min-interval wait, or a retry
	wait.Stop()
	waiting := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.kick:
			pending = true
		case <-period.C:
			pending, full = true, true
		case <-wait.C:
			waiting = false
		}
		if !pending || waiting {
			continue
		}
		if d := time.Until(last.Add(r.MinInterval)); d > 0 {
			wait.Reset(d)
			waiting = true
			continue
		}
		pending, last = false, time.Now()
		if err := r.Sync(full); err != nil {
			// The next sync is full and comes after the backoff, change
			// or no change.
			backoff = min(max(2*backoff, r.Backoff[0]), r.Backoff[1])
			pending, full = true, true
			wait.Reset(backoff)
			waiting = true
			continue
		}
		backoff = 0
		if full {
			// The period counts from the last full sync: partial syncs,
			// however frequent, do not postpone the repair of entries
			// changed behind sluice's back.
			full = false
			if !period.Stop() {
				select {
				case <-period.C:
				default:
				}
			}
			period.Reset(r.Period)
		}
	}
}
