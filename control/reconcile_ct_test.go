package control

import (
	"log/slog"
	"net/netip"
	"slices"
	"testing"
)

// TakeLeftUDP names, per UDP frontend, each backend that left its set, and
// a removed UDP frontend as a whole; TCP frontends never.
func TestTakeLeftUDP(t *testing.T) {
	r, err := NewReconciler(newMaps(t, nil), slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	udp := port("10.96.0.10:53", UDP, "10.244.1.2:53", "10.244.1.3:53")
	tcp := port("10.96.0.10:80", TCP, "10.244.1.2:80", "10.244.1.3:80")
	mustApply(t, r, state(udp, tcp))
	if got := r.TakeLeftUDP(); len(got) != 0 {
		t.Fatalf("after adding: %v", got)
	}
	revNat := r.frontends[udp.Frontend].revNat()
	gone := r.backends[keyOf(udp.Backends[0], UDP)]

	udp2 := port("10.96.0.10:53", UDP, "10.244.1.3:53")
	tcp2 := port("10.96.0.10:80", TCP, "10.244.1.3:80")
	mustApply(t, r, state(udp2, tcp2))
	if got, want := r.TakeLeftUDP(), []FlowTarget{{RevNat: revNat, Backend: gone}}; !slices.Equal(got, want) {
		t.Errorf("after a UDP and a TCP backend left: %v, want %v", got, want)
	}
	if got := r.TakeLeftUDP(); len(got) != 0 {
		t.Errorf("taken twice: %v", got)
	}
	mustApply(t, r, state(tcp2))
	if got, want := r.TakeLeftUDP(), []FlowTarget{{RevNat: revNat}}; !slices.Equal(got, want) {
		t.Errorf("after the UDP frontend left: %v, want %v", got, want)
	}
}

// Quarantine survives the full resync, which reads the maps again: a freed
// id stays held until a sweep vouches for it.
func TestQuarantineSurvivesFullResync(t *testing.T) {
	r, err := NewReconciler(newMaps(t, nil), slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	r.QuarantineFreedIDs()
	mustApply(t, r, state(port("10.96.0.10:80", TCP, "10.244.1.2:80")))
	freed := r.backends[keyOf(Backend{Addr: mustAddr("10.244.1.2"), Port: 80}, TCP)]
	s := state(port("10.96.0.10:80", TCP, "10.244.1.3:80"))
	mustApply(t, r, s)
	if _, _, err := r.Apply(s); err != nil { // a full resync: adopt, compare all
		t.Fatal(err)
	}
	s = state(port("10.96.0.10:80", TCP, "10.244.1.3:80", "10.244.1.4:80"))
	mustApply(t, r, s)
	if got := r.backends[keyOf(Backend{Addr: mustAddr("10.244.1.4"), Port: 80}, TCP)]; got == freed {
		t.Fatalf("backend id %d reused after a full resync while quarantined", freed)
	}
	if qb, _ := r.QuarantinedIDs(); qb != 1 {
		t.Errorf("%d backend ids quarantined, want 1", qb)
	}
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }
