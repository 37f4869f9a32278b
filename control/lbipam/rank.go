package lbipam

import (
	"cmp"
	"hash/fnv"
	"net/netip"
	"slices"
)

// Rank orders the candidate nodes for announcing addr, best first, by
// rendezvous hashing of (address, node name): every agent that sees the
// same candidates computes the same order, and a node that leaves moves
// only the addresses it announced, each to the next node of its own
// ranking.
func Rank(addr netip.Addr, nodes []string) []string {
	type scored struct {
		name  string
		score uint64
	}
	s := make([]scored, len(nodes))
	a := addr.As16()
	for i, n := range nodes {
		h := fnv.New64a()
		h.Write(a[:])
		h.Write([]byte{0})
		h.Write([]byte(n))
		s[i] = scored{n, h.Sum64()}
	}
	slices.SortFunc(s, func(x, y scored) int {
		if c := cmp.Compare(y.score, x.score); c != 0 {
			return c
		}
		return cmp.Compare(x.name, y.name)
	})
	out := make([]string, 0, len(s))
	for i, x := range s {
		if i > 0 && x.name == s[i-1].name {
			continue
		}
		out = append(out, x.name)
	}
	return out
}

// Announcement is one address to announce and who may: the Ready nodes
// (for externalTrafficPolicy: Local, those of them with a ready local
// endpoint).
type Announcement struct {
	Addr       netip.Addr
	Candidates []string
}

// Announced returns the addresses node announces: those whose ranking it
// heads. Sorted.
func Announced(node string, anns []Announcement) []netip.Addr {
	var out []netip.Addr
	for _, a := range anns {
		if r := Rank(a.Addr, a.Candidates); len(r) > 0 && r[0] == node {
			out = append(out, a.Addr)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out)
}
