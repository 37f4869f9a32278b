package test

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/sluice-lb/sluice/bpf"
	"github.com/sluice-lb/sluice/internal/agenttest"
)

// BenchmarkLabNodePortSNAT compares TCP connects from the external client
// through node 1's NodePort to a backend on node 2 (DNAT, SNAT to node 1,
// forwarded by the datapath, and the reverse for every reply) with the
// same loop straight to the backend's pod address routed through node 1,
// no translation at all (the floor), in the same run, rounds alternating.
// It also reports node 1's programs' cost per run during each storm
// (bpf_stats).
func BenchmarkLabNodePortSNAT(b *testing.B) {
	c := newMultiCluster(b, 2, 1, "auto")
	be := c.node(2).pod(1)
	c.write("np.yaml", podService(svcSpec{Name: "np", ClusterIP: vip, NodePort: npPort, Spec: "  type: NodePort"}, be))
	c.startAgents()
	c.routeExternal(netip.PrefixFrom(be.Addr, 32), c.node(1))
	enableBPFStats(b)
	targets := []struct{ name, addr string }{
		{"floor", netip.AddrPortFrom(be.Addr, 8080).String()},
		{"nodeport-snat", netip.AddrPortFrom(c.node(1).IP, npPort).String()},
	}
	runConnectBench(b, c.node(1).pinDir, targets, func(addr string, n, conc int) (connectStats, error) {
		return connectRunFrom(c.external(), addr, n, conc)
	})
}

// runConnectBench runs connect storms against each target in alternating
// rounds at concurrency 1 and 8 and reports medians, each target's rate
// against the first's (the floor), and the live cost per run of the
// programs pinned under pinDir during each target's storms.
// extraProgs are further programs pinned there to report (the socket
// hooks).
func runConnectBench(b *testing.B, pinDir string, targets []struct{ name, addr string }, run func(addr string, n, conc int) (connectStats, error), extraProgs ...string) {
	const perRound, rounds = 2000, 5
	progs := append([]string{bpf.SluiceProgSluiceIngress, bpf.SluiceProgSluiceEgress}, extraProgs...)
	for _, conc := range []int{1, 8} {
		b.Run(fmt.Sprintf("concurrency=%d", conc), func(b *testing.B) {
			runs := map[string][]connectStats{}
			live := map[string]progStats{}
			for range rounds {
				for _, tg := range targets {
					before := map[string]progStats{}
					for _, p := range progs {
						before[p] = readProgStats(b, pinDir, p)
					}
					s, err := run(tg.addr, perRound, conc)
					if err != nil {
						b.Fatalf("%s: %v; datapath counters %v", tg.name, err, counters(b, pinDir))
					}
					runs[tg.name] = append(runs[tg.name], s)
					for _, p := range progs {
						after := readProgStats(b, pinDir, p)
						k := tg.name + "/" + p
						live[k] = progStats{live[k].runs + after.runs - before[p].runs, live[k].ns + after.ns - before[p].ns}
					}
				}
			}
			b.Logf("datapath counters: %v", counters(b, pinDir))
			med := map[string]connectStats{}
			for name, rs := range runs {
				med[name] = medianStats(rs)
				b.ReportMetric(med[name].Rate, name+"-conn/s")
				b.ReportMetric(float64(med[name].P50.Microseconds()), name+"-p50-µs")
				b.ReportMetric(float64(med[name].P99.Microseconds()), name+"-p99-µs")
			}
			floor := targets[0].name
			for _, tg := range targets[1:] {
				b.ReportMetric(med[tg.name].Rate/med[floor].Rate, tg.name+"-rate-vs-floor")
				b.ReportMetric(float64(med[tg.name].P99)/float64(med[floor].P99), tg.name+"-p99-vs-floor")
			}
			for k, st := range live {
				if st.runs > 0 {
					b.ReportMetric(float64(st.ns.Nanoseconds())/float64(st.runs), k+"-ns/run")
				}
			}
		})
	}
}

// agenttestStormFrom runs a connect storm from a host-network process of
// the node (its namespace and cgroup).
func agenttestStormFrom(n *mnode, addr string, count, conc int) (connectStats, error) {
	return agenttest.ConnectStormFrom(n.NS, n.Cgroup, addr, count, conc)
}

// counters reads every datapath counter that is not zero.
func counters(b *testing.B, pinDir string) map[string]uint64 {
	out := map[string]uint64{}
	for k, v := range agenttest.Counters(b, pinDir) {
		if v != 0 {
			out[k] = v
		}
	}
	return out
}
