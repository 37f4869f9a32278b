package control

import (
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"testing"

	"github.com/sluice-lb/sluice/bpf"
	"github.com/sluice-lb/sluice/maps"
)

// Apply makes l2_announce4 hold exactly what is wanted, reports only the
// entries it added (the addresses taken over), and repairs entries removed
// or changed behind its back.
func TestL2ReconcilerApply(t *testing.T) {
	dp := newDatapath(t, nil)
	r := NewL2Reconciler(dp.L2Announce, slog.Default())
	mac := net.HardwareAddr{2, 0, 0, 0, 0, 1}
	e := func(ifindex int, a string) L2Entry { return L2Entry{ifindex, netip.MustParseAddr(a), mac} }
	addrs := func(es []L2Entry) []string {
		var out []string
		for _, x := range es {
			out = append(out, x.Addr.String())
		}
		slices.Sort(out)
		return out
	}
	apply := func(want []L2Entry, wantAdded ...string) {
		t.Helper()
		added, err := r.Apply(want)
		if err != nil {
			t.Fatal(err)
		}
		if got := addrs(added); !slices.Equal(got, wantAdded) {
			t.Errorf("added %v, want %v", got, wantAdded)
		}
		have, err := ReadL2(dp.L2Announce)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.EqualFunc(have, sortedL2(want), func(a, b L2Entry) bool {
			return a.Ifindex == b.Ifindex && a.Addr == b.Addr && a.MAC.String() == b.MAC.String()
		}) {
			t.Errorf("map holds %v, want %v", have, want)
		}
	}
	apply([]L2Entry{e(2, "10.0.0.1"), e(2, "10.0.0.2")}, "10.0.0.1", "10.0.0.2")
	apply([]L2Entry{e(2, "10.0.0.1"), e(2, "10.0.0.2")}) // nothing new
	apply([]L2Entry{e(2, "10.0.0.2"), e(3, "10.0.0.3")}, "10.0.0.3")
	// Behind sluice's back: one deleted, one with a wrong MAC, one extra.
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(dp.L2Announce.Delete(e(3, "10.0.0.3").key()))
	must(dp.L2Announce.Put(e(2, "10.0.0.2").key(), bpf.SluiceL2Announce4{Mac: [6]byte{9, 9, 9, 9, 9, 9}}))
	must(dp.L2Announce.Put(bpf.SluiceL2Announce4Key{Ifindex: 7, Addr: maps.Addr4(netip.MustParseAddr("10.0.0.9"))}, bpf.SluiceL2Announce4{}))
	apply([]L2Entry{e(2, "10.0.0.2"), e(3, "10.0.0.3")}, "10.0.0.3")
	apply(nil)
}

func sortedL2(es []L2Entry) []L2Entry {
	out := slices.Clone(es)
	slices.SortFunc(out, func(a, b L2Entry) int {
		if a.Ifindex != b.Ifindex {
			return a.Ifindex - b.Ifindex
		}
		return a.Addr.Compare(b.Addr)
	})
	return out
}
