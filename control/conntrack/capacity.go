package conntrack

import (
	"fmt"
	"math/bits"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/sluice-lb/sluice/bpf"
	"github.com/sluice-lb/sluice/maps"
)

// Bounds of a table sized from the memory budget, in entries (a flow takes
// two): at least 32k flows, however small the node; at most 8M flows
// (about 1.7 GB of kernel memory at ~104 bytes an entry), however large.
const (
	MinBudgetEntries = 1 << 16
	MaxBudgetEntries = 1 << 24
)

// DefaultMemoryPercent is the share of the node's physical memory the
// conntrack table takes unless told otherwise.
const DefaultMemoryPercent = 0.25

// SizeConfig is what the size of ct4_v3 is derived from.
type SizeConfig struct {
	// PhysicalBytes is the node's physical memory (PhysicalMemory).
	PhysicalBytes uint64
	// MemoryPercent of PhysicalBytes is the table's budget.
	MemoryPercent float64
	// EntryBytes is what one entry costs the kernel (MeasureEntryBytes).
	EntryBytes uint64
	// MaxFlows, when not 0, is the size asked for, in flows: it overrides
	// the budget, unrounded and unclamped.
	MaxFlows uint32
}

// Size is a table size and how it was arrived at, for the start-up log.
type Size struct {
	Entries uint32
	Derived string
}

// Flows is how many flows the table holds.
func (s Size) Flows() uint32 { return maps.CT4Flows(s.Entries) }

// SizeTable derives the number of entries of ct4_v3: MaxFlows when set,
// else the budget divided by the cost of an entry, rounded down to a power
// of two (the kernel's bucket count is one: a power of two wastes none),
// clamped to [MinBudgetEntries, MaxBudgetEntries].
func SizeTable(c SizeConfig) (Size, error) {
	if c.MaxFlows != 0 {
		if c.MaxFlows > 1<<31 {
			return Size{}, fmt.Errorf("%d flows: at most %d", c.MaxFlows, 1<<31)
		}
		return Size{Entries: 2 * c.MaxFlows, Derived: fmt.Sprintf("--ct-max %d flows", c.MaxFlows)}, nil
	}
	if c.MemoryPercent <= 0 || c.MemoryPercent > 100 || c.EntryBytes == 0 {
		return Size{}, fmt.Errorf("memory budget %.4g%% at %d bytes an entry: want a share in (0, 100]", c.MemoryPercent, c.EntryBytes)
	}
	budget := uint64(float64(c.PhysicalBytes) * c.MemoryPercent / 100)
	fit := budget / c.EntryBytes
	entries := uint64(MinBudgetEntries)
	how := "clamped to the minimum"
	switch {
	case fit >= MaxBudgetEntries:
		entries, how = MaxBudgetEntries, "clamped to the maximum"
	case fit > MinBudgetEntries:
		entries, how = 1<<(bits.Len64(fit)-1), "rounded down to a power of two"
	}
	return Size{Entries: uint32(entries), Derived: fmt.Sprintf("%.4g%% of %d MiB physical memory = %d MiB at %d bytes an entry, %s",
		c.MemoryPercent, c.PhysicalBytes>>20, budget>>20, c.EntryBytes, how)}, nil
}

// PhysicalMemory is the node's physical memory in bytes.
func PhysicalMemory() (uint64, error) {
	var si unix.Sysinfo_t
	if err := unix.Sysinfo(&si); err != nil {
		return 0, fmt.Errorf("sysinfo: %w", err)
	}
	return uint64(si.Totalram) * uint64(si.Unit), nil
}

// probeEntries is the size of the map MeasureEntryBytes creates: large
// enough that the per-CPU spare elements are noise, small enough to be
// cheap (~6 MiB, for a moment).
const probeEntries = 1 << 16

// MeasureEntryBytes asks the kernel what one entry of ct4_v3 costs: it
// creates an unpinned map of ct4_v3's type and layout with probeEntries
// entries and divides the memory charged for it (the element with its
// key, value and hash-table header, its bucket, a share of the per-CPU
// spares) by the entries. The caller must be allowed to create maps
// (RLIMIT_MEMLOCK lifted on kernels before 5.11).
func MeasureEntryBytes() (uint64, error) {
	spec, err := bpf.LoadSluice()
	if err != nil {
		return 0, err
	}
	ms := spec.Maps[bpf.SluiceMapCt4V3].Copy()
	ms.Pinning = ebpf.PinNone
	ms.MaxEntries = probeEntries
	m, err := ebpf.NewMap(ms)
	if err != nil {
		return 0, fmt.Errorf("probe map: %w", err)
	}
	defer m.Close()
	b, err := maps.MemoryBytes(m)
	if err != nil {
		return 0, err
	}
	return (b + probeEntries - 1) / probeEntries, nil
}
