package control

import (
	"slices"
	"testing"
	"time"
)

func none(uint32) bool { return false }

func allocN(t *testing.T, p *idPool, n int) []uint32 {
	t.Helper()
	var out []uint32
	for range n {
		id, ok := p.alloc()
		if !ok {
			t.Fatalf("pool exhausted after %v", out)
		}
		out = append(out, id)
	}
	return out
}

// Without quarantine, freed ids come back first, oldest first.
func TestIDPoolReusesFreedIDsFirst(t *testing.T) {
	p := newIDPool(100)
	ids := allocN(t, p, 4)
	if !slices.Equal(ids, []uint32{1, 2, 3, 4}) {
		t.Fatalf("ids %v", ids)
	}
	p.release(3)
	p.release(1)
	if got := allocN(t, p, 3); !slices.Equal(got, []uint32{3, 1, 5}) {
		t.Errorf("after freeing 3 then 1: %v, want [3 1 5]", got)
	}
}

// A quarantined id is not handed out until a sweep that began at least the
// grace after its release found no entry naming it.
func TestIDPoolQuarantine(t *testing.T) {
	p := newIDPool(100)
	p.startQuarantine(time.Now())
	allocN(t, p, 3)
	t0 := time.Now()
	p.releaseAt(2, t0)
	p.releaseAt(3, t0)
	if got := allocN(t, p, 1); got[0] != 4 {
		t.Fatalf("got %v while 2 and 3 are quarantined, want a fresh 4", got)
	}
	// A sweep begun too soon vouches for nothing.
	if freed, held := p.releaseUnreferenced(t0.Add(QuarantineGrace/2), none); freed != 0 || held != 2 {
		t.Errorf("early sweep freed %d, held %d", freed, held)
	}
	// A later sweep that found 3 named frees 2 only.
	late := t0.Add(QuarantineGrace)
	if freed, held := p.releaseUnreferenced(late, func(id uint32) bool { return id == 3 }); freed != 1 || held != 1 {
		t.Errorf("sweep naming 3 freed %d, held %d", freed, held)
	}
	if got := allocN(t, p, 2); !slices.Equal(got, []uint32{2, 5}) {
		t.Errorf("after the sweep: %v, want [2 5]", got)
	}
	p.releaseUnreferenced(late, none)
	if got := allocN(t, p, 1); got[0] != 3 {
		t.Errorf("after a sweep naming nothing: %v, want [3]", got)
	}
	// unalloc: never used, free at once.
	id, _ := p.alloc()
	p.unalloc(id)
	if got, _ := p.alloc(); got != id {
		t.Errorf("unalloc'd %d, next alloc %d", id, got)
	}
}

// Turning quarantine on holds every id free so far: a previous agent's
// flows may name them.
func TestIDPoolStartQuarantineHoldsFreeIDs(t *testing.T) {
	p := newIDPool(100)
	p.adoptInUse([]uint32{2, 5}, time.Now())
	t0 := time.Now()
	p.startQuarantine(t0)
	if got := allocN(t, p, 1); got[0] != 6 {
		t.Fatalf("got %v: gaps 1, 3, 4 of the previous agent must wait", got)
	}
	p.releaseUnreferenced(t0.Add(QuarantineGrace), func(id uint32) bool { return id == 4 })
	if got := allocN(t, p, 3); !slices.Equal(got, []uint32{1, 3, 7}) {
		t.Errorf("after a sweep naming 4: %v, want [1 3 7]", got)
	}
}

// Reading the maps again keeps what the pool knew: quarantined ids stay
// quarantined (since when they were), free ids free, and an id that went
// missing behind sluice's back is quarantined.
func TestIDPoolAdoptKeepsQuarantine(t *testing.T) {
	p := newIDPool(100)
	p.startQuarantine(time.Now())
	allocN(t, p, 5)
	t0 := time.Now()
	p.releaseAt(2, t0)
	p.releaseUnreferenced(t0.Add(QuarantineGrace), none) // 2 is free
	p.releaseAt(3, t0)                                   // 3 quarantined
	// The maps hold 1 and 5 (4 was removed behind sluice's back).
	p.adoptInUse([]uint32{1, 5}, t0)
	if got := allocN(t, p, 2); !slices.Equal(got, []uint32{2, 6}) {
		t.Fatalf("after adopting: %v, want [2 6]", got)
	}
	if p.held() != 2 {
		t.Errorf("%d ids held, want 3 and 4", p.held())
	}
	// An id the maps hold again leaves quarantine.
	p.adoptInUse([]uint32{1, 2, 3, 5, 6}, t0)
	if p.held() != 1 {
		t.Errorf("%d ids held after the maps hold 3 again, want 1 (4)", p.held())
	}
}
