package maps

import (
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/sluice-lb/sluice/bpf"
	"github.com/sluice-lb/sluice/internal/testenv"
)

// A range written with SourceRangeKey matches, in the kernel's trie,
// exactly the sources inside it and only for its own frontend, as the
// datapath's lookup (prefixlen 64, id, source) asks; the key reads back as
// the range it was made of.
func TestSourceRangeKeyMatchesInTheTrie(t *testing.T) {
	testenv.Privileged(t)
	spec, err := bpf.LoadSluice()
	if err != nil {
		t.Fatal(err)
	}
	ms := spec.Maps[bpf.SluiceMapLb4SourceRanges].Copy()
	ms.Pinning = ebpf.PinNone
	m, err := ebpf.NewMap(ms)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	w := New[bpf.SluiceLb4SrcRangeKey, uint8](m)
	ranges := []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("198.51.100.7/32"), netip.MustParsePrefix("0.0.0.0/0")}
	keys := []bpf.SluiceLb4SrcRangeKey{SourceRangeKey(7, ranges[0]), SourceRangeKey(7, ranges[1]), SourceRangeKey(9, ranges[2])}
	if err := w.PutAll(keys, []uint8{1, 1, 1}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		id   uint32
		src  string
		want bool
	}{
		{7, "192.0.2.200", true}, {7, "192.0.3.1", false}, {7, "198.51.100.7", true}, {7, "198.51.100.8", false},
		{8, "192.0.2.1", false}, {9, "203.0.113.1", true},
	} {
		k := bpf.SluiceLb4SrcRangeKey{Prefixlen: 64, RevNatId: c.id, Addr: Addr4(netip.MustParseAddr(c.src))}
		_, err := w.Lookup(k)
		if got := err == nil; got != c.want {
			t.Errorf("id %d source %s: allowed %v, want %v", c.id, c.src, got, c.want)
		}
	}
	got := map[netip.Prefix]uint32{}
	if err := w.Each(func(k bpf.SluiceLb4SrcRangeKey, _ uint8) bool {
		id, p, ok := SourceRangeFrom(k)
		if !ok {
			t.Errorf("key %+v does not read back", k)
		}
		got[p] = id
		return true
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[ranges[0]] != 7 || got[ranges[1]] != 7 || got[ranges[2]] != 9 {
		t.Errorf("read back %v", got)
	}
	if err := w.DeleteAll(keys[:2]); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Lookup(bpf.SluiceLb4SrcRangeKey{Prefixlen: 64, RevNatId: 7, Addr: Addr4(netip.MustParseAddr("192.0.2.1"))}); err == nil {
		t.Error("deleted range still matches")
	}
}
