package control

import (
	"context"
	"errors"
	"testing"
	"time"
)

type syncCall struct {
	full bool
	at   time.Time
}

// recordingRunner runs a Runner whose sync reports each call on a channel
// and returns what fail says.
func recordingRunner(t *testing.T, minInterval, period time.Duration, fail func(n int) error) (*Runner, <-chan syncCall) {
	t.Helper()
	calls := make(chan syncCall, 100)
	n := 0
	r := NewRunner(func(full bool) error {
		n++
		calls <- syncCall{full, time.Now()}
		return fail(n)
	}, minInterval, period)
	r.Backoff = [2]time.Duration{time.Millisecond, 4 * time.Millisecond}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Loop(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return r, calls
}

func next(t *testing.T, calls <-chan syncCall) syncCall {
	t.Helper()
	select {
	case c := <-calls:
		return c
	case <-time.After(10 * time.Second):
		t.Fatal("no sync")
	}
	return syncCall{}
}

func quiet(t *testing.T, calls <-chan syncCall, d time.Duration) {
	t.Helper()
	select {
	case c := <-calls:
		t.Fatalf("unexpected sync %+v", c)
	case <-time.After(d):
	}
}

// Triggers coalesce, and two syncs are never closer than MinInterval.
func TestRunnerCoalescesAndKeepsMinInterval(t *testing.T) {
	const minInterval = 100 * time.Millisecond
	r, calls := recordingRunner(t, minInterval, time.Hour, func(int) error { return nil })
	// The runner times MinInterval from the start of a sync, which the
	// test cannot see: the first sync's own clock reading comes later,
	// by however long the goroutine waited (milliseconds under emulation),
	// so the gap between the two readings may be shorter than MinInterval.
	// The first trigger comes before that start, which makes the second
	// sync's reading at least MinInterval after it.
	triggered := time.Now()
	r.Run()
	first := next(t, calls)
	for range 100 {
		r.Run()
	}
	second := next(t, calls)
	if gap := second.at.Sub(triggered); gap < minInterval {
		t.Errorf("second sync %s after the first trigger (first sync at %s), want at least %s",
			gap, first.at.Sub(triggered), minInterval)
	}
	if first.full || second.full {
		t.Errorf("partial triggers ran full syncs: %+v %+v", first, second)
	}
	// 101 triggers made two syncs, not more.
	quiet(t, calls, 3*minInterval)
}

// A failed sync is retried without a new trigger, as a full sync, with
// growing backoff, until it succeeds.
func TestRunnerRetriesFailedSyncs(t *testing.T) {
	r, calls := recordingRunner(t, 0, time.Hour, func(n int) error {
		if n <= 3 {
			return errors.New("map write failed")
		}
		return nil
	})
	r.Run()
	if c := next(t, calls); c.full {
		t.Errorf("first sync full")
	}
	for i := 2; i <= 4; i++ {
		if c := next(t, calls); !c.full {
			t.Errorf("retry %d not full", i)
		}
	}
	quiet(t, calls, 50*time.Millisecond)
}

// The period brings a full sync without any trigger.
func TestRunnerPeriodicFullSync(t *testing.T) {
	_, calls := recordingRunner(t, 0, 30*time.Millisecond, func(int) error { return nil })
	for range 2 {
		if c := next(t, calls); !c.full {
			t.Errorf("periodic sync not full")
		}
	}
}
