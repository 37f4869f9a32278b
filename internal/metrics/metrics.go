// Package metrics is sluice's Prometheus metrics: the control plane's, with
// kube-proxy's names under the sluice namespace (kubeproxy_X becomes
// sluice_X) so that dashboards and alerts carry over, and the datapath's,
// read from the BPF maps at scrape time (NewDatapathCollector).
package metrics

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	corev1 "k8s.io/api/core/v1"
)

const namespace = "sluice"

// syncBuckets are kube-proxy's for sync durations: 1 ms to ~16 s.
var syncBuckets = prometheus.ExponentialBuckets(0.001, 2, 15)

// networkProgrammingBuckets are kube-proxy's for network programming
// latency: 0.25 s, 0.5 s, every second to 59 s, every 5 s to 115 s, every
// 30 s to 5 min.
var networkProgrammingBuckets = concat(
	prometheus.LinearBuckets(0.25, 0.25, 2),
	prometheus.LinearBuckets(1, 1, 59),
	prometheus.LinearBuckets(60, 5, 12),
	prometheus.LinearBuckets(120, 30, 7),
)

func concat(parts ...[]float64) []float64 {
	var out []float64
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// Metrics are the control plane's metrics, registered on one registry.
// Every method is safe for concurrent use.
type Metrics struct {
	reg *prometheus.Registry

	syncDuration        prometheus.Histogram
	syncFullDuration    prometheus.Histogram
	syncPartialDuration prometheus.Histogram
	networkProgramming  prometheus.Histogram
	lastSync            prometheus.Gauge
	lastQueued          prometheus.Gauge
	syncFailures        prometheus.Counter
	services            prometheus.Gauge
	frontends           prometheus.Gauge
	backends            prometheus.Gauge
	healthCheckPorts    prometheus.Gauge
	skipped             *skipped
}

// New registers the control plane's metrics, with the Go runtime and
// process collectors, on reg, or on a new registry when reg is nil. It
// panics if reg already has any of them (a programming error, as with
// prometheus.MustRegister).
func New(reg *prometheus.Registry) *Metrics {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	histogram := func(name, help string, buckets []float64) prometheus.Histogram {
		return prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Name: name, Help: help, Buckets: buckets,
		})
	}
	gauge := func(name, help string) prometheus.Gauge {
		return prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Name: name, Help: help})
	}
	m := &Metrics{
		reg: reg,
		syncDuration: histogram("sync_proxy_rules_duration_seconds",
			"Time to program one sync of the desired state into the datapath maps, full and partial.", syncBuckets),
		syncFullDuration: histogram("sync_full_proxy_rules_duration_seconds",
			"Time to program one full sync (every map read back and reconciled).", syncBuckets),
		syncPartialDuration: histogram("sync_partial_proxy_rules_duration_seconds",
			"Time to program one partial sync (only what changed).", syncBuckets),
		networkProgramming: histogram("network_programming_duration_seconds",
			"Time from a Service or endpoint change (the EndpointSlice's "+corev1.EndpointsLastChangeTriggerTime+
				" annotation) to the datapath serving it.", networkProgrammingBuckets),
		lastSync: gauge("sync_proxy_rules_last_timestamp_seconds",
			"Unix time the last successful sync ended."),
		lastQueued: gauge("sync_proxy_rules_last_queued_timestamp_seconds",
			"Unix time a sync was last queued; far past sync_proxy_rules_last_timestamp_seconds means syncs are stuck."),
		syncFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "sync_proxy_rules_failures_total",
			Help: "Syncs that failed to program the datapath maps (they are retried).",
		}),
		services:  gauge("services_programmed", "Services with at least one frontend in the datapath."),
		frontends: gauge("frontends_programmed", "Frontends (address, port, protocol) in the datapath."),
		backends:  gauge("backends_programmed", "Backends in the datapath (entries of lb4_backends)."),
		healthCheckPorts: gauge("health_check_node_ports",
			"healthCheckNodePorts served: Services of type LoadBalancer with externalTrafficPolicy Local whose health check server listens."),
		skipped: &skipped{desc: prometheus.NewDesc(namespace+"_skipped_objects",
			"Objects, or parts of them, left out of the desired state, by reason.",
			[]string{"reason"}, nil)},
	}
	reg.MustRegister(
		m.syncDuration, m.syncFullDuration, m.syncPartialDuration, m.networkProgramming,
		m.lastSync, m.lastQueued, m.syncFailures,
		m.services, m.frontends, m.backends, m.healthCheckPorts, m.skipped,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// Registry returns the registry the metrics are on.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// ObserveSync records a successful sync from start to end: its duration,
// in the full or partial histogram too, and end as the last sync time.
func (m *Metrics) ObserveSync(start, end time.Time, full bool) {
	d := max(end.Sub(start), 0).Seconds()
	m.syncDuration.Observe(d)
	if full {
		m.syncFullDuration.Observe(d)
	} else {
		m.syncPartialDuration.Observe(d)
	}
	m.lastSync.Set(unixSeconds(end))
}

// QueuedSync records that a sync was requested at t.
func (m *Metrics) QueuedSync(t time.Time) { m.lastQueued.Set(unixSeconds(t)) }

// SyncFailed counts a sync that did not complete.
func (m *Metrics) SyncFailed() { m.syncFailures.Inc() }

// ObserveNetworkProgramming records, for every trigger time of the objects
// a sync programmed (the last-change-trigger-time of each changed EndpointSlice), the time
// from it to programmed. Zero times (no annotation) are ignored; a trigger
// time after programmed (clock skew between the node and the control
// plane) counts as 0.
func (m *Metrics) ObserveNetworkProgramming(triggerTimes []time.Time, programmed time.Time) {
	for _, t := range triggerTimes {
		if t.IsZero() {
			continue
		}
		m.networkProgramming.Observe(max(programmed.Sub(t), 0).Seconds())
	}
}

// SetProgrammed sets how many services, frontends and backends the
// datapath holds after a sync.
func (m *Metrics) SetProgrammed(services, frontends, backends int) {
	m.services.Set(float64(services))
	m.frontends.Set(float64(frontends))
	m.backends.Set(float64(backends))
}

// SetHealthCheckPorts sets how many healthCheckNodePorts have a server
// listening.
func (m *Metrics) SetHealthCheckPorts(n int) { m.healthCheckPorts.Set(float64(n)) }

// SetSkipped replaces the skipped-object counts: byReason maps a
// control.Skip* class to how many objects it skipped. A reason absent from
// byReason disappears from sluice_skipped_objects; pass it with 0 to keep
// its series at 0.
func (m *Metrics) SetSkipped(byReason map[string]int) {
	counts := make(map[string]int, len(byReason))
	for r, n := range byReason {
		counts[r] = n
	}
	m.skipped.mu.Lock()
	m.skipped.counts = counts
	m.skipped.mu.Unlock()
}

func unixSeconds(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

// skipped exports the last SetSkipped counts. A collector rather than a
// GaugeVec so that replacing every label value is one step a scrape cannot
// see half done.
type skipped struct {
	desc   *prometheus.Desc
	mu     sync.Mutex
	counts map[string]int
}

func (s *skipped) Describe(ch chan<- *prometheus.Desc) { ch <- s.desc }

func (s *skipped) Collect(ch chan<- prometheus.Metric) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for reason, n := range s.counts {
		ch <- prometheus.MustNewConstMetric(s.desc, prometheus.GaugeValue, float64(n), reason)
	}
}
