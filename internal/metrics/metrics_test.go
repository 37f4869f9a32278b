package metrics

import (
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
)

var t0 = time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)

// families gathers reg, by name.
func families(t *testing.T, reg prometheus.Gatherer) map[string]*dto.MetricFamily {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	out := map[string]*dto.MetricFamily{}
	for _, mf := range mfs {
		out[mf.GetName()] = mf
	}
	return out
}

func labelNames(m *dto.Metric) string {
	var names []string
	for _, l := range m.GetLabel() {
		names = append(names, l.GetName())
	}
	sort.Strings(names)
	return strings.Join(names, ",")
}

// TestNamesTypesLabels pins every metric operators graph: name, type and
// label names. A rename breaks dashboards, so it must break this first.
func TestNamesTypesLabels(t *testing.T) {
	m := New(nil)
	m.ObserveSync(t0, t0.Add(time.Millisecond), true)
	m.ObserveSync(t0, t0.Add(time.Millisecond), false)
	m.QueuedSync(t0)
	m.SyncFailed()
	m.ObserveNetworkProgramming([]time.Time{t0}, t0.Add(time.Second))
	m.SetProgrammed(1, 2, 3)
	m.SetHealthCheckPorts(1)
	m.SetSkipped(map[string]int{"invalid-ip": 1})

	want := map[string]struct {
		typ    dto.MetricType
		labels string
	}{
		"sluice_sync_proxy_rules_duration_seconds":              {dto.MetricType_HISTOGRAM, ""},
		"sluice_sync_full_proxy_rules_duration_seconds":         {dto.MetricType_HISTOGRAM, ""},
		"sluice_sync_partial_proxy_rules_duration_seconds":      {dto.MetricType_HISTOGRAM, ""},
		"sluice_network_programming_duration_seconds":           {dto.MetricType_HISTOGRAM, ""},
		"sluice_sync_proxy_rules_last_timestamp_seconds":        {dto.MetricType_GAUGE, ""},
		"sluice_sync_proxy_rules_last_queued_timestamp_seconds": {dto.MetricType_GAUGE, ""},
		"sluice_sync_proxy_rules_failures_total":                {dto.MetricType_COUNTER, ""},
		"sluice_services_programmed":                            {dto.MetricType_GAUGE, ""},
		"sluice_frontends_programmed":                           {dto.MetricType_GAUGE, ""},
		"sluice_backends_programmed":                            {dto.MetricType_GAUGE, ""},
		"sluice_health_check_node_ports":                        {dto.MetricType_GAUGE, ""},
		"sluice_skipped_objects":                                {dto.MetricType_GAUGE, "reason"},
		// Two of each standard collector, as witnesses that they are there.
		"go_goroutines":                 {dto.MetricType_GAUGE, ""},
		"go_gc_duration_seconds":        {dto.MetricType_SUMMARY, ""},
		"process_cpu_seconds_total":     {dto.MetricType_COUNTER, ""},
		"process_resident_memory_bytes": {dto.MetricType_GAUGE, ""},
	}
	got := families(t, m.Registry())
	for name, w := range want {
		mf, ok := got[name]
		if !ok {
			t.Errorf("%s: not registered", name)
			continue
		}
		if mf.GetType() != w.typ {
			t.Errorf("%s: type %v, want %v", name, mf.GetType(), w.typ)
		}
		for _, s := range mf.GetMetric() {
			if l := labelNames(s); l != w.labels {
				t.Errorf("%s: labels %q, want %q", name, l, w.labels)
			}
		}
	}
	for name := range got {
		if _, ok := want[name]; strings.HasPrefix(name, "sluice_") && !ok {
			t.Errorf("%s: registered but not pinned by this test", name)
		}
	}

	problems, err := testutil.GatherAndLint(m.Registry())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, "sluice_") {
			t.Errorf("lint: %s: %s", p.Metric, p.Text)
		}
	}
}

// TestBuckets checks the buckets are kube-proxy's, so that quantiles and
// SLO queries (network programming within 1 s, 5 s...) compare.
func TestBuckets(t *testing.T) {
	m := New(nil)
	m.ObserveSync(t0, t0, true)
	m.ObserveSync(t0, t0, false)
	m.ObserveNetworkProgramming([]time.Time{t0}, t0)
	got := families(t, m.Registry())
	bounds := func(name string) []float64 {
		var b []float64
		for _, bk := range got[name].GetMetric()[0].GetHistogram().GetBucket() {
			b = append(b, bk.GetUpperBound())
		}
		return b
	}
	var sync []float64
	for i, v := 0, 0.001; i < 15; i, v = i+1, v*2 {
		sync = append(sync, v)
	}
	for _, name := range []string{
		"sluice_sync_proxy_rules_duration_seconds",
		"sluice_sync_full_proxy_rules_duration_seconds",
		"sluice_sync_partial_proxy_rules_duration_seconds",
	} {
		if b := bounds(name); !slices.EqualFunc(b, sync, func(a, b float64) bool { return a-b < 1e-12 && b-a < 1e-12 }) {
			t.Errorf("%s: buckets %v, want %v", name, b, sync)
		}
	}
	np := []float64{0.25, 0.5}
	for s := 1.0; s <= 59; s++ {
		np = append(np, s)
	}
	for s := 60.0; s <= 115; s += 5 {
		np = append(np, s)
	}
	for s := 120.0; s <= 300; s += 30 {
		np = append(np, s)
	}
	if b := bounds("sluice_network_programming_duration_seconds"); !slices.Equal(b, np) {
		t.Errorf("network programming buckets %v, want %v", b, np)
	}
}

func TestObserveSync(t *testing.T) {
	m := New(nil)
	m.ObserveSync(t0, t0.Add(3*time.Millisecond), true)
	m.ObserveSync(t0, t0.Add(5*time.Millisecond), false)
	m.ObserveSync(t0.Add(time.Second), t0.Add(time.Second+7*time.Millisecond), false)
	end := t0.Add(time.Second + 7*time.Millisecond)

	got := families(t, m.Registry())
	for _, c := range []struct {
		name  string
		count uint64
		sum   float64
	}{
		{"sluice_sync_proxy_rules_duration_seconds", 3, 0.015},
		{"sluice_sync_full_proxy_rules_duration_seconds", 1, 0.003},
		{"sluice_sync_partial_proxy_rules_duration_seconds", 2, 0.012},
	} {
		h := got[c.name].GetMetric()[0].GetHistogram()
		if h.GetSampleCount() != c.count || !near(h.GetSampleSum(), c.sum) {
			t.Errorf("%s: count %d sum %g, want %d %g", c.name, h.GetSampleCount(), h.GetSampleSum(), c.count, c.sum)
		}
	}
	last := got["sluice_sync_proxy_rules_last_timestamp_seconds"].GetMetric()[0].GetGauge().GetValue()
	if want := float64(end.UnixNano()) / 1e9; !near(last, want) {
		t.Errorf("last timestamp %f, want %f (the end of the last sync)", last, want)
	}

	// An end before its start (a clock step) is a zero-length sync.
	m.ObserveSync(t0, t0.Add(-time.Second), true)
	h := families(t, m.Registry())["sluice_sync_full_proxy_rules_duration_seconds"].GetMetric()[0].GetHistogram()
	if h.GetSampleCount() != 2 || !near(h.GetSampleSum(), 0.003) {
		t.Errorf("negative sync: count %d sum %g, want 2 0.003", h.GetSampleCount(), h.GetSampleSum())
	}
}

func near(a, b float64) bool { return a-b < 1e-9 && b-a < 1e-9 }

func TestGauges(t *testing.T) {
	m := New(nil)
	m.QueuedSync(time.Unix(1700000000, 500000000))
	m.SyncFailed()
	m.SyncFailed()
	m.SetProgrammed(10, 25, 100)
	m.SetProgrammed(9, 24, 90)
	m.SetHealthCheckPorts(3)
	m.SetHealthCheckPorts(2)
	const want = `
# HELP sluice_sync_proxy_rules_last_queued_timestamp_seconds Unix time a sync was last queued; far past sync_proxy_rules_last_timestamp_seconds means syncs are stuck.
# TYPE sluice_sync_proxy_rules_last_queued_timestamp_seconds gauge
sluice_sync_proxy_rules_last_queued_timestamp_seconds 1.7000000005e+09
# HELP sluice_sync_proxy_rules_failures_total Syncs that failed to program the datapath maps (they are retried).
# TYPE sluice_sync_proxy_rules_failures_total counter
sluice_sync_proxy_rules_failures_total 2
# HELP sluice_services_programmed Services with at least one frontend in the datapath.
# TYPE sluice_services_programmed gauge
sluice_services_programmed 9
# HELP sluice_frontends_programmed Frontends (address, port, protocol) in the datapath.
# TYPE sluice_frontends_programmed gauge
sluice_frontends_programmed 24
# HELP sluice_backends_programmed Backends in the datapath (entries of lb4_backends).
# TYPE sluice_backends_programmed gauge
sluice_backends_programmed 90
# HELP sluice_health_check_node_ports healthCheckNodePorts served: Services of type LoadBalancer with externalTrafficPolicy Local whose health check server listens.
# TYPE sluice_health_check_node_ports gauge
sluice_health_check_node_ports 2
`
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want),
		"sluice_sync_proxy_rules_last_queued_timestamp_seconds", "sluice_sync_proxy_rules_failures_total",
		"sluice_services_programmed", "sluice_frontends_programmed", "sluice_backends_programmed",
		"sluice_health_check_node_ports",
	); err != nil {
		t.Error(err)
	}
}

func TestNetworkProgramming(t *testing.T) {
	programmed := t0.Add(time.Hour)
	tests := []struct {
		name     string
		triggers []time.Time
		count    uint64
		sum      float64
		// cumulative counts at some bucket bounds
		le map[float64]uint64
	}{
		{name: "none", count: 0},
		{name: "zero times ignored", triggers: []time.Time{{}, {}}, count: 0},
		{name: "one per trigger",
			triggers: []time.Time{programmed.Add(-300 * time.Millisecond), programmed.Add(-2 * time.Second), programmed.Add(-90 * time.Second)},
			count:    3, sum: 92.3,
			le: map[float64]uint64{0.25: 0, 0.5: 1, 2: 2, 85: 2, 90: 3}},
		{name: "trigger after programmed clamps to 0",
			triggers: []time.Time{programmed.Add(5 * time.Second), {}, programmed.Add(-time.Second)},
			count:    2, sum: 1,
			le: map[float64]uint64{0.25: 1, 1: 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := New(nil)
			m.ObserveNetworkProgramming(tt.triggers, programmed)
			h := families(t, m.Registry())["sluice_network_programming_duration_seconds"].GetMetric()[0].GetHistogram()
			if h.GetSampleCount() != tt.count || !near(h.GetSampleSum(), tt.sum) {
				t.Errorf("count %d sum %g, want %d %g", h.GetSampleCount(), h.GetSampleSum(), tt.count, tt.sum)
			}
			for _, b := range h.GetBucket() {
				if want, ok := tt.le[b.GetUpperBound()]; ok && b.GetCumulativeCount() != want {
					t.Errorf("le=%g: %d, want %d", b.GetUpperBound(), b.GetCumulativeCount(), want)
				}
			}
		})
	}
}

func TestSetSkipped(t *testing.T) {
	m := New(nil)
	const head = `
# HELP sluice_skipped_objects Objects, or parts of them, left out of the desired state, by reason.
# TYPE sluice_skipped_objects gauge
`
	steps := []struct {
		set  map[string]int
		want string
	}{
		{nil, ""},
		{map[string]int{"invalid-ip": 2, "map-full": 1, "unsupported-protocol": 0},
			head + `sluice_skipped_objects{reason="invalid-ip"} 2
sluice_skipped_objects{reason="map-full"} 1
sluice_skipped_objects{reason="unsupported-protocol"} 0
`},
		// Replaces every label value: invalid-ip and map-full are gone.
		{map[string]int{"no-service": 3},
			head + `sluice_skipped_objects{reason="no-service"} 3
`},
		{map[string]int{}, ""},
	}
	for i, s := range steps {
		m.SetSkipped(s.set)
		if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(s.want), "sluice_skipped_objects"); err != nil {
			t.Errorf("step %d: %v", i, err)
		}
	}

	// The caller's map is copied: changing it later changes nothing.
	in := map[string]int{"invalid-port": 1}
	m.SetSkipped(in)
	in["invalid-port"] = 7
	if n := testutil.CollectAndCount(m.skipped); n != 1 {
		t.Fatalf("%d series", n)
	}
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(head+`sluice_skipped_objects{reason="invalid-port"} 1
`), "sluice_skipped_objects"); err != nil {
		t.Error(err)
	}
}

func TestNewOnGivenRegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg)
	if m.Registry() != reg {
		t.Fatal("Registry() is not the registry passed in")
	}
	if n := testutil.CollectAndCount(m.syncFailures); n != 1 {
		t.Errorf("failures counter: %d series", n)
	}
	defer func() {
		if recover() == nil {
			t.Error("New on a registry that has the metrics already did not panic")
		}
	}()
	New(reg)
}
