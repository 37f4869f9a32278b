package test

import (
	"fmt"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/sluice-lb/sluice/internal/netlab"
)

// connectStats is one measured run of TCP connects.
type connectStats struct {
	rate     float64 // connects per second
	p50, p99 time.Duration
}

// connectRun opens n TCP connections to addr from the client pod with the
// given concurrency, each closed with SO_LINGER 0 (an RST: no TIME_WAIT,
// so ports are not exhausted), and times every connect.
func connectRun(c *cluster, addr string, n, concurrency int) (connectStats, error) {
	lat := make([]time.Duration, n)
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		firstEr error
	)
	next := make(chan int, n)
	for i := range n {
		next <- i
	}
	close(next)
	start := time.Now()
	for range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Each worker is an OS thread in the client namespace.
			err := c.topo.Client.Do(func() error {
				for i := range next {
					t0 := time.Now()
					conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
					lat[i] = time.Since(t0)
					if err != nil {
						return fmt.Errorf("connect %d: %w", i, err)
					}
					conn.(*net.TCPConn).SetLinger(0)
					conn.Close()
				}
				return nil
			})
			if err != nil {
				mu.Lock()
				firstEr = err
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if firstEr != nil {
		return connectStats{}, firstEr
	}
	slices.Sort(lat)
	return connectStats{
		rate: float64(n) / elapsed.Seconds(),
		p50:  lat[n/2],
		p99:  lat[n*99/100],
	}, nil
}

// BenchmarkLabConnect compares TCP connects through the ClusterIP with
// connects straight to a backend's IP (the floor) in the same run. Rounds
// alternate the two so drift on a shared machine hits both alike.
func BenchmarkLabConnect(b *testing.B) {
	c := newCluster(b, 1, "auto")
	c.write("whoami.yaml", whoamiManifest(1))
	c.startAgent()
	const perRound, rounds = 2000, 5
	targets := []struct{ name, addr string }{
		{"floor", netlab.BackendAddr(1).String() + ":8080"},
		{"clusterip", vip + ":80"},
	}
	for _, conc := range []int{1, 8} {
		b.Run(fmt.Sprintf("concurrency=%d", conc), func(b *testing.B) {
			runs := map[string][]connectStats{}
			for range rounds {
				for _, tg := range targets {
					s, err := connectRun(c, tg.addr, perRound, conc)
					if err != nil {
						b.Fatalf("%s: %v", tg.name, err)
					}
					runs[tg.name] = append(runs[tg.name], s)
				}
			}
			med := map[string]connectStats{}
			for name, rs := range runs {
				med[name] = medianStats(rs)
				b.ReportMetric(med[name].rate, name+"-conn/s")
				b.ReportMetric(float64(med[name].p50.Microseconds()), name+"-p50-µs")
				b.ReportMetric(float64(med[name].p99.Microseconds()), name+"-p99-µs")
			}
			b.ReportMetric(med["clusterip"].rate/med["floor"].rate, "rate-vs-floor")
			b.ReportMetric(float64(med["clusterip"].p99)/float64(med["floor"].p99), "p99-vs-floor")
		})
	}
}

// medianStats takes each figure's median over the rounds.
func medianStats(rs []connectStats) connectStats {
	var rates []float64
	var p50s, p99s []time.Duration
	for _, r := range rs {
		rates = append(rates, r.rate)
		p50s = append(p50s, r.p50)
		p99s = append(p99s, r.p99)
	}
	slices.Sort(rates)
	slices.Sort(p50s)
	slices.Sort(p99s)
	m := len(rs) / 2
	return connectStats{rate: rates[m], p50: p50s[m], p99: p99s[m]}
}
