package metrics

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestConntrackMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewConntrack(reg, 1<<20)
	sweep := CTSweep{Duration: 300 * time.Millisecond, Forward: 10, Reply: 9, Expired: 4, Orphans: 1, Purged: 2,
		Repaired: 1, Next: 15 * time.Second, QuarantinedBackends: 3, QuarantinedRevNats: 1}
	m.ObserveSweep(sweep)
	m.ObserveSweep(sweep)
	want := `
# HELP sluice_conntrack_entries Conntrack entries after the last sweep, by kind (forward, reply).
# TYPE sluice_conntrack_entries gauge
sluice_conntrack_entries{kind="forward"} 10
sluice_conntrack_entries{kind="reply"} 9
# HELP sluice_conntrack_entries_deleted_total Conntrack entries the collector deleted, by cause: expired (both entries of the flow), orphan (reply entry without its flow), purged (UDP flow whose backend left).
# TYPE sluice_conntrack_entries_deleted_total counter
sluice_conntrack_entries_deleted_total{cause="expired"} 8
sluice_conntrack_entries_deleted_total{cause="orphan"} 2
sluice_conntrack_entries_deleted_total{cause="purged"} 4
# HELP sluice_conntrack_entries_repaired_total Reply entries the collector recreated for live flows that had lost theirs.
# TYPE sluice_conntrack_entries_repaired_total counter
sluice_conntrack_entries_repaired_total 2
# HELP sluice_conntrack_capacity_entries Size of the conntrack table in entries (a flow takes two).
# TYPE sluice_conntrack_capacity_entries gauge
sluice_conntrack_capacity_entries 1.048576e+06
# HELP sluice_conntrack_sweep_interval_seconds Wait before the collector's next periodic sweep.
# TYPE sluice_conntrack_sweep_interval_seconds gauge
sluice_conntrack_sweep_interval_seconds 15
# HELP sluice_quarantined_ids Freed ids held back until a conntrack sweep finds no entry naming them, by kind (backend, revnat).
# TYPE sluice_quarantined_ids gauge
sluice_quarantined_ids{kind="backend"} 3
sluice_quarantined_ids{kind="revnat"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "sluice_conntrack_entries", "sluice_conntrack_entries_deleted_total",
		"sluice_conntrack_entries_repaired_total", "sluice_conntrack_capacity_entries", "sluice_conntrack_sweep_interval_seconds",
		"sluice_quarantined_ids"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(m.sweepDuration); n != 1 {
		t.Errorf("sweep duration: %d series", n)
	}
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}
