package lbipam

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"
)

func TestRank(t *testing.T) {
	a := netip.MustParseAddr("192.168.50.200")
	nodes := []string{"n1", "n2", "n3", "n4"}
	r := Rank(a, nodes)
	for _, tc := range []struct {
		name  string
		nodes []string
		want  []string
	}{
		{"same order whatever the input order", []string{"n4", "n2", "n1", "n3"}, r},
		{"duplicates counted once", append(slices.Clone(nodes), "n2", "n1"), r},
		{"the first gone: the rest keep their order", slices.DeleteFunc(slices.Clone(nodes), func(n string) bool { return n == r[0] }), r[1:]},
		{"no candidates", nil, []string{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Rank(a, tc.nodes); !slices.Equal(got, tc.want) {
				t.Errorf("Rank = %v, want %v", got, tc.want)
			}
		})
	}
	if len(r) != 4 {
		t.Fatalf("ranking %v lacks nodes", r)
	}
}

// Addresses spread over the nodes, and a node's departure moves only its
// own.
func TestRankSpreads(t *testing.T) {
	nodes := []string{"n1", "n2", "n3"}
	first := map[string]int{}
	moved := 0
	for i := range 300 {
		a := netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)})
		r := Rank(a, nodes)
		first[r[0]]++
		after := Rank(a, []string{"n1", "n2"})
		if r[0] != "n3" && after[0] != r[0] {
			moved++
		}
	}
	for _, n := range nodes {
		if first[n] < 60 {
			t.Errorf("node %s heads %d of 300 rankings: %v", n, first[n], first)
		}
	}
	if moved != 0 {
		t.Errorf("%d addresses not on n3 moved when n3 left", moved)
	}
}

func TestAnnounced(t *testing.T) {
	addrs := make([]netip.Addr, 8)
	for i := range addrs {
		addrs[i] = netip.MustParseAddr(fmt.Sprintf("10.0.0.%d", i+1))
	}
	all := []string{"n1", "n2", "n3"}
	var anns []Announcement
	for _, a := range addrs {
		anns = append(anns, Announcement{a, all})
	}
	// Local policy: only n2 has an endpoint.
	local := netip.MustParseAddr("10.0.1.1")
	anns = append(anns, Announcement{local, []string{"n2"}}, Announcement{netip.MustParseAddr("10.0.1.2"), nil})
	seen := map[netip.Addr]string{}
	for _, n := range all {
		for _, a := range Announced(n, anns) {
			if o, dup := seen[a]; dup {
				t.Errorf("%s announced by %s and %s", a, o, n)
			}
			seen[a] = n
		}
	}
	if len(seen) != len(addrs)+1 {
		t.Errorf("announced %v: want each of the %d addresses with candidates once", seen, len(addrs)+1)
	}
	if seen[local] != "n2" {
		t.Errorf("%s announced by %q, want n2 (its only endpoint's node)", local, seen[local])
	}
}
