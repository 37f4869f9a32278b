package test

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/sluice-lb/sluice/internal/agenttest"
	"github.com/sluice-lb/sluice/internal/netlab"
)

// connectStats is one measured run of TCP connects.
type connectStats = agenttest.StormStats

// connectRun opens n TCP connections to addr from the client pod with the
// given concurrency (agenttest.ConnectStorm).
func connectRun(c *cluster, addr string, n, concurrency int) (connectStats, error) {
	return connectRunFrom(c.topo.Client, addr, n, concurrency)
}

// connectRunFrom is connectRun from any namespace: each worker an OS
// thread switched into it.
func connectRunFrom(ns *netlab.NS, addr string, n, concurrency int) (connectStats, error) {
	return agenttest.ConnectStorm(ns.Do, addr, n, concurrency)
}

// progStats is what the kernel counted for one program with
// kernel.bpf_stats_enabled=1: runs and the time spent in them.
type progStats struct {
	runs uint64
	ns   time.Duration
}

func readProgStats(b *testing.B, pinDir, name string) progStats {
	p, err := ebpf.LoadPinnedProgram(filepath.Join(pinDir, name), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	st, err := p.Stats()
	if err != nil {
		b.Fatal(err)
	}
	return progStats{st.RunCount, st.Runtime}
}

// enableBPFStats turns on the kernel's per-program run time accounting for
// the benchmark (a global switch that only adds two clock reads per run),
// and restores the previous setting afterwards.
func enableBPFStats(b *testing.B) {
	const knob = "/proc/sys/kernel/bpf_stats_enabled"
	old, err := os.ReadFile(knob)
	if err != nil {
		b.Skipf("no %s: %v", knob, err)
	}
	if err := os.WriteFile(knob, []byte("1"), 0o644); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.WriteFile(knob, old, 0o644) })
}

// BenchmarkLabConnect compares TCP connects through the ClusterIP with
// connects straight to a backend's IP (the floor) in the same run, with
// 10,000 other Services (10 endpoints each) programmed. Rounds alternate
// the two so drift on a shared machine hits both alike. Besides the
// client's view it reports the live path's cost per program run, as the
// kernel measured it (bpf_stats), for the same two kinds of traffic.
func BenchmarkLabConnect(b *testing.B) {
	c := newCluster(b, 1, "auto")
	c.write("whoami.yaml", whoamiManifest(1))
	for f := 0; f < benchServices/servicesPerFile; f++ {
		c.write(fmt.Sprintf("other-%03d.yaml", f), benchFile(f*servicesPerFile, netip.Addr{}))
	}
	c.startAgent()
	enableBPFStats(b)
	targets := []struct{ name, addr string }{
		{"floor", netlab.BackendAddr(1).String() + ":8080"},
		{"clusterip", vip + ":80"},
	}
	runConnectBench(b, c.pinDir, targets, func(addr string, n, conc int) (connectStats, error) {
		return connectRun(c, addr, n, conc)
	})
}

// medianStats takes each figure's median over the rounds.
func medianStats(rs []connectStats) connectStats {
	var rates []float64
	var p50s, p99s []time.Duration
	for _, r := range rs {
		rates = append(rates, r.Rate)
		p50s = append(p50s, r.P50)
		p99s = append(p99s, r.P99)
	}
	slices.Sort(rates)
	slices.Sort(p50s)
	slices.Sort(p99s)
	m := len(rs) / 2
	return connectStats{Rate: rates[m], P50: p50s[m], P99: p99s[m]}
}
