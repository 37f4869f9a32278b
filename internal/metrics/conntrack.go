package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// sweepBuckets: 1 ms to ~65 s; a sweep of a million entries takes about a
// second.
var sweepBuckets = prometheus.ExponentialBuckets(0.001, 2, 17)

// Conntrack are the metrics of the agent's conntrack collector.
type Conntrack struct {
	sweepDuration prometheus.Histogram
	deleted       *prometheus.CounterVec
	repaired      prometheus.Counter
	entries       *prometheus.GaugeVec
	capacity      prometheus.Gauge
	interval      prometheus.Gauge
	quarantined   *prometheus.GaugeVec
}

// CTSweep is what one sweep of the collector did, as the metrics see it.
type CTSweep struct {
	Duration                 time.Duration
	Forward, Reply           int // entries left, by kind
	Expired, Orphans, Purged int // entries deleted, by cause
	Repaired                 int
	Next                     time.Duration // wait before the next sweep
	// Ids waiting for a sweep before they may be reused.
	QuarantinedBackends, QuarantinedRevNats int
}

// NewConntrack registers the collector's metrics on reg; capacity is the
// table's size in entries.
func NewConntrack(reg prometheus.Registerer, capacity uint32) *Conntrack {
	m := &Conntrack{
		sweepDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Name: "conntrack_sweep_duration_seconds",
			Help: "Time one sweep of the conntrack collector took.", Buckets: sweepBuckets,
		}),
		deleted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "conntrack_entries_deleted_total",
			Help: "Conntrack entries the collector deleted, by cause: expired (both entries of the flow), " +
				"orphan (reply entry without its flow), purged (UDP flow whose backend left).",
		}, []string{"cause"}),
		repaired: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "conntrack_entries_repaired_total",
			Help: "Reply entries the collector recreated for live flows that had lost theirs.",
		}),
		entries: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Name: "conntrack_entries",
			Help: "Conntrack entries after the last sweep, by kind (forward, reply).",
		}, []string{"kind"}),
		capacity: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "conntrack_capacity_entries",
			Help: "Size of the conntrack table in entries (a flow takes two).",
		}),
		interval: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "conntrack_sweep_interval_seconds",
			Help: "Wait before the collector's next periodic sweep.",
		}),
		quarantined: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Name: "quarantined_ids",
			Help: "Freed ids held back until a conntrack sweep finds no entry naming them, by kind (backend, revnat).",
		}, []string{"kind"}),
	}
	for _, c := range []string{"expired", "orphan", "purged"} {
		m.deleted.WithLabelValues(c)
	}
	m.capacity.Set(float64(capacity))
	reg.MustRegister(m.sweepDuration, m.deleted, m.repaired, m.entries, m.capacity, m.interval, m.quarantined)
	return m
}

// ObserveSweep records one complete sweep.
func (m *Conntrack) ObserveSweep(s CTSweep) {
	m.sweepDuration.Observe(s.Duration.Seconds())
	m.deleted.WithLabelValues("expired").Add(float64(s.Expired))
	m.deleted.WithLabelValues("orphan").Add(float64(s.Orphans))
	m.deleted.WithLabelValues("purged").Add(float64(s.Purged))
	m.repaired.Add(float64(s.Repaired))
	m.entries.WithLabelValues("forward").Set(float64(s.Forward))
	m.entries.WithLabelValues("reply").Set(float64(s.Reply))
	m.interval.Set(s.Next.Seconds())
	m.quarantined.WithLabelValues("backend").Set(float64(s.QuarantinedBackends))
	m.quarantined.WithLabelValues("revnat").Set(float64(s.QuarantinedRevNats))
}
