package metrics

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluice-lb/sluice/bpf"
	"github.com/sluice-lb/sluice/maps"
)

// fillMap is a datapath map whose fill is exported: how many entries it
// holds out of how many it can.
type fillMap struct {
	name string // the map's pinned name, the "map" label
	// count reads the entries in use; nil when they are not read at
	// scrape time (capacity only) or the Datapath lacks the map.
	count func() (int, error)
	// capacity is how many entries can be in use; 0 when the Datapath
	// lacks the map.
	capacity uint32
}

// fillMaps lists the maps with a meaningful fill. Add a map here when it
// is added to maps.Datapath; TestEveryMapAccountedFor fails on a map of
// the object that is neither here nor in notFilled.
//
// Hash and LRU maps count their entries at every scrape, in batches
// (hashFill): the cost follows the entries, not the size (0.3–0.5 µs an
// entry on a 2-core VM: 80–120 ms for a ct4 of 250k flows, ~1 ms for
// empty maps; BenchmarkScrape).
//
// The id-indexed arrays export their capacity only (idFill). Counting
// their slots in use means reading every slot whatever the content,
// 75–130 ms per array of the default 262144 slots on the same VM, paid at
// every scrape of an idle node too; the control plane, which allocates
// the ids, exports the counts: sluice_backends_programmed (lb4_backends)
// and sluice_frontends_programmed (one lb4_revnat id each).
func fillMaps(dp *maps.Datapath) []fillMap {
	return []fillMap{
		hashFill(bpf.SluiceMapLb4Services, dp.LB4.Services),
		idFill(bpf.SluiceMapLb4Backends, dp.LB4.Backends),
		idFill(bpf.SluiceMapLb4Revnat, dp.LB4.RevNat),
		hashFill(bpf.SluiceMapLb4Affinity, dp.LB4.Affinity),
		hashFill(bpf.SluiceMapLb4AffinityMatch, dp.LB4.AffinityMatch),
		hashFill(bpf.SluiceMapCt4V3, dp.CT4),
		hashFill(bpf.SluiceMapLb4Fragments, dp.LB4.Fragments),
		hashFill(bpf.SluiceMapLb4SockRevnat, dp.LB4.SockRevNat),
		hashFill(bpf.SluiceMapLb4SockBackend, dp.LB4.SockBackend),
		hashFill(bpf.SluiceMapL2Announce4, dp.L2Announce),
	}
}

// notFilled are the maps of the object whose fill means nothing, and why.
var notFilled = map[string]string{
	bpf.SluiceMapLb4Prefilter:       "one entry, a bitmap",
	bpf.SluiceMapSluiceConfig:       "one entry",
	bpf.SluiceMapSluiceCtTimeouts:   "one entry per lifetime, all written at start",
	bpf.SluiceMapSluiceCounters:     "one slot per reason, all always present; exported as sluice_datapath_*_total",
	bpf.SluiceMapSluiceRejectRate:   "one entry, written at start",
	bpf.SluiceMapSluiceRejectBucket: "one token bucket per CPU; limited errors are counted as reject-rate-limited",
	bpf.SluiceMapLb4SourceRanges:    "an LPM trie, one entry per load-balancer source range the control plane programs (no batch walk; the ranges are in sluice lb list)",
}

// hashFill counts every entry of a hash or LRU map. The map is read in
// batches of 4096 entries per syscall (maps.Map.Each), element-wise only
// on kernels without batch operations. A batch copies values too, but
// costs a quarter of key-only iteration, which is one syscall per key
// (BenchmarkScrape/ct4/nextkey).
func hashFill[K comparable, V any](name string, m *maps.Map[K, V]) fillMap {
	if m == nil || m.Raw() == nil {
		return fillMap{name: name}
	}
	return fillMap{
		name:     name,
		capacity: m.Raw().MaxEntries(),
		count: func() (int, error) {
			n := 0
			err := m.Each(func(K, V) bool { n++; return true })
			return n, err
		},
	}
}

// idFill is an array indexed by ids the control plane allocates: id 0 is
// never allocated, so max_entries - 1 can be in use. Its slots are not
// counted (see fillMaps).
func idFill[V any](name string, m *maps.Map[uint32, V]) fillMap {
	if m == nil || m.Raw() == nil {
		return fillMap{name: name}
	}
	return fillMap{name: name, capacity: max(m.Raw().MaxEntries(), 1) - 1}
}

// datapathCollector reads the datapath's maps at every scrape.
type datapathCollector struct {
	dp   *maps.Datapath
	fill []fillMap

	packets, bytes            *prometheus.Desc
	entries, capacity, filled *prometheus.Desc
}

// NewDatapathCollector returns a collector that reads dp's maps at scrape
// time: the per-reason counters (sluice_datapath_packets_total and
// sluice_datapath_bytes_total, by reason as maps.ReasonNames names it),
// the capacity of every map in fillMaps (sluice_map_capacity, by map) and
// the entries and fill ratio of its hash and LRU maps (sluice_map_entries,
// sluice_map_fill_ratio). A map that cannot be read yields an invalid
// metric, which fails that map's series for the scrape, never the agent.
func NewDatapathCollector(dp *maps.Datapath) prometheus.Collector {
	desc := func(name, help, label string) *prometheus.Desc {
		return prometheus.NewDesc(namespace+"_"+name, help, []string{label}, nil)
	}
	var fill []fillMap
	for _, f := range fillMaps(dp) {
		if f.capacity > 0 {
			fill = append(fill, f)
		}
	}
	return &datapathCollector{
		dp:   dp,
		fill: fill,
		packets: desc("datapath_packets_total",
			"Packets the datapath handled, by the reason for its verdict.", "reason"),
		bytes: desc("datapath_bytes_total",
			"Bytes the datapath handled, by the reason for its verdict.", "reason"),
		entries: desc("map_entries",
			"Entries in use in a BPF map, read at scrape time.", "map"),
		capacity: desc("map_capacity",
			"Entries a BPF map can hold.", "map"),
		filled: desc("map_fill_ratio",
			"map_entries / map_capacity; conntrack (ct4_v3) at 1 refuses new flows.", "map"),
	}
}

func (c *datapathCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.packets, c.bytes, c.entries, c.capacity, c.filled} {
		ch <- d
	}
}

func (c *datapathCollector) Collect(ch chan<- prometheus.Metric) {
	c.collectCounters(ch)
	for _, f := range c.fill {
		c.collectFill(ch, f)
	}
}

func (c *datapathCollector) collectCounters(ch chan<- prometheus.Metric) {
	if c.dp.Counters == nil {
		return
	}
	counts, err := c.dp.ReadCounters()
	if err != nil {
		err = fmt.Errorf("read sluice_counters: %w", err)
		ch <- prometheus.NewInvalidMetric(c.packets, err)
		ch <- prometheus.NewInvalidMetric(c.bytes, err)
		return
	}
	for _, r := range counts {
		ch <- prometheus.MustNewConstMetric(c.packets, prometheus.CounterValue, float64(r.Packets), r.Reason)
		ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.CounterValue, float64(r.Bytes), r.Reason)
	}
}

func (c *datapathCollector) collectFill(ch chan<- prometheus.Metric, f fillMap) {
	ch <- prometheus.MustNewConstMetric(c.capacity, prometheus.GaugeValue, float64(f.capacity), f.name)
	if f.count == nil {
		return
	}
	n, err := f.count()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.entries, fmt.Errorf("read %s: %w", f.name, err))
		return
	}
	ch <- prometheus.MustNewConstMetric(c.entries, prometheus.GaugeValue, float64(n), f.name)
	ch <- prometheus.MustNewConstMetric(c.filled, prometheus.GaugeValue, float64(n)/float64(f.capacity), f.name)
}
