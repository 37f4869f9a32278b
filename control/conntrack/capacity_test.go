package conntrack

import (
	"strings"
	"testing"

	"github.com/sluice-lb/sluice/internal/testenv"
)

func TestSizeTable(t *testing.T) {
	const gib = 1 << 30
	cases := []struct {
		name    string
		c       SizeConfig
		entries uint32
		derived string
	}{
		// 0.25% of 24 GiB = 61 MiB; at 104 bytes 619k entries, 512k
		// rounded down.
		{"budget", SizeConfig{PhysicalBytes: 24 * gib, MemoryPercent: 0.25, EntryBytes: 104}, 1 << 19, "power of two"},
		{"small node", SizeConfig{PhysicalBytes: gib, MemoryPercent: 0.25, EntryBytes: 104}, MinBudgetEntries, "minimum"},
		{"huge node", SizeConfig{PhysicalBytes: 4096 * gib, MemoryPercent: 10, EntryBytes: 104}, MaxBudgetEntries, "maximum"},
		{"override in flows", SizeConfig{PhysicalBytes: 24 * gib, MemoryPercent: 0.25, EntryBytes: 104, MaxFlows: 1000}, 2000, "--ct-max"},
	}
	for _, c := range cases {
		s, err := SizeTable(c.c)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if s.Entries != c.entries || s.Flows() != c.entries/2 || !strings.Contains(s.Derived, c.derived) {
			t.Errorf("%s: %d entries (%q), want %d (%q)", c.name, s.Entries, s.Derived, c.entries, c.derived)
		}
	}
	for _, c := range []SizeConfig{
		{PhysicalBytes: gib, MemoryPercent: 0, EntryBytes: 104},
		{PhysicalBytes: gib, MemoryPercent: 101, EntryBytes: 104},
		{PhysicalBytes: gib, MemoryPercent: 1},
	} {
		if _, err := SizeTable(c); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
}

// The kernel's price of an entry: key 16 and value 24 bytes, the hash
// element's header, a bucket, a share of the per-CPU spares.
func TestMeasureEntryBytes(t *testing.T) {
	testenv.Privileged(t)
	b, err := MeasureEntryBytes()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("a ct4_v3 entry costs %d bytes on this kernel", b)
	if b < 16+24 || b > 512 {
		t.Errorf("%d bytes an entry: not what a preallocated hash of 40-byte entries costs", b)
	}
}
