package control

import (
	"log/slog"
	"time"
)

// Syncer is the agent's control loop: sources write to its Store, its
// Runner decides when to sync, and each sync folds the Store's changes
// into the Tracker's desired state and hands the frontends that changed to
// the Reconciler. Nothing is programmed before the source has delivered
// its first complete list (rule 31).
type Syncer struct {
	Store   *Store
	Runner  *Runner
	tracker *Tracker
	rec     *Reconciler
	log     *slog.Logger
	hooks   SyncHooks
	// reported holds the problems logged already, so each is logged
	// once, not on every sync.
	reported map[string]bool
	needFull bool
}

// SyncHooks let health and metrics follow the loop without the loop
// knowing them. Either may be nil.
type SyncHooks struct {
	// Queued is called for every change a source delivers.
	Queued func()
	// Done is called after every sync that ran (not before the source
	// synced).
	Done func(SyncReport)
}

// SyncReport is what one sync did.
type SyncReport struct {
	Start, End time.Time
	Full       bool
	Err        error
	Stats      ApplyStats
	// Changed counts the frontends the sync compared.
	Changed                       int
	Services, Frontends, Backends int
	// Skipped counts problems by Kind, after this sync.
	Skipped map[string]int
	// Triggers are the EndpointSlice trigger times this sync programmed.
	Triggers []time.Time
	// Node is the node as the source last described it.
	Node NodeInfo
	// LeftUDP are the UDP flows whose backend left in this sync, whose
	// conntrack entries must go (rule 30).
	LeftUDP []FlowTarget
}

// NewSyncer ties the loop together; run it with Runner.Loop.
func NewSyncer(rec *Reconciler, node NodeInfo, minSync, period time.Duration, log *slog.Logger, hooks SyncHooks) *Syncer {
	s := &Syncer{
		tracker:  NewTracker(node),
		rec:      rec,
		log:      log,
		hooks:    hooks,
		reported: map[string]bool{},
		needFull: true,
	}
	s.Runner = NewRunner(s.sync, minSync, period)
	s.Store = NewStore(func() {
		if s.hooks.Queued != nil {
			s.hooks.Queued()
		}
		s.Runner.Run()
	})
	return s
}

// State is the desired state as of the last sync. Only for the goroutine
// running the loop (and tests, between syncs).
func (s *Syncer) State() *State { return s.tracker.State() }

func (s *Syncer) sync(full bool) error {
	if !s.Store.IsSynced() {
		return nil
	}
	rep := SyncReport{Start: time.Now(), Full: full || s.needFull}
	ch := s.Store.Take(rep.Full)
	rep.Node = ch.Node
	var changed []Frontend
	if ch.NodeChanged {
		s.rec.SetNode(ch.Node)
		changed = append(changed, s.tracker.SetNode(ch.Node)...)
	}
	changed = append(changed, s.tracker.Update(ch.Services)...)
	rep.Changed = len(changed)
	var applyProblems []Problem
	if rep.Full {
		rep.Stats, applyProblems, rep.Err = s.rec.Apply(s.tracker.State())
	} else {
		rep.Stats, applyProblems, rep.Err = s.rec.ApplyFrontends(s.tracker.State(), changed)
	}
	rep.End = time.Now()
	rep.LeftUDP = s.rec.TakeLeftUDP()
	// A failed sync has taken its changes from the store: the next one
	// compares everything (and the runner retries it with backoff).
	s.needFull = rep.Err != nil
	if rep.Err == nil {
		rep.Triggers = ch.Triggers
	}
	problems := append(s.tracker.Problems(), ch.Skipped...)
	problems = append(problems, applyProblems...)
	rep.Skipped = s.report(problems)
	rep.Services, rep.Frontends, rep.Backends = s.tracker.Services(), s.rec.Frontends(), s.rec.Backends()
	if rep.Err != nil {
		s.log.Error("programming the datapath failed; retrying", "err", rep.Err, "full", rep.Full)
	} else {
		s.log.Info("synced", "full", rep.Full, "services", rep.Services, "frontends", rep.Frontends,
			"compared", rep.Changed, "written", rep.Stats.FrontendsWritten, "removed", rep.Stats.FrontendsRemoved,
			"backends+", rep.Stats.BackendsAdded, "backends-", rep.Stats.BackendsRemoved, "took", rep.End.Sub(rep.Start))
	}
	if s.hooks.Done != nil {
		s.hooks.Done(rep)
	}
	return rep.Err
}

// report logs each problem once and counts them by kind.
func (s *Syncer) report(problems []Problem) map[string]int {
	now := make(map[string]bool, len(problems))
	byKind := map[string]int{}
	for _, p := range problems {
		key := p.String()
		if now[key] {
			continue
		}
		now[key] = true
		byKind[p.Kind]++
		if !s.reported[key] {
			s.log.Warn("skipped", "object", p.Object, "reason", p.Reason, "kind", p.Kind)
		}
	}
	s.reported = now
	return byKind
}
